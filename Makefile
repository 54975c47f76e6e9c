# attestmesh: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/attestmesh
PKGS := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: ## run the Flask and Redis example end to end (root; installs its Debian packages)
	bash examples/flask-redis/demo.sh

.PHONY: build
build: ## build bin/attestmesh (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/attestmesh

.PHONY: test
test: ## run every unit and integration test with the race detector
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

.PHONY: lint
lint: ## gofmt check and golangci-lint (pinned in go.mod as a tool)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) tool golangci-lint run $(PKGS)

.PHONY: fuzz
fuzz: ## fuzz the quote parser for FUZZTIME (default 60s)
	$(GO) test ./attest/dcap -run '^$$' -fuzz '^FuzzParseQuote$$' -fuzztime $(or $(FUZZTIME),60s)

.PHONY: e2e
e2e: ## end-to-end test of the Flask and Redis example (not there yet: comes with the example issue)
	@echo "e2e: the Flask and Redis end-to-end test is not implemented yet"

.PHONY: bench
bench: ## benchmarks (none yet: the data-plane benchmarks come with the proxy)
	$(GO) test -run '^$$' -bench . -benchmem -count 6 $(PKGS)

.PHONY: clean
clean: ## remove build outputs
	rm -rf bin target

IMAGE ?= ghcr.io/attestmesh/attestmesh:dev

.PHONY: image
image: build ## build the attestmesh image without Docker: target/image/oci (OCI layout) and target/image/attestmesh.tar
	$(GO) run ./internal/image/mkimage -binary $(BIN) -ref $(IMAGE) -version $(or $(VERSION),dev) -out target/image

.PHONY: e2e-k8s
e2e-k8s: ## Helm charts and the injector against a real kube-apiserver + etcd (built once into ~/.cache/attestmesh/k8s)
	cd test/k8s && nice -n 10 ./build-k8s.sh
	$(GO) test -tags e2e_k8s -count=1 -timeout 20m -v ./test/k8s/
