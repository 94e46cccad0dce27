#!/usr/bin/env bash
# Set up, then run the whole test suite. Extra arguments go to pytest, e.g.
#   ./test.sh -m "not slow"          the fast tier (docs/benchmarks.md#test-suite)
#   ./test.sh tests/unit -n 0        one process, no workers
# Tests run in parallel workers (pytest-xdist), one per core up to 6 (BIGTRAIN_TEST_WORKERS=N to
# choose); a worker takes a whole test file at a time, so a file's shared fixtures are built once.
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup.sh
# The venvs hold no bytecode (pip's --no-compile in .ci/setup.sh and kernels/compile_check.sh): the
# suite's first import of each module writes it, even where PYTHONDONTWRITEBYTECODE is set, so that
# no later interpreter compiles torch's modules again (about 1.7 s each).
unset PYTHONDONTWRITEBYTECODE
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc would report OMP_NUM_THREADS if set
workers=${BIGTRAIN_TEST_WORKERS:-$(( cores < 6 ? cores : 6 ))}
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
