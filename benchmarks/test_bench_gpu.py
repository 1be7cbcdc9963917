"""GPU RVQ-encode benchmark: rvqfast cuda / triton vs the torch reference vs vector-quantize-pytorch.

Grid (issue 8): N in {4096, 65536, 1048576}, K in {512, 4096}, D in {64, 512}, Q = 6, inputs fp32
and bf16, every implementation of ``scripts/gpu_check.py`` (which runs the same cases within a
time budget and shares the case code below: inputs, encoders, the correctness check, peaks).
Each case first checks correctness on a row subset (every stage's index must be a nearest code of
its residual up to an fp32 near-tie; vector-quantize-pytorch must agree with the reference on
>= 99% of stage-0 indices), then times one full encode. ``extra_info`` records the device,
achieved TFLOP/s (2·N·K·D·Q distance-GEMM flops / mean time), the share of the device's dense
peak for the arithmetic the search uses, and the peak GPU memory above the inputs. Skipped
without CUDA.

Run: ``pytest benchmarks/test_bench_gpu.py`` (``-k "65536-512-512"`` for the target case).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (no torch.cuda device here)")

_spec = importlib.util.spec_from_file_location(
    "rvqfast_gpu_check", Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

Q = gpu_check.Q
GRID = gpu_check.GRID


@pytest.mark.parametrize("dtype", gpu_check.DTYPES)
@pytest.mark.parametrize("impl", gpu_check.IMPLS)
@pytest.mark.parametrize("n,k,d", GRID, ids=[f"{n}-{k}-{d}" for n, k, d in GRID])
def test_bench_rvq_encode(benchmark, n, k, d, impl, dtype):
    x, codebooks = gpu_check.make_inputs(n, k, d, Q, dtype, "cuda")
    try:
        encode = gpu_check.make_encoder(impl, codebooks)
    except gpu_check.Unavailable as e:
        pytest.skip(str(e))
    try:
        idx, _ = encode(x)  # warm-up (Triton autotune / compile) + correctness
        torch.cuda.synchronize()
        bad = gpu_check.check_indices(x.float(), codebooks.float(), idx)
        if impl == "vector-quantize-pytorch":
            from rvqfast import ops

            ref, _ = ops.rvq_encode(x[: gpu_check.CHECK_ROWS], codebooks, backend="reference")
            agree = (idx[: gpu_check.CHECK_ROWS, 0] == ref[:, 0]).double().mean().item()
            assert agree >= 0.99, f"vector-quantize-pytorch agrees with the reference on only {agree:.2%} of rows"
        elif impl not in gpu_check.APPROXIMATE:
            assert bad == 0, f"{impl}: {bad} rows have a stage whose index is not nearest"
        del idx

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        encode(x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base

        def timed():
            out = encode(x)
            torch.cuda.synchronize()
            return out

        rounds = 3 if n * k * d >= 2**34 else 10
        benchmark.pedantic(timed, rounds=rounds, warmup_rounds=1, iterations=1)
    except torch.cuda.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        pytest.skip(f"{impl} out of GPU memory at N={n} K={k} D={d} {dtype}: {str(e).splitlines()[0]}")

    name = torch.cuda.get_device_name(0)
    rec = {"impl": impl, "tflops": round(2.0 * n * k * d * Q / benchmark.stats.stats.mean / 1e12, 2)}
    gpu_check.add_peak_shares(rec, name)
    benchmark.extra_info.update(
        device=name, dtype=dtype, N=n, K=k, D=d, Q=Q, peak_mem_gib=round(peak / 2**30, 3),
        mem_model_gib=round(gpu_check.mem_model_bytes(n, k, d, Q) / 2**30, 3), **rec)
