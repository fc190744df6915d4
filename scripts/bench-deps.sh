#!/usr/bin/env bash
# `make bench` and `make profile`'s prerequisite step: the Debian packages
# they drive the server with (wrk, openssl for the bench's HTTPS
# certificate, perf for the profile), installed with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${1:-}" = profile ]; then
  command -v perf >/dev/null || missing+=(linux-perf)
fi
scripts/apt-install.sh bench-deps "${missing[@]}"
