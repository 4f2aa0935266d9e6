#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev]"
