"""GPU RVQ-encode benchmark: rvqfast cuda / triton vs the torch reference vs vector-quantize-pytorch.

Grid (issue 8): N in {4096, 65536, 1048576}, K in {512, 4096}, D in {64, 512}, Q = 6, inputs fp32
and bf16. Each case first checks correctness on a row subset (every stage's index must be a
nearest code of its residual up to an fp32 near-tie; vector-quantize-pytorch must agree with the
reference on >= 99% of stage-0 indices), then times one full encode. ``extra_info`` records the
device, achieved TFLOP/s (2·N·K·D·Q distance-GEMM flops / mean time), the share of the device's
dense TF32 peak, and the peak GPU memory above the inputs. Skipped without CUDA.

Run: ``pytest benchmarks/test_bench_gpu.py`` (``-k "65536 and 512-512"`` for the target case).
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (no torch.cuda device here)")

Q = 6
GRID = [(n, k, d) for n in (4096, 65536, 1048576) for k in (512, 4096) for d in (64, 512)]
IMPLS = ["rvqfast-cuda", "rvqfast-triton", "torch-reference", "vector-quantize-pytorch"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CHECK_ROWS = 1024
# Dense (no sparsity) peak TFLOP/s: (TF32 tensor core, FP32 CUDA core), from NVIDIA's datasheets.
PEAKS = {"H100 PCIe": (378.0, 51.2), "H100 NVL": (417.5, 60.0), "H100": (494.7, 66.9), "H200": (494.7, 66.9),
         "A100": (156.0, 19.5)}


def _peak(name: str) -> tuple[float, float] | None:
    for key, val in PEAKS.items():  # most specific names first
        if key in name:
            return val
    return None


def _encoder(impl: str, codebooks: torch.Tensor):
    from rvqfast import ops
    from rvqfast.backends import available_backends, backend_load_errors

    if impl.startswith("rvqfast-"):
        backend = impl.split("-", 1)[1]
        if backend not in available_backends():
            pytest.skip(f"backend {backend!r} unavailable: {backend_load_errors().get(backend)}")
        return lambda x: ops.rvq_encode(x, codebooks, backend=backend, precision="exact")
    if impl == "torch-reference":  # chunked addmm + argmin, fp32 (TF32 off by default)
        return lambda x: ops.rvq_encode(x, codebooks, backend="reference", precision="exact")
    vqp = pytest.importorskip("vector_quantize_pytorch")
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


def _check(impl: str, x: torch.Tensor, codebooks: torch.Tensor, idx: torch.Tensor, ref_idx: torch.Tensor | None):
    rows = x[:CHECK_ROWS].double()
    idx = idx[:CHECK_ROWS]
    if impl == "vector-quantize-pytorch":
        agree = (idx[:, 0] == ref_idx[:CHECK_ROWS, 0]).double().mean().item()
        assert agree >= 0.99, f"vector-quantize-pytorch agrees with the reference on only {agree:.2%} of rows"
        return
    residual = rows.clone()
    for s in range(codebooks.shape[0]):
        cb = codebooks[s].double()
        d = (residual * residual).sum(1, keepdim=True) - 2 * residual @ cb.T + (cb * cb).sum(1)
        best = d.min(1).values
        got = d.gather(1, idx[:, s : s + 1]).squeeze(1)
        slack = 1e-4 * (1 + best.abs()) + 1e-5 * (residual.pow(2).sum(1) + 1)
        bad = int((got > best + slack).sum())
        assert bad == 0, f"{impl}: {bad} rows of stage {s} are not nearest"
        residual = residual - cb[idx[:, s]]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n,k,d", GRID, ids=[f"{n}-{k}-{d}" for n, k, d in GRID])
def test_bench_rvq_encode(benchmark, n, k, d, impl, dtype):
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    scales = (0.5 ** torch.arange(Q, device=dev, dtype=torch.float32)).view(Q, 1, 1)
    codebooks = (torch.randn(Q, k, d, device=dev, generator=g) * scales).to(DTYPES[dtype])
    try:
        x = torch.randn(n, d, device=dev, generator=g).to(DTYPES[dtype])
        encode = _encoder(impl, codebooks)
        idx, _ = encode(x)  # warm-up (Triton autotune / compile) + correctness
        torch.cuda.synchronize()
        ref_idx = None
        if impl == "vector-quantize-pytorch":
            from rvqfast import ops

            ref_idx, _ = ops.rvq_encode(x[:CHECK_ROWS], codebooks, backend="reference")
        _check(impl, x.float(), codebooks.float(), idx, ref_idx)
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

    name = torch.cuda.get_device_name(dev)
    tflops = 2.0 * n * k * d * Q / benchmark.stats.stats.mean / 1e12
    info = benchmark.extra_info
    info.update(device=name, impl=impl, dtype=dtype, N=n, K=k, D=d, Q=Q, tflops=round(tflops, 2),
                peak_mem_gib=round(peak / 2**30, 3),
                mem_model_gib=round(4 * (n * d + Q * k * d) / 2**30, 3))
    peaks = _peak(name)
    if peaks:
        info["pct_of_tf32_peak"] = round(100 * tflops / peaks[0], 1)
        info["pct_of_fp32_peak"] = round(100 * tflops / peaks[1], 1)
