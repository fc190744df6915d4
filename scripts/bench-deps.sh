#!/usr/bin/env bash
# `make bench`, `make profile` and `make instructions`' prerequisite step:
# the Debian packages they drive the server with (wrk, openssl for the
# bench's HTTPS certificate, perf for the profile, valgrind for the
# instruction counts), installed with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${1:-}" = profile ]; then
  command -v perf >/dev/null || missing+=(linux-perf)
fi
if [ "${1:-}" = instructions ]; then
  command -v valgrind >/dev/null || missing+=(valgrind)
fi
scripts/apt-install.sh bench-deps "${missing[@]}"
