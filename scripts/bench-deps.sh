#!/usr/bin/env bash
# `make bench` and `make profile`'s prerequisite step: the Debian packages
# they drive the server with (wrk, openssl for the bench's HTTPS
# certificate, perf for the profile), installed with apt-get when missing.
set -euo pipefail

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${1:-}" = profile ]; then
  command -v perf >/dev/null || missing+=(linux-perf)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench-deps: installing ${missing[*]} with apt-get" >&2
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
