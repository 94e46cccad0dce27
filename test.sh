#!/usr/bin/env bash
# Set up, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup.sh
exec .venv/bin/python -m pytest "$@"
