#!/usr/bin/env bash
# Line coverage of bigtrain/ by the whole suite, subprocesses included (.ci/coveragerc: the CLI
# runs, torchrun ranks, DeepSpeed workers and Slurm jobs the tests start are measured too).
# Runs test.sh (same workers) with pytest-cov; extra arguments go to pytest:
#   bash .ci/coverage.sh -q            # the figure docs/benchmarks.md#test-suite records
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check "coverage==7.18.0" "pytest-cov==7.1.0" 2>&1 \
  | sed '/^WARNING: Location .* is ignored/d'
rm -f .coverage .coverage.*
# Every CLI call a fresh interpreter (not a fork of the tests' CLI server), which coverage starts in.
export BIGTRAIN_TEST_EXEC=1
exec bash test.sh --cov=bigtrain --cov-config=.ci/coveragerc --cov-report=term "$@"
