#!/usr/bin/env bash
# The README's first command (make demo): run the Flask and Redis example end to end on this
# machine. It installs the Debian packages it needs (saying so first), builds attestmesh, runs
# `attestmesh up` on the example, stores a patient record over HTTPS verifying the API against
# the exported api_ca_cert, reads it and its score back, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (sudo make demo): each service runs in its own network namespace" >&2
  exit 1
fi

need=()
for pkg in redis-server python3-flask python3-redis iproute2 curl openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  say "Installing the Debian packages the example needs: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

say "Building attestmesh"
make --no-print-directory build

state=$(mktemp -d /tmp/attestmesh-demo.XXXXXX)
log="$state/up.out"
say "Starting the mesh: attestmesh up -f examples/flask-redis/mesh.yaml (state in $state)"
./bin/attestmesh up -f examples/flask-redis/mesh.yaml --state-dir "$state/up" >"$log" 2>&1 &
up=$!
cleanup() {
  if kill -0 "$up" 2>/dev/null; then
    kill -INT "$up"
    # attestmesh up stops everything it started within seconds; do not hang if it does not.
    for _ in $(seq 1 60); do
      kill -0 "$up" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$up" 2>/dev/null; then
      say "attestmesh up did not stop within 30 s: killing it"
      kill -KILL "$up" 2>/dev/null || true
    fi
    wait "$up" || true
  fi
  rm -rf "$state"
}
trap cleanup EXIT

for _ in $(seq 1 120); do
  grep -q '^Ready\.' "$log" && break
  if ! kill -0 "$up" 2>/dev/null; then cat "$log"; echo "demo: attestmesh up failed" >&2; exit 1; fi
  sleep 0.5
done
cat "$log"
grep -q '^Ready\.' "$log" || { echo "demo: the mesh did not come up in 60 s" >&2; exit 1; }

api=$(sed -n 's/^ *api *exposed at \(.*\)$/\1/p' "$log")
ca=$(sed -n 's/^ *trust .*api_ca_cert (export_public) written to \(.*\)$/\1/p' "$log")
host=${api%:*}
curl_api() { curl -sS --fail-with-body --cacert "$ca" --resolve "api:4996:$host" "$@"; }

say "POST /patient/patient-1 over HTTPS, verifying the API against the exported api_ca_cert ($ca) with DNS name api"
curl_api -X POST https://api:4996/patient/patient-1 \
  -d fname=Ada -d lname=Lovelace -d address='12 St James Square' -d city=London \
  -d iban=GB33BUKB20201555555555 -d ssn=123-45-6789 -d email=ada@example.org
echo
say "GET /patient/patient-1 (Flask reads it from Redis through the attested mTLS tunnel)"
curl_api https://api:4996/patient/patient-1
echo
say "GET /score/patient-1"
curl_api https://api:4996/score/patient-1
echo
say "POST /patient/patient-1 again: refused with 403"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$ca" --resolve "api:4996:$host" -X POST https://api:4996/patient/patient-1 -d fname=Eve)
echo "HTTP $code"
[ "$code" = 403 ]
say "Done: the record went through Flask and Redis, each attested, over mTLS tunnels only. Stopping."
