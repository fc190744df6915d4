#!/usr/bin/env bash
# bench/compare.sh OLD_BINARY [NEW_BINARY]: the authenticated note read, the
# first page of 50 notes and the note create of two notesd release binaries, each on the same data
# written through its own API (so binaries of different schemas compare),
# alternating which goes first, each round beside the bare poem route
# answering the same bytes;
# prints each one's share of the bare route per round, the creates, and
# the medians of new/old. NEW_BINARY defaults to this checkout's release
# build. Build the old one from another checkout, e.g.
#   git worktree add /tmp/old <commit> &&
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1
TARGET=${CARGO_TARGET_DIR:-target}
NEW=${2:-$TARGET/release/notesd}
ROUNDS=${BENCH_ROUNDS:-4}
DURATION=${BENCH_DURATION:-10s}
PORT=${BENCH_PORT:-18080}
cargo build --release --quiet --bin notesd --examples
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
# Every defence on, the quotas one benchmarking client meets raised (as
# bench/run.sh does).
ARGS="--rate-limit 60000000 --auth-rate-limit 6000000 --max-connections-per-client 1000 --login-free-failures 1000 --max-notes-per-account 10000000"
# Each server has its own master key (a binary that seals makes one).
NOTESD_MASTER_KEY_FILE=$W/old.key NOTESD_LOG=warn taskset -c 0 "$OLD" serve --listen 127.0.0.1:$PORT --data-dir "$W/old" $ARGS >/dev/null 2>&1 &
PIDS+=("$!")
NOTESD_MASTER_KEY_FILE=$W/new.key NOTESD_LOG=warn taskset -c 0 "$NEW" serve --listen 127.0.0.1:$((PORT + 1)) --data-dir "$W/new" $ARGS >/dev/null 2>&1 &
PIDS+=("$!")
for port in $PORT $((PORT + 1)); do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done
# An account and 1 000 typical notes in each, through its own API.
read -r OLD_TOKEN OLD_NOTE < <(python3 bench/seed_api.py $PORT)
read -r NEW_TOKEN NEW_NOTE < <(python3 bench/seed_api.py $((PORT + 1)))
# The bare route answers the bytes of the new binary's note read.
curl -si -H "authorization: Bearer $NEW_TOKEN" "http://127.0.0.1:$((PORT + 1))/api/v1/notes/$NEW_NOTE" >"$W/note.http"
taskset -c 0 "$TARGET/release/examples/bare" 127.0.0.1:$((PORT + 2)) "$W/note.http" >/dev/null 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$((PORT + 2))/hello" && break; sleep 0.1; done
post_lua() {
  cat >"$W/post-$1.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $2"
wrk.body = '{"title":"bench note","content":"written by wrk","tags":["bench"]}'
LUA
}
post_lua old "$OLD_TOKEN"
post_lua new "$NEW_TOKEN"
rps() { taskset -c 1 wrk -t1 -c32 -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }
read_old() { rps -H "Authorization: Bearer $OLD_TOKEN" "http://127.0.0.1:$PORT/api/v1/notes/$OLD_NOTE"; }
read_new() { rps -H "Authorization: Bearer $NEW_TOKEN" "http://127.0.0.1:$((PORT + 1))/api/v1/notes/$NEW_NOTE"; }
list_old() { rps -H "Authorization: Bearer $OLD_TOKEN" "http://127.0.0.1:$PORT/api/v1/notes?limit=50"; }
list_new() { rps -H "Authorization: Bearer $NEW_TOKEN" "http://127.0.0.1:$((PORT + 1))/api/v1/notes?limit=50"; }
create_old() { rps -s "$W/post-old.lua" "http://127.0.0.1:$PORT/api/v1/notes"; }
create_new() { rps -s "$W/post-new.lua" "http://127.0.0.1:$((PORT + 1))/api/v1/notes"; }
echo "# GET /notes/{id} share of the bare route, and POST /notes: $OLD against $NEW"
: >"$W/ratios"
for round in $(seq "$ROUNDS"); do
  bare=$(rps -H "Authorization: Bearer $NEW_TOKEN" "http://127.0.0.1:$((PORT + 2))/hello")
  if [ $((round % 2)) -eq 1 ]; then old=$(read_old); new=$(read_new); else new=$(read_new); old=$(read_old); fi
  python3 -c "print(f'round $round: bare {$bare:.0f} req/s, GET old {$old:.0f} ({$old / $bare:.1%}), new {$new:.0f} ({$new / $bare:.1%})')"
  echo "get $old $new" >>"$W/ratios"
done
for round in $(seq 2); do
  if [ $((round % 2)) -eq 1 ]; then old=$(list_old); new=$(list_new); else new=$(list_new); old=$(list_old); fi
  python3 -c "print(f'round $round: GET /notes?limit=50 old {$old:.0f} req/s, new {$new:.0f}')"
  echo "list $old $new" >>"$W/ratios"
done
for round in $(seq 2); do
  if [ $((round % 2)) -eq 1 ]; then old=$(create_old); new=$(create_new); else new=$(create_new); old=$(create_old); fi
  python3 -c "print(f'round $round: POST /notes old {$old:.0f} req/s, new {$new:.0f}')"
  echo "create $old $new" >>"$W/ratios"
done
python3 - "$W/ratios" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for kind in ("get", "list", "create"):
    r = [float(n) / float(o) for k, o, n in rows if k == kind]
    print(f"{kind}: new / old, median of {len(r)} rounds: {statistics.median(r):.1%}")
PY
