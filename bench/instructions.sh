#!/usr/bin/env bash
# `make instructions` (bench/instructions.sh [OLD_BINARY] [NEW_BINARY]):
# the server's instructions per request, counted by valgrind's callgrind,
# for an authenticated GET by id and the first page of 50 notes. Unlike
# req/s on a shared VM (5 % and more), the count moves little from run to
# run (seen here: up to 1.4 % for the GET, 0.6 % for the page: random ids,
# tokens and hash seeds), so a step of 3 % shows in one run and a smaller
# one over a few. It leaves out the
# kernel (about half of a GET's time) and what the cycles cost, so it
# complements bench/compare.sh rather than replacing it. With one binary
# (default: this checkout's release build), its counts; with two, both
# and new/old. Each server is seeded through its own API (an account and
# 1 000 typical notes: bench/seed_api.py), run natively, then
# restarted under callgrind; the count covers REQUESTS requests on one
# kept-alive connection after 20 unmeasured ones.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions needs valgrind (apt-get install valgrind)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
PORT=${BENCH_PORT:-18280}
REQUESTS=${INSTRUCTIONS_REQUESTS:-200}
BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
  cargo build --release --quiet --bin notesd
  BINS=("$TARGET/release/notesd")
fi
W=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
ARGS="--rate-limit 60000000 --auth-rate-limit 6000000 --max-connections-per-client 1000"

up() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && return; sleep 0.2; done; exit 1; }
down() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }

# count KEY LABEL URL TOKEN: instructions per request of URL, printed and
# kept under KEY.
count() {
  local cfg=$W/requests.cfg
  for _ in $(seq 20); do printf 'url = "%s"\noutput = /dev/null\n' "$3"; done >"$cfg"
  curl -sf -H "authorization: Bearer $4" -K "$cfg"
  callgrind_control --zero "$SERVER" >/dev/null 2>&1
  for _ in $(seq "$REQUESTS"); do printf 'url = "%s"\noutput = /dev/null\n' "$3"; done >"$cfg"
  curl -sf -H "authorization: Bearer $4" -K "$cfg"
  rm -f "$W"/callgrind.out.*
  callgrind_control --dump "$SERVER" >/dev/null 2>&1
  for _ in $(seq 100); do compgen -G "$W/callgrind.out.*" >/dev/null && break; sleep 0.1; done
  local total
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$W"/callgrind.out.*)
  echo "$1 $((total / REQUESTS))" >>"$W/counts"
  printf '  %-24s %9d instructions per request\n' "$2" $((total / REQUESTS))
}

n=0
for bin in "${BINS[@]}"; do
  n=$((n + 1))
  export NOTESD_MASTER_KEY_FILE=$W/$n.key
  NOTESD_LOG=warn "$bin" serve --listen 127.0.0.1:$PORT --data-dir "$W/$n" $ARGS >/dev/null 2>&1 &
  SERVER=$!
  up
  read -r TOKEN NOTE < <(python3 bench/seed_api.py $PORT)
  down
  NOTESD_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.out.%p" \
    "$bin" serve --listen 127.0.0.1:$PORT --data-dir "$W/$n" $ARGS >/dev/null 2>&1 &
  SERVER=$!
  up
  echo "$bin"
  count "get$n" "GET /notes/{id}" "http://127.0.0.1:$PORT/api/v1/notes/$NOTE" "$TOKEN"
  count "list$n" "GET /notes?limit=50" "http://127.0.0.1:$PORT/api/v1/notes?limit=50" "$TOKEN"
  down
done
if [ $n -eq 2 ]; then
  python3 - "$W/counts" <<'PY'
import sys
counts = dict((l.split()[0], int(l.split()[-1])) for l in open(sys.argv[1]))
for kind, label in (("get", "GET by id"), ("list", "first page of 50")):
    old, new = counts[kind + "1"], counts[kind + "2"]
    print(f"{label}: new / old instructions {new / old:.1%} ({old} -> {new})")
PY
fi
