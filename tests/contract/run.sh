#!/usr/bin/env bash
# Contract tests: does the running server keep the promises of its own
# OpenAPI document?
#
#   tests/contract/run.sh [NOTESD_BINARY] [OUT_DIR]
#
# NOTESD_BINARY defaults to target/debug/notesd (under $CARGO_TARGET_DIR if
# set). OUT_DIR (default: a new temporary directory, printed) receives the
# server log, both copies of the document, schemathesis's reports, the
# generated client and each part's output.
#
# It starts the server on a free loopback port with a temporary data
# directory, waits for /healthz, then runs, each whatever the others did:
#   1. validate.py on the served document and on `notesd openapi`'s output
#      (and checks the two are the same document);
#   2. schemathesis.sh (schemathesis: every check, positive and negative
#      data, stateful links);
#   3. openapi-python-client generation from the document (warnings are
#      errors) and journey.py, a user journey through the generated client.
# Then it stops the server. Exit status 0 only if every part passed.
#
# Python packages come from tests/contract/requirements.txt, installed into
# a virtualenv at $CONTRACT_VENV (default: .venv at the repository root),
# created or refreshed when requirements.txt changes.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$repo/target}/debug/notesd}"
out="${2:-}"
venv="${CONTRACT_VENV:-$repo/.venv}"

log() { printf '[contract %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*"; exit 2; }

[[ -x "$bin" ]] || die "no notesd binary at $bin (cargo build first, or pass its path)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
if [[ -z "$out" ]]; then
  out="$(mktemp -d "${TMPDIR:-/tmp}/notesd-contract.XXXXXX")"
else
  mkdir -p "$out" && out="$(cd "$out" && pwd)"
fi
started_at=$SECONDS

# --- Python environment ---------------------------------------------------
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
stamp="$venv/.contract-requirements.sha256"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "installing tests/contract/requirements.txt into $venv"
  python3 -m venv "$venv" || die "cannot create the virtualenv $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements.txt" || die "pip install failed"
  echo "$want" > "$stamp"
fi
py="$venv/bin/python"
export PATH="$venv/bin:$PATH"   # the generator runs ruff from here

# --- Server ---------------------------------------------------------------
# Limits that a single fuzzing client would trip are relaxed: rate limits
# and per-client connection cap off, login backoff out of reach, cheap
# argon2, and no password-strength floor (zxcvbn's judgement cannot be
# written in a JSON schema, so schema-valid passwords would be refused).
data="$out/data"
mkdir -p "$data"
server_log="$out/server.log"
# The server must not pick up settings from the caller's environment.
unset_env=()
while IFS='=' read -r name _; do
  [[ "$name" == NOTESD_* ]] && unset_env+=(-u "$name")
done < <(env)
env "${unset_env[@]}" NOTESD_LOG=info "$bin" serve \
  --listen 127.0.0.1:0 --data-dir "$data" --log-format json \
  --rate-limit 0 --auth-rate-limit 0 --max-connections-per-client 0 \
  --login-free-failures 100000 \
  --argon2-memory-kib 1024 --argon2-iterations 1 \
  --min-password-score 0 \
  --shutdown-grace 2s \
  > "$server_log" 2>&1 &
server_pid=$!

stop_server() {
  if [[ -n "${server_pid:-}" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  server_pid=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

addr=
for _ in $(seq 300); do
  addr="$(sed -n 's/.*"message":"notesd listening","addr":"\([0-9.:]*\)".*/\1/p' "$server_log" | head -1)"
  [[ -n "$addr" ]] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$addr" ]] || { cat "$server_log"; die "the server did not start"; }
base="http://$addr"
healthy=
for _ in $(seq 100); do
  if "$py" -c "import sys,urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)" \
      "$base/healthz" 2>/dev/null; then healthy=1; break; fi
  sleep 0.1
done
[[ -n "$healthy" ]] || { cat "$server_log"; die "$base/healthz did not answer 200"; }
log "$("$bin" --version 2>/dev/null | head -1) at $base (data $data)"

failed=()
part() {  # part NAME COMMAND...: run one part, log its output, remember a failure
  local name="$1"; shift
  local t0=$SECONDS
  log "== $name"
  "$@" 2>&1 | tee "$out/$name.log"
  local rc="${PIPESTATUS[0]}"
  if [[ "$rc" -ne 0 ]]; then failed+=("$name"); log "== $name FAILED (exit $rc, $((SECONDS - t0)) s)";
  else log "== $name passed ($((SECONDS - t0)) s)"; fi
}

# --- 1. The document is valid OpenAPI ---------------------------------------
"$py" -c "import sys,urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())" \
  "$base/openapi.json" > "$out/openapi.json"
env "${unset_env[@]}" "$bin" openapi > "$out/openapi.printed.json"
validate() {
  local rc=0
  "$py" "$here/validate.py" "$base" || rc=1
  "$py" "$here/validate.py" "$out/openapi.printed.json" || rc=1
  if "$py" -c "import json,sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))" \
      "$out/openapi.json" "$out/openapi.printed.json"; then
    echo "validate: the served and the printed document are the same"
  else
    echo "validate: ERROR: /openapi.json and \`notesd openapi\` differ"; rc=1
  fi
  return "$rc"
}
part validate validate

# --- 2. schemathesis ----------------------------------------------------------
# A hard stop well past the expected ~2 min, so a hang cannot eat CI.
part schemathesis timeout 900 env PYTHON="$py" "$here/schemathesis.sh" "$base" "$out/schemathesis"

# --- 3. A generated client works unmodified -------------------------------------
client() {
  rm -rf "$out/client" && mkdir -p "$out/client"
  # --fail-on-warning: anything the generator cannot express is an error.
  (cd "$out/client" && openapi-python-client generate --path "$out/openapi.json" \
      --output-path "$out/client/notesd_client" --meta none --fail-on-warning) || return 1
  "$py" "$here/journey.py" "$base" "$out/client"
}
part client client

stop_server
log "server log: $server_log"
log "outputs in $out ($((SECONDS - started_at)) s)"
if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all contract checks passed"
