# The two commands a newcomer needs: `make run` and `make test`.

CARGO ?= cargo

.PHONY: run test test-deps build release lint fmt bench profile instructions crash-test tls-scan openapi contract clean

## run: build and start the server on http://127.0.0.1:8080 with data in ./data
run:
	$(CARGO) run --release -- serve --listen 127.0.0.1:8080 --data-dir data

## test: installs what the tests need (test-deps), then every test (unit,
## integration, CLI), the contract run against the OpenAPI document, the
## bench chart's self-test, and the format and lint checks
test: test-deps
	NOTESD_TEST_TOOLS=required $(CARGO) test --all-targets
	tests/contract/run.sh $${CARGO_TARGET_DIR:-target}/debug/notesd
	python3 bench/chart.py --selftest
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## test-deps: Debian packages (chromium, pebble, python3-venv) and the
## pinned Python tools of the contract tests in .venv
test-deps:
	./scripts/test-deps.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## bench: load benchmarks against the release server (installs wrk with
## apt-get when missing)
bench: release
	./scripts/bench-deps.sh
	./bench/run.sh

## profile: where the release server's CPU goes on an authenticated GET by id
## (perf record; PROFILE_SCENARIO=list for the first page of 50 notes;
## PROFILE_CALLERS=1 records call stacks)
profile: release
	./scripts/bench-deps.sh profile
	./bench/profile.sh

## instructions: the release server's instructions per request (callgrind)
## for a GET by id and the first page of 50; OLD=path/to/notesd compares
instructions: release
	./scripts/bench-deps.sh instructions
	./bench/instructions.sh $(OLD) $(if $(OLD),$${CARGO_TARGET_DIR:-target}/release/notesd)

## crash-test: 20 rounds of kill -9 while 32 clients write, each followed by
## a restart that checks every acknowledged write (make test runs 3)
crash-test:
	NOTESD_CRASH_TRIALS=20 $(CARGO) test --test cli kill_9_during_concurrent_writes -- --nocapture

## tls-scan: scan the release server's HTTPS with testssl.sh (apt-get install testssl.sh)
tls-scan: release
	./scripts/tls-scan.sh

openapi:
	@$(CARGO) run --quiet -- openapi

## contract: the debug server against its own OpenAPI document (needs python3 and PyPI)
contract: build
	tests/contract/run.sh

clean:
	$(CARGO) clean
