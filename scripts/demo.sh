#!/usr/bin/env bash
# Set up the environment and run the main job: the default A/B experiment (extra arguments go
# to run_ab.py, e.g. --force to replace runs/ab/default, --through inprocess).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python run_ab.py --config configs/default.toml "$@"
