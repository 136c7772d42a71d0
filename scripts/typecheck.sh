#!/usr/bin/env bash
# Type check hybridize and the CLI with mypy (settings in pyproject.toml, [tool.mypy]).
# cli/ is installed as the package hybridize_cli; mypy finds it under that name through a link
# in a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ln -s "$PWD/cli" "$tmp/hybridize_cli"
MYPYPATH="$tmp" "${PYTHON:-.venv/bin/python}" -m mypy "$@"
