#!/usr/bin/env bash
# bench/compare.sh OLD_BINARY [NEW_BINARY]: the authenticated note read of
# two notesd release binaries on copies of the same data, alternating which
# goes first, each round beside the bare poem route; prints each one's share
# of the bare route per round. NEW_BINARY defaults to this checkout's
# release build. Build the old one from another checkout, e.g.
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
"$TARGET/release/examples/bench_seed" "$W/old" small@bench.test:1000 >/dev/null
cp -a "$W/old" "$W/new"
ARGS="--rate-limit 0 --auth-rate-limit 0 --max-connections-per-client 0 --login-free-failures 1000"
NOTESD_LOG=warn taskset -c 0 "$OLD" serve --listen 127.0.0.1:$PORT --data-dir "$W/old" $ARGS >/dev/null 2>&1 &
PIDS+=("$!")
NOTESD_LOG=warn taskset -c 0 "$NEW" serve --listen 127.0.0.1:$((PORT + 1)) --data-dir "$W/new" $ARGS >/dev/null 2>&1 &
PIDS+=("$!")
taskset -c 0 "$TARGET/release/examples/bare" 127.0.0.1:$((PORT + 2)) >/dev/null 2>&1 &
PIDS+=("$!")
for port in $PORT $((PORT + 1)); do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done
token() {
  curl -sf -H 'content-type: application/json' -d '{"email":"small@bench.test","password":"bench otter cathedral"}' \
    "http://127.0.0.1:$1/api/v1/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
OLD_TOKEN=$(token $PORT)
NEW_TOKEN=$(token $((PORT + 1)))
NOTE=$(curl -sf -H "authorization: Bearer $OLD_TOKEN" "http://127.0.0.1:$PORT/api/v1/notes?limit=1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
rps() { taskset -c 1 wrk -t1 -c32 -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }
read_old() { rps -H "Authorization: Bearer $OLD_TOKEN" "http://127.0.0.1:$PORT/api/v1/notes/$NOTE"; }
read_new() { rps -H "Authorization: Bearer $NEW_TOKEN" "http://127.0.0.1:$((PORT + 1))/api/v1/notes/$NOTE"; }
echo "# GET /notes/{id} share of the bare route: $OLD against $NEW"
for round in $(seq "$ROUNDS"); do
  bare=$(rps "http://127.0.0.1:$((PORT + 2))/hello")
  if [ $((round % 2)) -eq 1 ]; then old=$(read_old); new=$(read_new); else new=$(read_new); old=$(read_old); fi
  python3 -c "print(f'round $round: bare {$bare:.0f} req/s, old {$old:.0f} ({$old / $bare:.1%}), new {$new:.0f} ({$new / $bare:.1%})')"
done
