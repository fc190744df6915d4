#!/usr/bin/env bash
# Run schemathesis against a running notesd.
#
#   schemathesis.sh BASE_URL [REPORT_DIR]
#
# BASE_URL: e.g. http://127.0.0.1:18190 (the document is read from
# BASE_URL/openapi.json). REPORT_DIR (default ./schemathesis-report) gets
# the run's console output (run.log), its JSON run report, JUnit XML, a HAR
# of every request/response, the NDJSON event stream, and a pytest file that
# reproduces each failure.
#
# Before the run, a fresh account is signed up and logged in; the operations
# are then authenticated with `Authorization: Bearer <access_token>`. The
# token is fetched by logging in again whenever an operation answers 401
# (the fuzzer calls `logout`, which kills the session it was given).
#
# Environment (all optional):
#   PYTHON            the venv's python (default: the one next to this repo's .venv)
#   ST_MAX_EXAMPLES   test cases per operation and phase (default 1000)
#   ST_WORKERS        concurrent workers (default 1: with more, CPython 3.11
#                     sometimes fails inside Hypothesis with `SystemError: AST
#                     constructor recursion depth mismatch` (gh-106905), and
#                     one worker keeps request order, so a seed replays a run)
#   ST_SEED           hypothesis seed (default 20260101)
#   ST_PHASES         default examples,coverage,fuzzing,stateful
#   ST_EXTRA          extra arguments passed to `schemathesis run`
#   ST_SCHEMA         the document to test against (default BASE_URL/openapi.json;
#                     e.g. a locally patched copy, to look past known findings)
# Exit status: schemathesis's (non-zero on any failure or error).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="${1:?usage: schemathesis.sh BASE_URL [REPORT_DIR]}"
base="${base%/}"
report_dir="${2:-$PWD/schemathesis-report}"
python="${PYTHON:-$here/../../.venv/bin/python}"
st="$(dirname "$python")/schemathesis"

mkdir -p "$report_dir"
report_dir="$(cd "$report_dir" && pwd)"

# One account for the run. The email is unique so the script can be
# pointed at a server that already has accounts.
email="contract-$(date +%s)-$$@example.com"
password="contract fuzzing $(od -An -N8 -tx1 /dev/urandom | tr -d ' \n') quokka"

# Sign up, then log in (the token that login returns is the one the run
# starts with; later ones come from the same login call).
"$python" - "$base" "$email" "$password" <<'PY'
import json, sys, httpx
base, email, password = sys.argv[1:]
with httpx.Client(base_url=base, timeout=30) as c:
    r = c.post("/api/v1/auth/signup", json={"email": email, "password": password})
    if r.status_code != 201:
        sys.exit(f"schemathesis.sh: signup failed: {r.status_code} {r.text}")
    r = c.post("/api/v1/auth/login", json={"email": email, "password": password})
    if r.status_code != 200 or not r.json().get("access_token"):
        sys.exit(f"schemathesis.sh: login failed: {r.status_code} {r.text}")
    r2 = c.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    if r2.status_code != 200:
        sys.exit(f"schemathesis.sh: the login token does not work: {r2.status_code} {r2.text}")
print(f"schemathesis.sh: signed up and logged in as {email}")
PY

export NOTESD_CONTRACT_EMAIL="$email" NOTESD_CONTRACT_PASSWORD="$password" NOTESD_CONTRACT_HOOKS="$here/hooks.py"
cp "$here/schemathesis.toml" "$report_dir/schemathesis.toml"
set +e
# ST_EXTRA is split into words on purpose.
# shellcheck disable=SC2086
"$st" --config-file "$here/schemathesis.toml" run "${ST_SCHEMA:-$base/openapi.json}" \
  --url "$base" \
  --checks all \
  --mode all \
  --phases "${ST_PHASES:-examples,coverage,fuzzing,stateful}" \
  --max-examples "${ST_MAX_EXAMPLES:-1000}" \
  --workers "${ST_WORKERS:-1}" \
  --seed "${ST_SEED:-20260101}" \
  --request-timeout 20 \
  --no-color \
  --output-truncate false \
  --report json,junit,har,ndjson,pytest \
  --report-dir "$report_dir" \
  ${ST_EXTRA:-} 2>&1 | tee "$report_dir/run.log"
status="${PIPESTATUS[0]}"
set -e
echo "schemathesis.sh: exit status $status; reports in $report_dir"
exit "$status"
