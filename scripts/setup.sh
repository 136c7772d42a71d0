#!/usr/bin/env bash
# Create (or reuse) the project virtualenv in .venv and install hybridize with everything the
# demo and the tests need. Idempotent: a second run only checks. Works offline on machines whose
# pip finds torch on local disk (see docs/install.md); torch is pinned so that a fresh
# machine does not pull the newest multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.hybridize-installed
want=$(cat pyproject.toml scripts/requirements.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r scripts/requirements.txt
# foolbox is only a carrier of 20 real sample images per data set; its dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps "foolbox==3.3.4"
.venv/bin/python -m pip install -q --no-deps -e .
echo "$want" > "$stamp"
