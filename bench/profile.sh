#!/usr/bin/env bash
# `make profile`: where the release server's CPU goes on the hot path.
# Seeds an account of 1 000 notes, starts the release server pinned to
# core 0 with every defence at its default (the rate limits raised, not
# removed, so wrk's one address is not refused), loads it with wrk from
# core 1 on the authenticated GET by id (or PROFILE_URL_PATH), and samples
# it with `perf record` (software clock: works on VMs without hardware
# counters). Prints the hottest functions, self time, and leaves the whole
# recording in target/profile/perf.data for `perf report -i`.
# PROFILE_SCENARIO=list profiles the first page of 50 notes instead.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "profile needs perf (apt-get install linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "profile needs wrk (apt-get install wrk)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
PORT=${PROFILE_PORT:-18180}
SECONDS_=${PROFILE_SECONDS:-10}
OUT=$TARGET/profile
mkdir -p "$OUT"
W=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

# The release binary keeps its symbols. Call stacks (PROFILE_CALLERS=1)
# need frame pointers: that build goes to a target directory of its own
# (a full build the first time), since DWARF unwinding of an async stack
# gave no callers here.
cargo build --release --quiet --bin notesd --examples
BIN=$TARGET/release/notesd
CALLS=()
if [ -n "${PROFILE_CALLERS:-}" ]; then
  FP_TARGET=$TARGET/profile-fp
  RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=$FP_TARGET cargo build --release --quiet --bin notesd
  BIN=$FP_TARGET/release/notesd
  CALLS=(--call-graph fp)
fi
export NOTESD_MASTER_KEY_FILE=$W/master.key
"$TARGET/release/examples/bench_seed" "$W/data" profile@bench.test:1000 >/dev/null
NOTESD_LOG=warn taskset -c 0 "$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$W/data" \
  --rate-limit 60000000 --auth-rate-limit 6000000 --max-connections-per-client 1000 >"$W/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -sf -H 'content-type: application/json' \
  -d '{"email":"profile@bench.test","password":"bench otter cathedral"}' "http://127.0.0.1:$PORT/api/v1/auth/login" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
case ${PROFILE_SCENARIO:-get} in
  get)
    NOTE=$(curl -sf -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/notes?limit=1" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
    URL_PATH=${PROFILE_URL_PATH:-/api/v1/notes/$NOTE} ;;
  list) URL_PATH=${PROFILE_URL_PATH:-/api/v1/notes?limit=50} ;;
  *) echo "PROFILE_SCENARIO: get or list" >&2; exit 1 ;;
esac

taskset -c 1 wrk -t1 -c32 -d$((SECONDS_ + 2))s --latency -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$PORT$URL_PATH" >"$OUT/wrk.out" &
WRK=$!
sleep 1
perf record -F 1999 -e cpu-clock "${CALLS[@]}" -p "$SERVER" -o "$OUT/perf.data" -- sleep "$SECONDS_" 2>"$OUT/perf-record.log"
wait "$WRK"
grep -E 'Requests/sec|99%' "$OUT/wrk.out"
perf report -i "$OUT/perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio 2>/dev/null |
  grep -E '^ +[0-9]' | sed 's/ *- *- *$//' | head -${PROFILE_TOP:-45}
echo "whole recording: perf report -i $OUT/perf.data (add --children for inclusive time)"
