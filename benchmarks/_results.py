"""Results table for the benchmark suites: machine description and markdown/JSON writers.

Generic on purpose: it reads whatever pytest-benchmark recorded (group, name, timing stats and
``extra_info``) so every suite's numbers land in the same per-machine table.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        pass
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "avx512f": " avx512f" in flags,
        "avx512_bf16": " avx512_bf16" in flags,
        "amx_bf16": " amx_bf16" in flags,
        "avx512_vnni": " avx512_vnni" in flags,
        "amx_int8": " amx_int8" in flags,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        # pytest-benchmark's --benchmark-timer: time.process_time (CPU time) with one thread is
        # far less sensitive to other jobs on a shared machine than wall time.
        "timer": os.environ.get("RVQFAST_BENCH_TIMER", "time.perf_counter (wall)"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


@functools.lru_cache(maxsize=None)
def gemm_rate_gops(kind: str, n: int = 2048, reps: int = 5) -> float:
    """The machine's measured GEMM rate (GOP/s, best of ``reps`` n^3 products) for ``kind`` in
    ``fp32``, ``bf16`` (bf16 x bf16 through ``torch.mm``) or ``int8`` (s8 x s8 -> s32 through
    ``torch._int_mm``, the path of the certified int8 screen). Measured once per session."""
    g = torch.Generator().manual_seed(0)
    if kind == "int8":
        a = torch.randint(-127, 128, (n, n), dtype=torch.int8, generator=g)
        b = torch.randint(-127, 128, (n, n), dtype=torch.int8, generator=g)
        out = torch.empty(n, n, dtype=torch.int32)

        def run():
            torch._int_mm(a, b.t(), out=out)
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[kind]
        a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)

        def run():
            a @ b.t()
    # One thread: its CPU time (robust to other jobs); several: wall time.
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    for _ in range(2):
        run()
    best = float("inf")
    for _ in range(reps):
        t = clock()
        run()
        best = min(best, clock() - t)
    return 2 * n**3 / best / 1e9


def machine_slug(info: dict[str, Any]) -> str:
    model = re.sub(r"\((R|TM)\)|CPU|Processor|@.*", "", info["cpu_model"], flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "unknown-cpu"
    return f"{slug}-{info['cores']}c"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def collect(benchmarks: list[Any]) -> list[dict[str, Any]]:
    """Rows from pytest-benchmark's Metadata objects (skips benchmarks that never ran)."""
    rows = []
    for b in benchmarks:
        stats = getattr(b, "stats", None)
        if stats is None or not getattr(stats, "rounds", 0):
            continue
        rows.append(
            {
                "group": b.group or "",
                "name": b.name,
                "median_s": stats.median,
                "min_s": stats.min,
                "mean_s": stats.mean,
                "stddev_s": stats.stddev if stats.rounds > 1 else 0.0,
                "rounds": stats.rounds,
                "extra_info": dict(b.extra_info),
            }
        )
    rows.sort(key=lambda r: (r["group"], r["name"]))
    return rows


def write(rows: list[dict[str, Any]], suffix: str = "cpu") -> tuple[Path, Path] | None:
    """Write benchmarks/results/<machine>-<suffix>.{json,md}; returns the paths (None if no rows)."""
    if not rows:
        return None
    info = machine_info()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"{machine_slug(info)}-{suffix}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    # Merge with the table already there: a partial run (one suite, -k) refreshes its own rows
    # and keeps the others.
    if json_path.exists():
        try:
            old = json.loads(json_path.read_text()).get("results", [])
        except (ValueError, AttributeError):
            old = []
        fresh = {(r["group"], r["name"]) for r in rows}
        rows = sorted(
            [r for r in old if isinstance(r, dict) and (r.get("group"), r.get("name")) not in fresh] + rows,
            key=lambda r: (r["group"], r["name"]),
        )
    json_path.write_text(json.dumps({"machine": info, "results": rows}, indent=2, default=str))
    lines = [
        f"# Benchmarks on {info['cpu_model']} ({info['cores']} cores, torch {info['torch']}, "
        f"{info['torch_threads']} threads)",
        "",
        f"Generated {info['date']} by `pytest benchmarks/`. Load average at the end: "
        f"{info['load_average_at_end']} (a shared machine makes timings noisy). Timer: {info['timer']}.",
        "",
    ]
    for group in sorted({r["group"] for r in rows}):
        grows = [r for r in rows if r["group"] == group]
        keys: list[str] = []
        for r in grows:
            keys += [k for k in r["extra_info"] if k not in keys]
        lines += [f"## {group or '(no group)'}", ""]
        lines.append("| name | median ms | min ms | rounds | " + " | ".join(keys) + " |")
        lines.append("|---" * (4 + len(keys)) + "|")
        for r in grows:
            extra = " | ".join(_fmt(r["extra_info"].get(k, "")) for k in keys)
            lines.append(
                f"| {r['name']} | {r['median_s'] * 1e3:.2f} | {r['min_s'] * 1e3:.2f} | {r['rounds']} | {extra} |"
            )
        lines.append("")
    md_path.write_text("\n".join(lines))
    return json_path, md_path
