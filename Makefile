# Tollgate: the commands the README names. `make test` is what CI runs (.ci/run).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# cargo-nextest when installed (faster, one process per test); plain cargo test otherwise.
NEXTEST := $(shell cargo nextest --version >/dev/null 2>&1 && echo yes)
# The moto pass selects its test binaries with --workspace, like the first pass, so cargo resolves
# the same features and reuses every artifact (with -p it rebuilt much of the tree).
ifeq ($(NEXTEST),yes)
TEST_ALL := cargo nextest run --workspace --no-fail-fast
TEST_CONTRACT := cargo nextest run --workspace --no-fail-fast -E 'binary(storage) | (binary(api) & test(/^(authorizer|local_stack|management|webhook|claim|identity)::/))'
else
TEST_ALL := cargo test --workspace --no-fail-fast
TEST_CONTRACT := cargo test --workspace --test storage --test api --no-fail-fast -- contract:: faults:: authorizer:: local_stack:: management:: webhook:: claim:: identity::
endif

.PHONY: help test lint lint-template test-dynoxide test-moto test-spec test-console console dev build deploy bench fuzz

# The local stack: every handler behind one server on in-process Dynoxide; --seed prints a demo key.
# The console is built first when Node.js is there (without it /console/ says how to build it).
dev:
	@if command -v npm >/dev/null; then bash scripts/console.sh build; else echo "make dev: no npm, so no console at /console/ (install Node.js 20+ and run make console)"; fi
	cargo run -p tollgate-dev --bin tollgate -- dev --seed

# The web console (console/, Vite + Preact): npm ci and npm run build into console/dist.
console:
	bash scripts/console.sh build

help:
	@echo "make test    formatting, clippy, SAM template lint, every test on in-process Dynoxide, the storage contract on moto, the spec, the console in Chromium"
	@echo "make dev     the local stack on http://127.0.0.1:3000 with a demo plan and key, the console at /console/ (Ctrl-C stops it)"
	@echo "make console npm ci and build the web console into console/dist (the local stack serves it)"
	@echo "make build   cargo lambda build --release --arm64 of every function (cargo-lambda into .venv), then zip sizes vs 3 MB"
	@echo "make deploy  lint the template, sam build (cargo-lambda, no Docker), sam deploy --guided (docs/deploy.md)"
	@echo "make fuzz    every cargo-fuzz target for FUZZ_SECONDS (default 600) each, on nightly; the corpus grows in fuzz/corpus"
	@echo "make bench   the benchmarks: decision CPU and DynamoDB requests, authorizer cold start and RSS, local stack load (wrk), sizes"

test: lint lint-template test-dynoxide test-moto test-spec test-console

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings

# Every test, storage through the real SDK against Dynoxide started in-process per test. The
# .venv (moto, botocore) first: the CLI's SigV4 test checks signatures with botocore.
test-dynoxide:
	bash scripts/ensure-venv.sh
	$(TEST_ALL)

# The storage contract and the authorizer decision tests again, against moto's DynamoDB server (an independent implementation
# of the protocol), started single-threaded on a free port and stopped on every exit path.
test-moto:
	bash scripts/with-moto.sh $(TEST_CONTRACT)

# The spec is the contract: Schemathesis (pinned, .venv-schemathesis) with every check against
# the local stack built here, docs/openapi.yaml as the schema, 0 failures allowed.
# `--workspace --bins` resolves features as the workspace test build did, so it reuses that build
# (about 30 crates to compile instead of about 100 with `-p tollgate-dev`).
test-spec:
	cargo build --workspace --bins
	bash scripts/schemathesis.sh

# The console's browser tests: its API types against docs/openapi.yaml, then Playwright driving
# Debian's Chromium (installed when missing and root, else named) against the local stack built
# here; screenshots of every page in target/console-screenshots/.
test-console:
	bash scripts/console.sh test

# Every SAM template in infra/: cfn-lint, sam validate --lint, sam validate, cfn-lint of the SAM
# translation, then checkov on the template and the translation (fails on any finding not
# suppressed with a reason in the resource's Metadata), offline (pinned tools in .venv-sam and
# .venv-checkov, installed on first use).
lint-template:
	bash scripts/lint-template.sh

# Criterion benchmarks, the native release authorizer's (and issue-key's) cold start and memory against an emulated
# Lambda Runtime API, the local stack under wrk (scripts/load.sh installs it when absent) and make build's
# sizes, ending in one summary table (bench/benches/decision.rs).
bench:
	cargo build --release -p authorizer -p issue-key
	cargo bench -p tollgate-bench
	@echo "concurrent callers again, on single-threaded moto:"
	TOLLGATE_BENCH=concurrency bash scripts/with-moto.sh cargo bench -p tollgate-bench

# target/lambda/<function>/bootstrap and bootstrap.zip for arm64, then a size table (scripts/build.sh).
build:
	bash scripts/build.sh

# Validates the template (and installs SAM into .venv-sam), builds the console (the console
# function embeds it), then sam build (cargo-lambda from .venv,
# no Docker) and a guided deploy; docs/deploy.md has the parameters and the Stripe secrets.
deploy:
	bash scripts/ensure-build-tools.sh
	bash scripts/lint-template.sh
	bash scripts/console.sh build
	PATH="$(CURDIR)/.venv/bin:$(CURDIR)/.venv-sam/bin:$$PATH" SAM_CLI_TELEMETRY=0 \
	  sam build --beta-features --template-file infra/template.yaml
	PATH="$(CURDIR)/.venv-sam/bin:$$PATH" SAM_CLI_TELEMETRY=0 sam deploy --guided

# cargo-fuzz on nightly: key parsing, Stripe-Signature and the webhook, authorizer events, management
# requests (bodies and query strings), cursors; FUZZ_SECONDS per target (default 600). The corpus it
# grows is replayed on stable by make test (tests/tests/artifacts/fuzz_corpus.rs).
fuzz:
	bash scripts/fuzz.sh
