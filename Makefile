# attestmesh: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/attestmesh
SIDECAR_BIN := bin/attestmesh-sidecar
PKGS := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: ## run the Flask and Redis example end to end (root; installs its Debian packages)
	bash examples/flask-redis/demo.sh

.PHONY: build
build: ## build bin/attestmesh and the sidecar build bin/attestmesh-sidecar (proxy, launch, measure only; static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/attestmesh
	CGO_ENABLED=0 $(GO) build -trimpath -tags attestmesh_sidecar,grpcnotrace -o $(SIDECAR_BIN) ./cmd/attestmesh

.PHONY: test
test: ## run every unit and integration test with the race detector
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

.PHONY: lint
lint: ## gofmt check and golangci-lint (pinned in go.mod as a tool)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) tool golangci-lint run --build-tags e2e,e2e_k8s,benchmesh $(PKGS)
	CGO_ENABLED=0 $(GO) build -tags attestmesh_sidecar,grpcnotrace -o /dev/null ./cmd/attestmesh

# Every parser of untrusted bytes, as package:FuzzTarget.
FUZZ_TARGETS := ./attest/dcap:FuzzParseQuote ./attest/dcap:FuzzVerify ./attest/sim:FuzzDecodeQuoteRequest \
	./attest/sim:FuzzUnmarshalPlatform ./attest/fspf:FuzzDecryptManifest ./controlplane/session:FuzzParse \
	./controlplane/session:FuzzExpand ./controlplane/session:FuzzSplitCommand ./controlplane/ca:FuzzParseCSR \
	./controlplane/store:FuzzOpenRecord ./controlplane/attestation:FuzzAttestRequest ./controlplane/injector:FuzzServeHTTP \
	./controlplane/attestation:FuzzRedeem ./attest/dcap:FuzzCheckRevocation ./controlplane/recovery:FuzzParseRecord \
	./controlplane/recovery:FuzzParseShares \
	./proxy/resource:FuzzParseListeners ./proxy/resource:FuzzParseClusters ./proxy/resource:FuzzParseSecrets \
	./proxy/resource:FuzzDifferential ./proxy/ads:FuzzDecodeResponse \
	./controlplane/registry:FuzzParse ./controlplane/evidence:FuzzParse ./proxy/listener:FuzzMuxFrames

.PHONY: fuzz
fuzz: ## fuzz every parser of untrusted bytes for FUZZTIME each (default 60s; new inputs minimized for at most 5 s)
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} in $${t%%:*}"; \
		$(GO) test $${t%%:*} -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(or $(FUZZTIME),60s) -fuzzminimizetime 5s; \
	done

.PHONY: e2e
e2e: ## end-to-end tests: the Flask and Redis example (real control plane, sidecars, Redis, Flask, Prometheus), two teams, chaos (root)
	$(GO) test -tags e2e -race -count=1 -timeout 25m -v ./e2e/...

.PHONY: e2e-chaos
e2e-chaos: ## chaos: 3 etcd members, 3 control-plane replicas, 1,000 updates and attestations while a replica and the etcd leader are killed and a replica stopped (root)
	$(GO) test -tags e2e -race -count=1 -timeout 15m -v -run 'TestChaos|TestSessionModel' ./e2e/

.PHONY: proto
proto: ## regenerate the attestation API (attest/attestapi/attestationpb) from its .proto (buf, protoc-gen-go, protoc-gen-go-grpc)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" $(GO) run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate --path attest/attestapi/attestationpb

.PHONY: bench
bench: ## benchmarks: attestations with SVIDs (concurrent clients), 1000 ADS streams ACKing a change and memory per sidecar, snapshot rebuilds, tunnel throughput
	$(GO) test -run '^$$' -bench . -benchmem -count 6 $(PKGS)

.PHONY: bench-mesh
bench-mesh: build ## Redis through the sidecar pair beside HAProxy and stunnel pairs and direct, one table (root; ROUNDS=3; SHORT=1: one short round for CI)
	$(GO) test -tags benchmesh -count=1 -timeout 90m -v -run '^TestBenchMesh$$' ./e2e/bench/ -args \
		-bin $(CURDIR)/$(BIN) -rounds $(or $(ROUNDS),3) -out $(CURDIR)/target/bench-mesh.md $(if $(SHORT),-test.short) $(BENCH_MESH_ARGS)

.PHONY: clean
clean: ## remove build outputs
	rm -rf bin target

IMAGE ?= ghcr.io/attestmesh/attestmesh:dev

.PHONY: image
image: build ## build the attestmesh image (attestmesh and attestmesh-sidecar) without Docker: target/image/oci (OCI layout) and target/image/attestmesh.tar
	$(GO) run ./charts/image/mkimage -binary $(BIN) -sidecar-binary $(SIDECAR_BIN) -ref $(IMAGE) -version $(or $(VERSION),dev) -out target/image

EXAMPLE_IMAGES ?= target/images

.PHONY: example-images
example-images: ## the example's images from Debian's packages (mmdebstrap, root file systems cached in ~/.cache/attestmesh/images): target/images/redis.tar and api.tar
	$(GO) run ./charts/image/mkdebimage -ref localhost/flaskredis/redis:1 -packages redis-server -out $(EXAMPLE_IMAGES)/redis.tar
	$(GO) run ./charts/image/mkdebimage -ref localhost/flaskredis/api:1 -packages python3,python3-flask,python3-redis -out $(EXAMPLE_IMAGES)/api.tar

.PHONY: e2e-k8s
e2e-k8s: ## Kubernetes on a real single-node cluster: the charts, the injector, the example through the sidecars, Prometheus (root; binaries built once into ~/.cache/attestmesh/k8s, images' root file systems into ~/.cache/attestmesh/images)
	cd e2e/k8s && nice -n 10 ./build-k8s.sh
	$(GO) test -tags e2e_k8s -count=1 -timeout 45m -v ./e2e/k8s/...
