"""scripts/gpu_check.py, the one-call GPU check, run in its CPU ``--dry-run`` mode: every step runs
(interpreter, tiny grid, nvcc compile without a run, two training steps) and leaves its logs,
JSON and markdown; a tiny budget stops it early and it still writes what it has.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"
STEPS = ["probe", "build", "backends", "harness-build", "harness-run", "tests", "bench-target", "train", "bench-grid"]


def _run(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_runs_every_step_and_writes_results(tmp_path: Path):
    out = tmp_path / "out"
    proc = _run(out, "--dry-run", "--budget", "110", "--examples", "3", timeout=150)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in doc["steps"]}
    assert [s["name"] for s in doc["steps"]] == STEPS
    for name, s in steps.items():
        assert s["status"] in ("ok", "skipped"), (name, s)
        if s["status"] == "ok":
            assert (out / s["log"]).stat().st_size > 0
    assert steps["harness-run"]["status"] == "skipped"  # no GPU: compiled only
    info = doc["info"]
    assert info["mode"].startswith("dry-run") and "reference" in info["available_backends"]
    assert "cuda" in info["backend_load_errors"]  # the CPU torch cannot build rvqfast._cuda
    assert "passed" in info["tests"] and "failed" not in info["tests"]
    assert info["train_seconds"] > 0 and (out / "train").is_dir()

    bench = doc["bench"]
    # The target case (the dry grid's last) comes first, then the rest of the grid.
    target = (24, 20, 17)
    for dtype in ("fp32", "bf16"):
        rows = {r["impl"]: r for r in bench if (r["N"], r["K"], r["D"]) == target and r["dtype"] == dtype}
        assert set(rows) == {"rvqfast-cuda", "rvqfast-cuda-certified", "rvqfast-triton", "rvqfast-triton-certified",
                             "rvqfast-triton-bf16", "torch-reference", "vector-quantize-pytorch"}
        for impl in ("rvqfast-triton", "rvqfast-triton-certified", "torch-reference"):
            r = rows[impl]
            assert r["status"] == "ok" and r["check"] == "ok" and r["rows_not_nearest"] == 0, r
            assert r["median_ms"] > 0 and r["rounds"] >= 1 and r["same_as_reference"] >= 0.9
        assert 0 <= rows["rvqfast-triton-certified"]["fallback_share"] <= 1
        assert rows["rvqfast-cuda"]["status"] == "unavailable" and "cuda" in rows["rvqfast-cuda"]["reason"]
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# rvqfast GPU check: CPU dry run")
    assert "| 24 | 20 | 17 | fp32 | rvqfast-triton |" in md and "× reference" in md


def test_budget_stops_it_and_it_still_writes(tmp_path: Path):
    out = tmp_path / "out"
    # 12 s minus the 8 s kept for the write-up: the first step gets ~4 s, the rest none.
    proc = _run(out, "--dry-run", "--budget", "12", timeout=60)
    doc = json.loads((out / "gpu_check.json").read_text())
    status = [s["status"] for s in doc["steps"]]
    assert [s["name"] for s in doc["steps"]] == STEPS
    assert status[0] in ("ok", "timeout") and "skipped" in status[1:]
    assert doc["info"]["elapsed_s"] <= 12
    assert (out / "gpu_check.md").exists()
    assert proc.returncode in (0, 1)
