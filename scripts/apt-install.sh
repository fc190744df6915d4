#!/usr/bin/env bash
# apt-install.sh WHO PACKAGE...: installs Debian packages with apt-get (as
# root, or through sudo), saying which step wanted them. Used by the
# prerequisite steps of make test and make bench.
set -euo pipefail
who=$1; shift
[ $# -gt 0 ] || exit 0
echo "$who: installing $* with apt-get" >&2
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
