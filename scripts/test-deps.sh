#!/usr/bin/env bash
# `make test`'s prerequisite step: installs what the tests need, so that a
# fresh machine runs every test instead of skipping some.
#   - Debian packages: chromium (the headless check of /docs under its CSP),
#     pebble (the ACME test's certificate authority), python3-venv.
#   - Python tools for the contract tests, pinned in
#     tests/contract/requirements.txt, into a local virtualenv (.venv);
#     tests/contract/run.sh refreshes it when the pins change.
# Nothing is downloaded outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v pebble >/dev/null || missing+=(pebble)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
scripts/apt-install.sh test-deps "${missing[@]}"

venv=${CONTRACT_VENV:-.venv}
want=$(sha256sum tests/contract/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.contract-requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "test-deps: installing tests/contract/requirements.txt into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/contract/requirements.txt
  echo "$want" >"$venv/.contract-requirements.sha256"
fi
