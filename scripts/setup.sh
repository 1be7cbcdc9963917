#!/usr/bin/env bash
# Create .venv and install rvqfast (with the C++ extension) and its test/bench dependencies.
# torch is pinned to the CPU wheel first: anything that let pip choose torch itself would pull a
# multi-GB CUDA build, and --no-build-isolation makes the extension build against this torch.
# `--browser` also installs Debian's chromium (when missing), which the studio's browser tests drive.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -q && apt-get install -y -q chromium; } \
      || echo "warning: could not install chromium; the studio's browser tests will fail" >&2
  else
    echo "warning: chromium is missing and cannot be installed here (needs root and apt-get);" \
         "install it, or the studio's browser tests will fail" >&2
  fi
fi
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
