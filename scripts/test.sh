#!/usr/bin/env bash
# Installs rl-plasticity with its test dependencies into the current Python, then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -c constraints.txt -e ".[dev,all]"
python3 -m ruff check .
python3 -m pytest "$@"
