#!/bin/sh
# Runs the octoDNS provider's tests against a real weir: WEIR_BIN (default: weir on PATH).
# Needs python3 (3.10+), tsig-keygen (bind9) and network access to PyPI for the venv.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q "$here[test]"
WEIR_BIN=${WEIR_BIN:-$(command -v weir)} \
  "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$tmp/pytest" "$here/tests" "$@"
