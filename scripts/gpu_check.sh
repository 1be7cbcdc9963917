#!/usr/bin/env bash
# Thin wrapper: every GPU check of rvqfast in one call (see scripts/gpu_check.py --help).
#   bash scripts/gpu_check.sh                 # output in $OUT, else ./gpu_check_out
#   bash scripts/gpu_check.sh --budget 400    # any gpu_check.py option
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
