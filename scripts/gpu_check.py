#!/usr/bin/env python3
"""Every GPU check of rvqfast in one call, within a fixed time budget.

Run from a fresh copy of the repository on a GPU machine (its own CUDA torch, no network):

    python scripts/gpu_check.py --out /path/to/out          # default: $OUT, else ./gpu_check_out

Steps, in order (each a subprocess with its own log under ``OUT/logs/``):

1. ``probe``: python / torch / CUDA / triton / device / optional packages;
2. ``build``: the CPU and CUDA extensions against this torch (``setup.py build_ext --inplace``,
   or ``pip install --no-build-isolation --no-deps -e .`` with ``--build pip``);
3. ``backends``: ``rvqfast.available_backends()`` and every backend load error;
4. ``harness-build`` / ``harness-run``: the standalone CUDA kernel harness
   (kernels/cuda/test/check_kernels.cu, no torch) built with nvcc for this GPU and run;
5. ``tests``: the tests that run CUDA tensors (Triton and CUDA backends against the reference,
   hypothesis cases with a bounded example count);
6. ``bench-target``: the target case N=65536, K=512, D=512, Q=6 (fp32 and bf16 inputs);
7. ``train``: ``python -m rvqfast.train --device cuda`` with the default preset, timed;
8. ``bench-grid``: the rest of the grid N in {4096, 65536, 1048576}, K in {512, 4096},
   D in {64, 512}, cheapest first, until the budget runs out.

Everything goes to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (with the device name),
rewritten after every step, so a run cut short still leaves what it measured. The script stops
itself before ``--budget`` seconds (default 450) run out: each step's timeout is capped by what is
left, and the benchmark worker skips the cases it has no time for.

``--dry-run`` runs the same steps on CPU (Triton interpreter, tiny grid, nvcc compile without a
run, a few training steps) so CI checks the script itself (tests/test_gpu_check.py).

Benchmark rows: ``impl`` is one of ``rvqfast-cuda`` (TF32 screen + certified re-rank),
``rvqfast-cuda-certified`` (bf16 screen + certified re-rank), ``rvqfast-triton`` (fp32 IEEE dot,
all stages fused), ``rvqfast-triton-certified`` (bf16 screen + certified re-rank, per stage),
``rvqfast-triton-bf16`` (bf16 dot, approximate), ``torch-reference`` (rvqfast's pure-PyTorch
backend: chunked ``addmm`` + ``argmin`` per stage) and ``vector-quantize-pytorch`` (``ResidualVQ``
eval forward, when installed). Each row records the median time, TFLOP/s (2·N·K·D·Q / time), the
share of the device's dense peak for the arithmetic it uses, the peak GPU memory above the inputs
against ``4·(N·D + Q·K·D)`` bytes, a correctness check on the first rows, and for the certified
searches the share of row-stages that needed the exact rescan.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
Q = 6
TARGET = (65536, 512, 512)
GRID = [(n, k, d) for n in (4096, 65536, 1048576) for k in (512, 4096) for d in (64, 512)]
DRY_GRID = [(16, 16, 8), (24, 20, 17)]
DRY_Q = 2
DTYPES = ("fp32", "bf16")
IMPLS = ("torch-reference", "rvqfast-cuda", "rvqfast-cuda-certified", "rvqfast-triton", "rvqfast-triton-certified",
         "rvqfast-triton-bf16", "vector-quantize-pytorch")
# impl -> (rvqfast backend, precision, the arithmetic its search runs on).
RVQFAST_IMPLS = {
    "rvqfast-cuda": ("cuda", "exact", "tf32"),
    "rvqfast-cuda-certified": ("cuda", "certified", "bf16"),
    "rvqfast-triton": ("triton", "exact", "fp32"),
    "rvqfast-triton-certified": ("triton", "certified", "bf16"),
    "rvqfast-triton-bf16": ("triton", "bf16", "bf16"),
    "torch-reference": ("reference", "exact", "fp32"),
}
APPROXIMATE = {"rvqfast-triton-bf16"}
CHECK_ROWS = 1024
# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets: TF32 and BF16 tensor core, FP32.
# Most specific names first (the first key contained in the device name wins).
PEAKS = {
    "H100 PCIe": {"tf32": 378.0, "bf16": 756.0, "fp32": 51.2},
    "H100 NVL": {"tf32": 417.5, "bf16": 835.5, "fp32": 60.0},
    "H100": {"tf32": 494.7, "bf16": 989.4, "fp32": 66.9},
    "H200": {"tf32": 494.7, "bf16": 989.4, "fp32": 66.9},
    "A100": {"tf32": 156.0, "bf16": 312.0, "fp32": 19.5},
}
RESERVE_S = 8.0  # kept back for the final write-up


def peaks_for(device_name: str) -> dict[str, float] | None:
    """Dense peak TFLOP/s of a known device, else None."""
    for key, val in PEAKS.items():
        if key in device_name:
            return val
    return None


def mem_model_bytes(n: int, k: int, d: int, q: int) -> int:
    """The memory target: fp32 rows plus fp32 codebooks, 4·(N·D + Q·K·D) bytes."""
    return 4 * (n * d + q * k * d)


# ----------------------------------------------------------------------------------------------
# Benchmark cases (also used by benchmarks/test_bench_gpu.py)
# ----------------------------------------------------------------------------------------------


class Unavailable(Exception):
    """This implementation cannot run here (backend not built, package not installed)."""


def make_inputs(n: int, k: int, d: int, q: int, dtype: str, device: str, seed: int = 0):
    """Seeded rows (N, D) and codebooks (Q, K, D) with stage scales 0.5^s, in ``dtype``."""
    import torch

    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    g = torch.Generator(device=device).manual_seed(seed)
    scales = (0.5 ** torch.arange(q, device=device, dtype=torch.float32)).view(q, 1, 1)
    codebooks = (torch.randn(q, k, d, device=device, generator=g) * scales).to(tdt)
    x = torch.randn(n, d, device=device, generator=g).to(tdt)
    return x, codebooks


def make_encoder(impl: str, codebooks) -> Callable:
    """``x -> (indices (N, Q), quantized (N, D))`` for one implementation (raises Unavailable)."""
    import torch

    if impl in RVQFAST_IMPLS:
        from rvqfast import ops
        from rvqfast.backends import available_backends, backend_load_errors

        backend, precision, _ = RVQFAST_IMPLS[impl]
        if backend not in available_backends():
            raise Unavailable(f"backend {backend!r}: {backend_load_errors().get(backend, 'not registered')}")
        return lambda x: ops.rvq_encode(x, codebooks, backend=backend, precision=precision)
    if impl != "vector-quantize-pytorch":
        raise ValueError(f"unknown impl {impl!r}")
    try:
        import vector_quantize_pytorch as vqp
    except ImportError as e:
        raise Unavailable(f"vector-quantize-pytorch not installed ({e})") from e
    q, k, d = codebooks.shape
    model = vqp.ResidualVQ(dim=d, num_quantizers=q, codebook_size=k).to(codebooks.device).eval()
    with torch.no_grad():
        for s, layer in enumerate(model.layers):
            layer._codebook.embed.copy_(codebooks[s].float().unsqueeze(0))

    def run(x):
        # Fed fp32: its codebook math runs in fp32 with autocast disabled, whatever the input.
        with torch.no_grad():
            quantized, indices, _ = model(x.float().unsqueeze(0))
        return indices[0], quantized[0]

    return run


def check_indices(x, codebooks, idx) -> int:
    """Rows (of the first CHECK_ROWS) where some stage's index is not a nearest code of its
    residual, in fp64, up to an fp32 near-tie."""
    rows = x[:CHECK_ROWS].double()
    idx = idx[:CHECK_ROWS]
    residual = rows.clone()
    bad = None
    for s in range(codebooks.shape[0]):
        cb = codebooks[s].double()
        dist = (residual * residual).sum(1, keepdim=True) - 2 * residual @ cb.T + (cb * cb).sum(1)
        best = dist.min(1).values
        got = dist.gather(1, idx[:, s : s + 1]).squeeze(1)
        slack = 1e-4 * (1 + best.abs()) + 1e-5 * (residual.pow(2).sum(1) + 1)
        b = got > best + slack
        bad = b if bad is None else bad | b
        residual = residual - cb[idx[:, s]]
    return int(bad.sum())


def fallback_row_stages(impl: str, x, codebooks) -> int | None:
    """Row-stages a certified search had to rescan exactly (None where not applicable)."""
    backend, precision, _ = RVQFAST_IMPLS.get(impl, (None, None, None))
    if backend == "cuda" and precision in ("exact", "certified"):
        from rvqfast import _cuda

        return int(_cuda.rvq_encode_fallbacks(x, codebooks, precision)[2])
    if backend == "triton" and precision == "certified":
        from rvqfast import ops
        from rvqfast.backends.triton import certified_stats

        certified_stats(reset=True)
        ops.rvq_encode(x, codebooks, backend="triton", precision="certified")
        return certified_stats(reset=True)["fallback_rows"]
    return None


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_case(impl: str, n: int, k: int, d: int, q: int, dtype: str, device: str,
             min_rounds: int = 3, target_s: float = 1.0) -> dict[str, Any]:
    """Check then time one encode; returns a result row (raises Unavailable)."""
    import torch

    x, codebooks = make_inputs(n, k, d, q, dtype, device)
    rec: dict[str, Any] = {"impl": impl, "N": n, "K": k, "D": d, "Q": q, "dtype": dtype, "device": device}
    encode = make_encoder(impl, codebooks)
    t = time.perf_counter()
    idx, _ = encode(x)  # warm-up: Triton autotune / compile, CUDA context, workspace
    _sync(device)
    rec["first_call_s"] = round(time.perf_counter() - t, 3)
    fb = fallback_row_stages(impl, x, codebooks)
    if fb is not None:
        rec["fallback_row_stages"] = fb
        rec["fallback_share"] = round(fb / (n * q), 5)
    xf, cf = x.float(), codebooks.float()
    rec["rows_not_nearest"] = check_indices(xf, cf, idx)
    from rvqfast import ops

    ref_idx, _ = ops.rvq_encode(x[:CHECK_ROWS], codebooks, backend="reference")
    mine = idx[:CHECK_ROWS].to(ref_idx.device)
    rec["same_as_reference"] = round(float((mine == ref_idx).all(1).double().mean()), 4)
    rec["check_rows"] = int(mine.shape[0])
    if impl == "vector-quantize-pytorch":
        # Its own distance expansion: compared with the reference on stage 0 only.
        rec["check"] = "ok" if float((mine[:, 0] == ref_idx[:, 0]).double().mean()) >= 0.99 else "FAIL"
    elif impl in APPROXIMATE:
        rec["check"] = "approximate"
    else:
        rec["check"] = "ok" if rec["rows_not_nearest"] == 0 else "FAIL"
    del idx

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t = time.perf_counter()
    out = encode(x)
    _sync(device)
    one = time.perf_counter() - t
    del out
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
        rec["peak_mem_gib"] = round(peak / 2**30, 4)
        rec["mem_ratio"] = round(peak / mem_model_bytes(n, k, d, q), 3)
    rec["mem_model_gib"] = round(mem_model_bytes(n, k, d, q) / 2**30, 4)

    rounds = max(min_rounds, min(20, int(target_s / max(one, 1e-6))))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        encode(x)
        _sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    rec.update(rounds=rounds, median_ms=round(1e3 * med, 4), min_ms=round(1e3 * times[0], 4),
               tflops=round(2.0 * n * k * d * q / med / 1e12, 3))
    return rec


def add_peak_shares(rec: dict[str, Any], device_name: str) -> None:
    """pct_of_peak for the arithmetic the impl's search uses (plus fp32, for comparison)."""
    peaks = peaks_for(device_name)
    if not peaks or "tflops" not in rec:
        return
    arith = RVQFAST_IMPLS.get(rec["impl"], (None, None, "fp32"))[2]
    rec["peak_kind"] = arith
    rec["pct_of_peak"] = round(100 * rec["tflops"] / peaks[arith], 1)
    rec["pct_of_fp32_peak"] = round(100 * rec["tflops"] / peaks["fp32"], 1)


def bench_worker(args: argparse.Namespace) -> int:
    """Run the benchmark cases in-process, appending one JSON line per (case, impl)."""
    import torch

    device = "cuda" if (torch.cuda.is_available() and not args.dry_run) else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({platform.processor() or platform.machine()})"
    cases = json.loads(args.cases)
    deadline = args.deadline
    # Seconds per flop of each impl's last timed case, to skip cases that cannot finish in time.
    rate: dict[str, float] = {}
    with open(args.jsonl, "a") as f:
        def emit(rec: dict[str, Any]) -> None:
            rec["device_name"] = name
            f.write(json.dumps(rec) + "\n")
            f.flush()
            print(json.dumps(rec), flush=True)

        for n, k, d, q in cases:
            for dtype in DTYPES:
                for impl in IMPLS:
                    base = {"impl": impl, "N": n, "K": k, "D": d, "Q": q, "dtype": dtype}
                    flops = 2.0 * n * k * d * q
                    left = deadline - time.time()
                    # first call + check + memory run + >= 3 timed rounds ~ 6 calls (+ compile).
                    need = 6 * flops * rate.get(impl, 0.0)
                    if left < 3 or need > left:
                        emit({**base, "status": "skipped", "reason": f"time budget ({left:.0f} s left, ~{need:.0f} s needed)"})
                        continue
                    try:
                        rec = run_case(impl, n, k, d, q, dtype, device, min_rounds=1 if args.dry_run else 3,
                                       target_s=0.0 if args.dry_run else 1.0)
                    except Unavailable as e:
                        emit({**base, "status": "unavailable", "reason": str(e)})
                        continue
                    except Exception as e:  # OOM or a kernel failure: record it and go on
                        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        if device == "cuda":
                            torch.cuda.empty_cache()
                        emit({**base, "status": "error", "reason": msg})
                        continue
                    rate[impl] = rec["median_ms"] / 1e3 / flops
                    rec["status"] = "ok"
                    add_peak_shares(rec, name)
                    emit(rec)
                    if device == "cuda":
                        torch.cuda.empty_cache()
    return 0


# ----------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------


class Checker:
    """Runs the steps as subprocesses under one deadline and keeps the write-up current."""

    def __init__(self, out: Path, budget: float, dry_run: bool, examples: int):
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget
        self.budget = budget
        self.dry = dry_run
        self.examples = examples
        self.steps: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {"mode": "dry-run (CPU)" if dry_run else "gpu", "budget_s": budget,
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        self.jsonl = out / "bench.jsonl"
        self.jsonl.write_text("")
        self.current: subprocess.Popen | None = None
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["RVQFAST_HYPOTHESIS_EXAMPLES"] = str(examples)
        if dry_run:
            self.env["TRITON_INTERPRET"] = "1"
            self.env.setdefault("OMP_NUM_THREADS", "1")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, cmd: list[str], cap: float, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run one step with timeout min(cap, what the budget leaves); log to OUT/logs/."""
        log = self.logs / f"{len(self.steps) + 1:02d}-{name}.log"
        rec: dict[str, Any] = {"name": name, "cmd": shlex.join(cmd), "log": str(log.relative_to(self.out))}
        left = self.remaining() - RESERVE_S
        if left < 3:
            rec.update(status="skipped", seconds=0.0, note="time budget spent")
            log.write_text(f"skipped: time budget spent\n$ {rec['cmd']}\n")
            return self._done(rec)
        timeout = min(cap, left)
        t = time.monotonic()
        with open(log, "w") as f:
            f.write(f"$ {rec['cmd']}\n(timeout {timeout:.0f} s)\n")
            f.flush()
            self.current = subprocess.Popen(cmd, cwd=REPO, env=env or self.env, stdout=f, stderr=subprocess.STDOUT,
                                            start_new_session=True)
            try:
                rc = self.current.wait(timeout=timeout)
                rec.update(status="ok" if rc == 0 else "fail", rc=rc)
            except subprocess.TimeoutExpired:
                self.kill_current()
                rec.update(status="timeout", rc=None, note=f"stopped after {timeout:.0f} s")
            finally:
                self.current = None
        rec["seconds"] = round(time.monotonic() - t, 1)
        return self._done(rec)

    def kill_current(self) -> None:
        p = self.current
        if p is None or p.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def skip(self, name: str, note: str) -> dict[str, Any]:
        return self._done({"name": name, "status": "skipped", "seconds": 0.0, "note": note})

    def _done(self, rec: dict[str, Any]) -> dict[str, Any]:
        self.steps.append(rec)
        tail = ""
        if "log" in rec:
            lines = (self.out / rec["log"]).read_text(errors="replace").splitlines()
            tail = "\n".join("    " + ln for ln in lines[-25:])
        print(f"[{time.monotonic() - self.t0:6.1f} s] {rec['name']}: {rec['status']} ({rec.get('seconds', 0)} s)"
              + (f" - {rec['note']}" if rec.get("note") else ""), flush=True)
        if tail and rec["status"] != "skipped":
            print(tail, flush=True)
        self.write()
        return rec

    def log_text(self, rec: dict[str, Any]) -> str:
        return (self.out / rec["log"]).read_text(errors="replace") if "log" in rec else ""

    # ---- write-up -----------------------------------------------------------------------------

    def bench_rows(self) -> list[dict[str, Any]]:
        rows = []
        for line in self.jsonl.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a worker killed mid-line
                pass
        return rows

    def write(self) -> None:
        self.info["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        bench = self.bench_rows()
        doc = {"info": self.info, "steps": self.steps, "bench": bench}
        _atomic_write(self.out / "gpu_check.json", json.dumps(doc, indent=1) + "\n")
        _atomic_write(self.out / "gpu_check.md", render_markdown(self.info, self.steps, bench))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_markdown(info: dict[str, Any], steps: list[dict[str, Any]], bench: list[dict[str, Any]]) -> str:
    dev = info.get("device_name", "unknown device")
    out = [f"# rvqfast GPU check: {dev}", ""]
    for key in ("warning", "interrupted", "mode", "device_name", "capability", "gpu_mem_gib", "nvidia_smi", "torch",
                "cuda", "triton", "python", "vector_quantize_pytorch", "ninja", "started", "budget_s", "elapsed_s",
                "available_backends", "backend_load_errors", "harness", "harness_fallback_rows", "tests",
                "train_seconds"):
        if key in info:
            out.append(f"- **{key}**: {_fmt(info[key])}")
    out += ["", "## Steps", "", "| step | status | seconds | note | log |", "|---|---|---|---|---|"]
    for s in steps:
        out.append(f"| {s['name']} | {s['status']} | {s.get('seconds', '')} | {s.get('note', '')} | {s.get('log', '')} |")
    ok = [r for r in bench if r.get("status") == "ok"]
    if ok:
        # Speed ratios within one run: every impl against the reference and vector-quantize-pytorch.
        base: dict[tuple, dict[str, float]] = {}
        for r in ok:
            base.setdefault((r["N"], r["K"], r["D"], r["dtype"]), {})[r["impl"]] = r["median_ms"]
        out += ["", f"## RVQ encode, Q={ok[0]['Q']} ({dev})", "",
                "Median of timed rounds after a warm-up; TFLOP/s = 2·N·K·D·Q / time; `% peak` against the dense "
                "peak of the arithmetic the search uses (`peak`); memory = peak allocation above the inputs "
                "vs 4·(N·D + Q·K·D) bytes; `check` = every stage's index nearest to its residual (fp64, up to "
                "near-ties) on the first rows; `same` = share of rows whose indices equal the reference's; "
                "`rescanned` = share of row-stages a certified search rescanned exactly.", "",
                "| N | K | D | dtype | impl | ms | TFLOP/s | % peak | peak | mem GiB | mem / model | check | same "
                "| rescanned | × reference | × vqp |", "|" + "---|" * 16]
        for r in ok:
            b = base[(r["N"], r["K"], r["D"], r["dtype"])]
            ref = b.get("torch-reference")
            vq = b.get("vector-quantize-pytorch")
            out.append("| " + " | ".join(_fmt(v) for v in (
                r["N"], r["K"], r["D"], r["dtype"], r["impl"], r["median_ms"], r["tflops"], r.get("pct_of_peak"),
                r.get("peak_kind"), r.get("peak_mem_gib"), r.get("mem_ratio"), r["check"], r["same_as_reference"],
                r.get("fallback_share"), round(ref / r["median_ms"], 2) if ref else None, round(vq / r["median_ms"], 2) if vq else None)) + " |")
    other = [r for r in bench if r.get("status") != "ok"]
    if other:
        out += ["", "## Cases not timed", "", "| N | K | D | dtype | impl | status | reason |", "|---|---|---|---|---|---|---|"]
        for r in other:
            out.append(f"| {r['N']} | {r['K']} | {r['D']} | {r['dtype']} | {r['impl']} | {r['status']} | {r.get('reason', '')} |")
    return "\n".join(out) + "\n"


PROBE = r"""
import json, platform, sys
info = {"python": platform.python_version()}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
        info["capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
        info["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
except Exception as e:
    info["torch_error"] = repr(e)
import shutil
info["ninja"] = shutil.which("ninja")
info["nvcc"] = shutil.which("nvcc")
for mod in ("triton", "vector_quantize_pytorch", "pytest", "hypothesis", "numpy"):
    try:
        m = __import__(mod)
        info[mod] = getattr(m, "__version__", "installed")
    except Exception as e:
        info[mod] = None
print("PROBE " + json.dumps(info))
"""

BACKENDS = r"""
import json, rvqfast
from rvqfast.backends import backend_load_errors
print("available_backends:", rvqfast.available_backends())
errs = backend_load_errors()
for k, v in errs.items():
    print(f"load error [{k}]: {v}")
print("BACKENDS " + json.dumps({"available": rvqfast.available_backends(), "errors": errs}))
"""


def _marker(text: str, tag: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    return None


def _last_line(text: str, pred: Callable[[str], bool]) -> str | None:
    return next((ln.strip() for ln in reversed(text.splitlines()) if pred(ln)), None)


def _nvcc() -> str | None:
    import shutil

    for cand in (shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
                 "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (default: $OUT, else ./gpu_check_out)")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for everything (default 450)")
    p.add_argument("--dry-run", action="store_true", help="CPU only: interpreter, tiny grid (tests the script)")
    p.add_argument("--build", choices=["inplace", "pip", "none"], default="inplace",
                   help="how to build the extensions (default: setup.py build_ext --inplace)")
    p.add_argument("--examples", type=int, default=10, help="hypothesis examples per property test (default 10)")
    p.add_argument("--skip", default="", help="comma-separated steps to skip (e.g. train,bench-grid)")
    # Internal: the benchmark worker (run as a subprocess of the driver).
    p.add_argument("--bench-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cases", help=argparse.SUPPRESS)
    p.add_argument("--jsonl", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.bench_worker:
        return bench_worker(args)
    if args.budget <= 0:
        p.error("--budget must be > 0 seconds")

    out = Path(args.out or os.environ.get("OUT") or "gpu_check_out").resolve()
    ck = Checker(out, args.budget, args.dry_run, args.examples)
    skip = set(filter(None, args.skip.split(",")))

    def on_signal(signum, frame):  # the outer limit is near: stop the child, keep what we have
        ck.kill_current()
        ck.info["interrupted"] = signal.Signals(signum).name
        ck.write()
        sys.exit(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    py = sys.executable
    print(f"rvqfast gpu_check: out={out} budget={args.budget:.0f} s{' (dry run)' if args.dry_run else ''}", flush=True)

    # 1. probe
    rec = ck.run("probe", [py, "-c", PROBE], 60)
    probe = _marker(ck.log_text(rec), "PROBE") or {}
    ck.info.update({k: v for k, v in probe.items() if k in (
        "python", "torch", "cuda", "triton", "device_name", "capability", "gpu_mem_gib", "vector_quantize_pytorch",
        "pytest", "hypothesis", "ninja")})
    if args.dry_run:
        ck.info["device_name"] = f"CPU dry run ({platform.processor() or platform.machine()})"
    elif not probe.get("cuda_available"):
        ck.info["warning"] = "torch sees no CUDA device: the GPU steps will fail or skip (use --dry-run on CPU)"
    try:
        ck.info["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    ck.write()

    # 2. build
    benv = dict(ck.env)
    benv.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    if probe.get("capability") and "TORCH_CUDA_ARCH_LIST" not in benv:
        benv["TORCH_CUDA_ARCH_LIST"] = probe["capability"]  # this GPU only: halves the nvcc time
    if "build" in skip or args.build == "none":
        ck.skip("build", "--build none / --skip build")
    elif args.dry_run:
        # Evaluates setup.py (extension list, torch / CUDA detection) without compiling: a real
        # CPU build takes minutes on a CI machine.
        ck.run("build", [py, "setup.py", "--name"], 60, benv)
    elif args.build == "pip":
        ck.run("build", [py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", "."], 300, benv)
    else:
        # -j builds the CPU and CUDA extensions side by side when ninja is missing.
        ck.run("build", [py, "setup.py", "build_ext", "--inplace", "-j", benv["MAX_JOBS"]], 300, benv)

    # 3. backends
    rec = ck.run("backends", [py, "-c", BACKENDS], 90)
    b = _marker(ck.log_text(rec), "BACKENDS")
    if b:
        ck.info["available_backends"] = b["available"]
        ck.info["backend_load_errors"] = b["errors"]
        ck.write()

    # 4. the standalone CUDA harness
    nvcc = _nvcc()
    exe = out / "check_kernels"
    srcs = ["kernels/cuda/test/check_kernels.cu", "kernels/cuda/search.cu", "kernels/cuda/codes.cu"]
    if "harness" in skip:
        ck.skip("harness-build", "--skip harness")
        ck.skip("harness-run", "--skip harness")
    elif nvcc is None:
        ck.skip("harness-build", "nvcc not found")
        ck.skip("harness-run", "nvcc not found")
    else:
        # Dry run: nvcc --dryrun checks the command line only; tests/test_cuda_kernels.py compiles
        # the same sources (a compile takes ~10-20 s on a CI machine).
        arch = ["-arch=sm_80", "--dryrun"] if args.dry_run else ["-arch=native"]
        rec = ck.run("harness-build", [nvcc, "-O2", "-std=c++17", "-Ikernels", *arch, *srcs, "-o", str(exe)], 180)
        if args.dry_run:
            ck.skip("harness-run", "dry run: no GPU (compiled only)")
        elif rec["status"] == "ok":
            rec = ck.run("harness-run", [str(exe)], 120)
            text = ck.log_text(rec)
            ck.info["harness"] = _last_line(text, lambda ln: "checks passed" in ln or "FAILED" in ln) or rec["status"]
            ck.info["harness_fallback_rows"] = [ln.strip() for ln in text.splitlines() if "fallback rows" in ln]
            ck.write()
        else:
            ck.skip("harness-run", f"harness-build {rec['status']}")

    # 5. tests with CUDA tensors (interpreter + CPU tensors in the dry run)
    if "tests" in skip:
        ck.skip("tests", "--skip tests")
    elif not probe.get("pytest"):
        ck.skip("tests", "pytest is not installed")
    else:
        files = ["tests/test_ops_triton.py", "tests/test_cuda_kernels.py"]
        # Dry run: a few quick interpreter tests. On the GPU: all of them, minus the nvcc compile
        # checks (the harness step has just built the same sources for this GPU).
        sel = ["-k", "ties or far_from_origin or cuda_backend" if args.dry_run else "not compiles_for and not harness_links"]
        # One fixed Triton tiling: the random test shapes would autotune on every example.
        tenv = dict(ck.env, RVQFAST_TRITON_FIXED_CONFIG="1")
        rec = ck.run("tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files, *sel,
                               f"--junitxml={out / 'tests.xml'}"], 60 if args.dry_run else 200, tenv)
        ck.info["tests"] = _last_line(ck.log_text(rec), lambda ln: " in " in ln and ("passed" in ln or "failed" in ln
                                                                                     or "error" in ln or "skipped" in ln))
        ck.write()

    q = DRY_Q if args.dry_run else Q
    grid = DRY_GRID if args.dry_run else GRID
    target = grid[-1] if args.dry_run else TARGET

    def bench(name: str, cases: list[tuple[int, int, int]], cap: float) -> None:
        if name in skip or "bench" in skip:
            ck.skip(name, f"--skip {name}")
            return
        deadline = time.time() + min(cap, ck.remaining() - RESERVE_S) - 5  # the worker's own stop
        cmd = [py, str(Path(__file__).resolve()), "--bench-worker", "--cases",
               json.dumps([[n, k, d, q] for n, k, d in cases]), "--jsonl", str(ck.jsonl), "--deadline",
               f"{deadline:.1f}"] + (["--dry-run"] if args.dry_run else [])
        ck.run(name, cmd, cap)

    # 6. the target case first, so it is measured whatever happens later
    bench("bench-target", [target], 60 if args.dry_run else 150)

    # 7. training, default preset
    if "train" in skip:
        ck.skip("train", "--skip train")
    else:
        tdir = out / "train"
        cmd = [py, "-m", "rvqfast.train", "--device", "cpu" if args.dry_run else "cuda", "--out", str(tdir),
               "--no-gif", "--no-progress"]
        if args.dry_run:
            cmd += ["--preset", "quick", "--steps", "2", "--batch-size", "4", "--val-every", "0", "--ckpt-every", "0",
                    "--num-threads", "1"]
        rec = ck.run("train", cmd, 60 if args.dry_run else 170)
        if rec["status"] == "ok":
            ck.info["train_seconds"] = rec["seconds"]
            ck.write()

    # 8. the rest of the grid, cheapest first, until the budget runs out
    rest = sorted((c for c in grid if c != target), key=lambda c: c[0] * c[1] * c[2])
    bench("bench-grid", rest, 1e9)

    ck.info["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    ck.write()
    failed = [s["name"] for s in ck.steps if s["status"] in ("fail", "timeout")]
    bad = [r for r in ck.bench_rows() if r.get("status") == "error" or r.get("check") == "FAIL"]
    print(f"done in {time.monotonic() - ck.t0:.0f} s: {out / 'gpu_check.md'}"
          + (f"; failed steps: {failed}" if failed else "") + (f"; {len(bad)} bench rows failed" if bad else ""),
          flush=True)
    return 1 if failed or bad else 0


if __name__ == "__main__":
    sys.exit(main())
