"""``python -m rvqfast.studio.measure RUN [--data PATH] [--screenshot PNG]``: in-browser decode time.

Starts the studio on a free loopback port, opens it in headless Chromium, and times
``decoder.onnx`` in the page (onnxruntime-web, wasm, one thread) on ``--seconds`` of motion,
next to onnxruntime in Python (one thread) on the same codes in the same run. Optionally makes
an edit through the page and saves a screenshot. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _codes(n: int, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """The codes the page's benchmark hook decodes (same formula as app.js)."""
    t = np.arange(n)[:, None]
    sizes = np.array([s["size"] for s in info["slots"]])
    cats = (t * 7 + np.arange(70)[None] * 3) % sizes[None]
    idx = (t * 13 + np.arange(info["num_quantizers"])[None] * 5) % info["codebook_size"]
    return cats[None].astype(np.int64), idx[None].astype(np.int64)


def _edit_for_screenshot(b, info: dict, edit: str, ghost: str) -> None:
    """Through the page: pick a slot, drag over a range, choose the category, apply."""
    name, _, label = edit.partition("=")
    slot = next(s for s in info["slots"] if s["name"] == name)
    category = next(k for k, p in enumerate(slot["phrases"]) if p.endswith(label))
    slot = slot["index"]
    n = b.evaluate("window.__studio.categories().length") // 70
    a, z = max(1, n // 4), max(2, n // 2)
    p0 = b.evaluate(f"window.__studio.cellCenter({slot}, {a})")
    p1 = b.evaluate(f"window.__studio.cellCenter({slot}, {z})")
    b.drag(p0["x"], p0["y"], p1["x"], p1["y"])
    count = b.evaluate("window.__studio.decodeCount")
    b.evaluate(f"(() => {{ const s = document.getElementById('edit-category'); s.value = '{category}';"
               " document.getElementById('apply-edit').click(); })()")
    b.wait_for(f"window.__studio.decodeCount > {count}", timeout=60)
    b.evaluate(f"(() => {{ const s = document.getElementById('ghost-mode'); s.value = '{ghost}';"
               " s.dispatchEvent(new Event('change')); })()")
    frame = (a + z) * 2
    b.evaluate(f"(() => {{ const s = document.getElementById('scrub'); s.value = '{frame}';"
               " s.dispatchEvent(new Event('input')); })()")
    # Park the pointer over the edited range so the tooltip shows the words.
    p = b.evaluate(f"window.__studio.cellCenter({slot}, {(a + z) // 2})")
    b.mouse("mouseMoved", p["x"], p["y"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rvqfast.studio.measure", description=__doc__)
    p.add_argument("run")
    p.add_argument("--data", default="default")
    p.add_argument("--seconds", type=float, default=10.0, help="motion length to decode (default 10 s)")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--screenshot", default=None, help="write a PNG of the page after an edit")
    p.add_argument("--motion", default=None, help="library id to show in the screenshot")
    p.add_argument("--size", default="1600x1000")
    p.add_argument("--edit", default="vertical:left_upperarm=horizontal", help="SLOT=LABEL for the screenshot")
    p.add_argument("--ghost", default="beside", choices=["ghost", "beside", "hidden"])
    args = p.parse_args(argv)

    import torch

    from rvqfast.export.runtime import OnnxMotionTokenizer

    from .app import build_state
    from .headless import Browser
    from .server import make_server

    torch.set_num_threads(1)
    state = build_state(args.run, None if args.data == "none" else args.data)
    server = make_server(state, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    info = state.info
    n = int(round(args.seconds * info["fps"] / info["frames_per_token"]))
    width, height = (int(v) for v in args.size.split("x"))
    result: dict = {"cpu": _cpu_name(), "tokens": n, "frames": n * info["frames_per_token"],
                    "seconds_of_motion": n * info["frames_per_token"] / info["fps"], "reps": args.reps,
                    "run": str(args.run), "model": info["model"], "num_quantizers": info["num_quantizers"]}
    try:
        with Browser(width=width, height=height, timeout=180) as b:
            b.goto(f"http://127.0.0.1:{port}/")
            b.wait_for("window.__studio && (window.__studio.ready || window.__studio.error)", timeout=180)
            if b.evaluate("window.__studio.error"):
                raise RuntimeError(b.evaluate("window.__studio.error"))
            b.evaluate(f"window.__studio.benchmark({n}, 3)")  # warm-up
            page_ms = b.evaluate(f"window.__studio.benchmark({n}, {args.reps})")
            result["browser_version"] = b.send("Browser.getVersion").get("product")
            if args.screenshot:
                if args.motion:
                    b.evaluate(f"window.__studio.selectMotion({json.dumps(args.motion)})")
                _edit_for_screenshot(b, info, args.edit, args.ghost)
                time.sleep(1.0)
                Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
                Path(args.screenshot).write_bytes(b.screenshot())
                result["screenshot"] = args.screenshot
            result["console_errors"] = b.console_errors()
    finally:
        server.shutdown()
        server.server_close()
    rt = OnnxMotionTokenizer(state.export_dir, threads=1)
    cats, idx = _codes(n, info)
    rt.decode(cats, idx)
    py_ms = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        rt.decode(cats, idx)
        py_ms.append((time.perf_counter() - t0) * 1000)
    def stats(ms: list[float]) -> dict:
        return {"min": min(ms), "p10": float(np.percentile(ms, 10)), "median": statistics.median(ms)}

    result["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["browser_wasm_1thread_ms"] = stats(page_ms)
    result["python_onnxruntime_1thread_ms"] = stats(py_ms)
    result["ratio_browser_over_python_median"] = statistics.median(page_ms) / statistics.median(py_ms)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
