"""Benchmark session plumbing: shared fixtures and the per-machine results table.

At the end of ``pytest benchmarks/`` every benchmark that ran (any suite, any group) is written
to ``benchmarks/results/<machine>-cpu.{md,json}`` with its timing stats and ``extra_info``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # oracle helpers

import _results  # noqa: E402


def _rate(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


@pytest.fixture(scope="session")
def gemm_rate() -> dict[str, float]:
    """The machine's measured GEMM rate in GFLOP/s (fp32 and bf16), best of a few 2048^3 mm."""
    return {"fp32": _rate(torch.float32), "bf16": _rate(torch.bfloat16)}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is None or getattr(bs, "disabled", False):
        return
    paths = _results.write(_results.collect(bs.benchmarks), "cpu")
    if paths:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"rvqfast benchmark table: {paths[1]}")
