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
