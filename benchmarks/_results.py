"""Results table for the benchmark suites: machine description and markdown/JSON writers.

Generic on purpose: it reads whatever pytest-benchmark recorded (group, name, timing stats and
``extra_info``) so every suite's numbers land in the same per-machine table.
"""
from __future__ import annotations

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
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


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
        f"{info['load_average_at_end']} (a shared machine makes timings noisy).",
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
