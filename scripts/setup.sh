#!/usr/bin/env bash
# Create .venv and install rvqfast (with the C++ extension) and its test/bench dependencies.
# torch is pinned to the CPU wheel first: anything that let pip choose torch itself would pull a
# multi-GB CUDA build, and --no-build-isolation makes the extension build against this torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install -q --upgrade pip setuptools wheel ninja 2>&1 | grep -v "is ignored" || true
pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
pip install -q --no-build-isolation -e ".[test]" 2>&1 | grep -v "is ignored" || true
python - <<'PY'
import rvqfast
print("rvqfast", rvqfast.__version__, "backends:", rvqfast.available_backends())
PY
