"""Compile check of the CUDA kernels: every kernels/cuda/*.cu must build with nvcc for sm_80 and
sm_90a (plus the standalone harness in kernels/cuda/test/), so a syntax or template error fails
CI without a GPU. Plain translation units, no torch headers: only nvcc is needed.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "kernels"
SOURCES = sorted((KERNELS / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc") or next((str(p) for p in [Path("/usr/local/cuda/bin/nvcc")] if p.exists()), None)
ARCHS = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90a,code=sm_90a"]

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (install a CUDA toolkit to compile-check)")


def _nvcc(args: list[str], cwd: Path) -> None:
    proc = subprocess.run([NVCC, "-std=c++17", "-O1", f"-I{KERNELS}", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_there_are_kernels():
    names = {p.name for p in SOURCES}
    assert {"search.cu", "codes.cu"} <= names, names


@pytest.mark.parametrize("src", SOURCES, ids=[p.name for p in SOURCES])
def test_kernel_compiles_for_sm80_and_sm90a(src: Path, tmp_path: Path):
    _nvcc(["-c", *ARCHS, "-Werror=all-warnings", str(src), "-o", str(tmp_path / (src.stem + ".o"))], tmp_path)
    assert (tmp_path / (src.stem + ".o")).stat().st_size > 0


def test_harness_links(tmp_path: Path):
    # The launchers' declarations, definitions and the harness agree (a link error otherwise).
    harness = KERNELS / "cuda" / "test" / "check_kernels.cu"
    _nvcc([ARCHS[1], str(harness), *map(str, SOURCES), "-o", str(tmp_path / "check_kernels")], tmp_path)
    assert (tmp_path / "check_kernels").exists()
