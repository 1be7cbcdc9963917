"""The CUDA kernels: compile checks everywhere, and the ``cuda`` backend against the reference on a GPU.

Compile checks: every kernels/cuda/*.cu must build with nvcc for sm_80 and sm_90a (plus the
standalone harness in kernels/cuda/test/), so a syntax or template error fails CI without a GPU.
Plain translation units, no torch headers: only nvcc is needed.

``test_cuda_backend_*``: the torch-level ``cuda`` backend (rvqfast._cuda) against the reference on
CUDA tensors, for every precision (``exact``: TF32 screen, ``certified``: BF16 screen, both
certified; ``bf16``: approximate). They need a GPU and the built extension, so they run on the GPU
machine (scripts/gpu_check.py) and are skipped elsewhere.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "kernels"
SOURCES = sorted((KERNELS / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc") or next((str(p) for p in [Path("/usr/local/cuda/bin/nvcc")] if p.exists()), None)
ARCHS = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90a,code=sm_90a"]

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (install a CUDA toolkit to compile-check)")


def _nvcc(args: list[str], cwd: Path) -> None:
    proc = subprocess.run([NVCC, "-std=c++17", "-O1", f"-I{KERNELS}", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


@needs_nvcc
def test_there_are_kernels():
    names = {p.name for p in SOURCES}
    assert {"search.cu", "codes.cu"} <= names, names


@needs_nvcc
@pytest.mark.parametrize("src", SOURCES, ids=[p.name for p in SOURCES])
def test_kernel_compiles_for_sm80_and_sm90a(src: Path, tmp_path: Path):
    _nvcc(["-c", *ARCHS, "-Werror=all-warnings", str(src), "-o", str(tmp_path / (src.stem + ".o"))], tmp_path)
    assert (tmp_path / (src.stem + ".o")).stat().st_size > 0


@needs_nvcc
def test_harness_links(tmp_path: Path):
    # The launchers' declarations, definitions and the harness agree (a link error otherwise).
    harness = KERNELS / "cuda" / "test" / "check_kernels.cu"
    _nvcc([ARCHS[1], str(harness), *map(str, SOURCES), "-o", str(tmp_path / "check_kernels")], tmp_path)
    assert (tmp_path / "check_kernels").exists()


# ---- the cuda backend on a GPU ------------------------------------------------------------------


def _cuda_backend_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    from rvqfast.backends import available_backends, backend_load_errors

    if "cuda" not in available_backends():
        return f"cuda backend unavailable: {backend_load_errors().get('cuda')}"
    return None


_REASON = _cuda_backend_reason()
on_gpu = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
CERTIFIED = ["exact", "certified"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DIMS = [1, 3, 7, 16, 33, 130, 512, 1030]


def _data(seed: int, n: int, k: int, d: int, offset: float, dtype: torch.dtype, dup: bool):
    g = torch.Generator().manual_seed(seed)
    cb = torch.randn(k, d, generator=g) + offset
    if dup:  # duplicated codes and rows on codes: exact ties everywhere
        cb = torch.cat([cb, cb.flip(0)])
        x = cb[torch.randint(0, cb.shape[0], (n,), generator=g)].clone()
    else:
        x = torch.randn(n, d, generator=g) + offset
    return x.to(dtype).cuda(), cb.to(dtype).cuda()


@on_gpu
@settings(max_examples=min(50, int(os.environ.get("RVQFAST_HYPOTHESIS_EXAMPLES", "30"))), deadline=None)
@given(st.integers(1, 300), st.integers(1, 600), st.sampled_from(DIMS), st.sampled_from([0.0, 1000.0]),
       st.sampled_from(DTYPES), st.booleans(), st.sampled_from(CERTIFIED), st.integers(0, 2**31 - 1))
def test_cuda_backend_nearest_code_matches_reference(n, k, d, offset, dtype, dup, precision, seed):
    from oracle import assert_same_up_to_ties
    from rvqfast import ops

    x, cb = _data(seed, n, k, d, offset, dtype, dup)
    idx, d2 = ops.nearest_code(x, cb, backend="cuda", precision=precision)
    ref, _ = ops.nearest_code(x, cb, backend="reference")
    assert idx.dtype == torch.int64 and d2.dtype == torch.float32 and idx.shape == (n,)
    assert_same_up_to_ties(x.cpu(), cb.cpu(), idx.cpu(), ref.cpu())
    exact = (x.cpu().double() - cb.cpu().double()[idx.cpu()]).pow(2).sum(1)
    torch.testing.assert_close(d2.cpu().double(), exact, rtol=1e-5, atol=1e-4)


@on_gpu
@pytest.mark.parametrize("precision", CERTIFIED)
def test_cuda_backend_exact_ties_go_to_lowest_index(precision):
    from rvqfast import ops

    base = torch.randn(70, 9)
    cb = torch.cat([base, base, base[:8]]).cuda()  # ties straddle the 64-code tiles
    x = cb[[3, 73, 143, 0, 69]].clone()
    idx, d2 = ops.nearest_code(x, cb, backend="cuda", precision=precision)
    assert idx.tolist() == [3, 3, 3, 0, 69]
    assert d2.abs().max().item() == 0.0


@on_gpu
@settings(max_examples=min(30, int(os.environ.get("RVQFAST_HYPOTHESIS_EXAMPLES", "30"))), deadline=None)
@given(st.integers(1, 200), st.integers(1, 6), st.integers(1, 300), st.sampled_from(DIMS[:-1]),
       st.sampled_from(DTYPES), st.sampled_from(CERTIFIED), st.integers(0, 2**31 - 1))
def test_cuda_backend_rvq_encode_matches_reference(n, q, k, d, dtype, precision, seed):
    from oracle import assert_nearest
    from rvqfast import ops

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype).cuda()
    cbs = (torch.randn(q, k, d, generator=g) / (1 + torch.arange(q)).view(q, 1, 1)).to(dtype).cuda()
    idx, quant = ops.rvq_encode(x, cbs, backend="cuda", precision=precision)
    assert idx.shape == (n, q) and quant.dtype == torch.float32
    residual = x.float().cpu()
    for s in range(q):
        assert_nearest(residual, cbs[s].float().cpu(), idx[:, s].cpu())
        residual = residual - cbs[s].float().cpu()[idx[:, s].cpu()]
    idx_ref, quant_ref = ops.rvq_encode(x, cbs, backend="reference")
    same = (idx == idx_ref).all(1)
    assert torch.equal(quant[same], quant_ref[same])  # same codes, same order: the same fp32 sums


@on_gpu
@pytest.mark.parametrize("precision", CERTIFIED + ["bf16"])
def test_cuda_backend_target_shape(precision):
    # A benchmark-sized case: identical to the reference up to near-ties on every row.
    from oracle import assert_same_up_to_ties
    from rvqfast import ops

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4096, 512, device="cuda", generator=g)
    cbs = torch.randn(6, 512, 512, device="cuda", generator=g) * (0.5 ** torch.arange(6, device="cuda")).view(6, 1, 1)
    idx, _ = ops.rvq_encode(x, cbs, backend="cuda", precision=precision)
    ref, _ = ops.rvq_encode(x, cbs, backend="reference")
    if precision == "bf16":  # approximate: nothing is promised, but it is close
        assert (idx == ref).all(1).double().mean().item() >= 0.9
    else:
        assert_same_up_to_ties(x.cpu(), cbs[0].cpu(), idx[:, 0].cpu(), ref[:, 0].cpu())
        assert (idx == ref).all(1).double().mean().item() >= 0.99


@on_gpu
def test_cuda_backend_decode_and_ema_match_reference():
    from rvqfast import ops

    g = torch.Generator().manual_seed(5)
    cbs = torch.randn(4, 37, 130, generator=g).cuda()
    idx = torch.randint(-1, 37, (301, 4), generator=g).cuda()
    assert torch.equal(ops.rvq_decode(idx, cbs, backend="cuda"), ops.rvq_decode(idx, cbs, backend="reference"))
    x = torch.randn(301, 130, generator=g).cuda()
    counts, sums = ops.ema_stats(x, idx[:, 0], 37, backend="cuda")
    c_ref, s_ref = ops.ema_stats(x, idx[:, 0], 37, backend="reference")
    assert torch.equal(counts, c_ref)
    torch.testing.assert_close(sums, s_ref, rtol=1e-5, atol=1e-5)
