"""Patient records REST API: the confidential Flask example, with plain Flask.

It knows nothing of attestation or of the mesh: it reads its TLS certificate and key from
/tls (files that only an attested instance of it gets), and talks TLS to Redis with the client
certificate from /tls, at the address its environment gives (its sidecar's loopback port).

  POST /patient/<id>   form fields fname, lname, address, city, iban, ssn, email -> 201 + record
                       an existing id -> 403
  GET  /patient/<id>   the record, 404 if absent
  GET  /score/<id>     the patient's score, 404 if absent
"""

import json
import os
import random

import redis
from flask import Flask, abort, jsonify, request

FIELDS = ("fname", "lname", "address", "city", "iban", "ssn", "email")

app = Flask(__name__)

db = redis.Redis(
    host=os.environ.get("REDIS_HOST", "127.0.0.1"),
    port=int(os.environ.get("REDIS_PORT", "6379")),
    ssl=True,
    ssl_certfile=os.environ.get("REDIS_CLIENT_CERT", "/tls/client.crt"),
    ssl_keyfile=os.environ.get("REDIS_CLIENT_KEY", "/tls/client.key"),
    ssl_ca_certs=os.environ.get("REDIS_CA_CERT", "/tls/redis-ca.crt"),
    ssl_cert_reqs="required",
    decode_responses=True,
    socket_timeout=10,
)


def key(patient_id):
    return "patient:" + patient_id


@app.post("/patient/<string:patient_id>")
def create_patient(patient_id):
    record = {f: request.form.get(f, "") for f in FIELDS}
    record["id"] = patient_id
    record["score"] = random.random()
    # SET NX: the id is taken atomically, so two concurrent POSTs cannot both succeed.
    if not db.set(key(patient_id), json.dumps(record), nx=True):
        abort(403, description="patient %s already exists" % patient_id)
    return jsonify(record), 201


@app.get("/patient/<string:patient_id>")
def get_patient(patient_id):
    raw = db.get(key(patient_id))
    if raw is None:
        abort(404, description="no patient %s" % patient_id)
    return jsonify(json.loads(raw))


@app.get("/score/<string:patient_id>")
def get_score(patient_id):
    raw = db.get(key(patient_id))
    if raw is None:
        abort(404, description="no patient %s" % patient_id)
    return jsonify({"id": patient_id, "score": json.loads(raw)["score"]})


if __name__ == "__main__":
    app.run(
        host=os.environ.get("API_HOST", "127.0.0.1"),
        port=int(os.environ.get("API_PORT", "4996")),
        threaded=True,
        ssl_context=("/tls/flask.crt", "/tls/flask.key"),
    )
