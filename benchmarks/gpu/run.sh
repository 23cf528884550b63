#!/usr/bin/env bash
# The GPU run of issue 18: every step of benchmarks/gpu/run.py (see its docstring and docs/benchmarks/gpu.md),
# from the repository root, with the machine's python3 (or $PYTHON).
#
#     bash benchmarks/gpu/run.sh --copy-to "$OUT"                  # on the GPU machine
#     bash benchmarks/gpu/run.sh --tiny --results /tmp/rehearsal   # the CPU rehearsal
set -u
cd "$(dirname "$0")/../.." || exit 2
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu/run.py "$@"
