"""The Triton kernels against the reference backend (CUDA tensors on a GPU, else the interpreter).

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1``, which
``tests/conftest.py`` sets before triton is first imported.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import assert_nearest, sqdist64

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
ON_GPU = torch.cuda.is_available() and not INTERPRET
RUN_HERE = INTERPRET or ON_GPU
DEVICE = "cuda" if ON_GPU else "cpu"
REPO = Path(__file__).resolve().parents[1]

here = pytest.mark.skipif(not RUN_HERE, reason="needs a GPU or TRITON_INTERPRET=1 (tests/conftest.py sets it)")
# The interpreter executes every program instance in Python: keep shapes tiny, examples few.
# RVQFAST_HYPOTHESIS_EXAMPLES (tests/conftest.py) lowers the count further (scripts/gpu_check.py).
few = settings(max_examples=min(25 if INTERPRET else 50, int(os.environ.get("RVQFAST_HYPOTHESIS_EXAMPLES", "50"))),
               deadline=None)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DIMS = [1, 3, 7, 16, 33, 130]


def _ops():
    from rvqfast import ops
    from rvqfast.backends import available_backends, backend_load_errors

    assert "triton" in available_backends(), backend_load_errors()
    return ops


def _data(seed: int, n: int, k: int, d: int, offset: float, dtype: torch.dtype, dup: bool):
    g = torch.Generator().manual_seed(seed)
    cb = torch.randn(k, d, generator=g) + offset
    if dup:  # duplicated codes, and rows sitting exactly on codes: exact ties everywhere
        cb = torch.cat([cb, cb.flip(0)])
        x = cb[torch.randint(0, cb.shape[0], (n,), generator=g)].clone()
    else:
        x = torch.randn(n, d, generator=g) + offset
    return x.to(dtype).to(DEVICE), cb.to(dtype).to(DEVICE)


@here
@few
@given(
    st.integers(1, 40), st.integers(1, 40), st.sampled_from(DIMS), st.sampled_from([0.0, 1000.0]),
    st.sampled_from(DTYPES), st.booleans(), st.sampled_from(["exact", "certified"]), st.integers(0, 2**31 - 1),
)
def test_nearest_code_matches_reference(n, k, d, offset, dtype, dup, precision, seed):
    ops = _ops()
    x, cb = _data(seed, n, k, d, offset, dtype, dup)
    idx, d2 = ops.nearest_code(x, cb, backend="triton", precision=precision)
    idx_ref, _ = ops.nearest_code(x, cb, backend="reference")
    assert idx.dtype == torch.int64 and d2.dtype == torch.float32 and idx.shape == (n,)
    diff = idx != idx_ref
    if diff.any():
        assert_nearest(x[diff].cpu(), cb.cpu(), idx[diff].cpu())
    # The winner's distance is recomputed directly, so it is accurate even 1000 from the origin.
    exact = sqdist64(x.cpu(), cb.cpu()).gather(1, idx.cpu().view(-1, 1)).squeeze(1)
    torch.testing.assert_close(d2.cpu().double(), exact, rtol=1e-5, atol=1e-4)


@here
@pytest.mark.parametrize("precision", ["exact", "certified"])
def test_exact_ties_resolve_to_lowest_index(precision):
    ops = _ops()
    # 40 codes, so ties straddle the interpreter's 16-wide code tiles (index 3 vs 19 vs 35).
    base = torch.randn(16, 5)
    cb = torch.cat([base, base, base[:8]]).to(DEVICE)
    x = cb[[3, 19, 35, 0, 15]].clone()
    idx, d2 = ops.nearest_code(x, cb, backend="triton", precision=precision)
    assert idx.tolist() == [3, 3, 3, 0, 15]
    assert d2.abs().max().item() == 0.0


@here
@pytest.mark.parametrize("precision", ["exact", "certified"])
def test_far_from_origin_is_exact(precision):
    ops = _ops()
    g = torch.Generator().manual_seed(1)
    cb = 1e4 + 1e-2 * torch.randn(40, 8, generator=g)
    x = cb[torch.randint(0, 40, (50,), generator=g)] + 1e-3 * torch.randn(50, 8, generator=g)
    idx, _ = ops.nearest_code(x.to(DEVICE), cb.to(DEVICE), backend="triton", precision=precision)
    assert_nearest(x, cb, idx.cpu(), rtol=1e-6)


def _check_stagewise(x, cbs, idx, quant, rtol=1e-4):
    residual = x.float().cpu().clone()
    cbs = cbs.float().cpu()
    for s in range(cbs.shape[0]):
        assert_nearest(residual, cbs[s], idx[:, s].cpu(), rtol)
        residual = residual - cbs[s][idx[:, s].cpu()]
    torch.testing.assert_close(quant.cpu(), x.float().cpu() - residual, rtol=1e-5, atol=1e-4)


@here
@few
@given(
    st.integers(1, 35), st.integers(1, 4), st.integers(1, 34), st.sampled_from(DIMS),
    st.sampled_from(DTYPES), st.sampled_from(["exact", "certified"]), st.integers(0, 2**31 - 1),
)
def test_fused_rvq_encode(n, q, k, d, dtype, precision, seed):
    ops = _ops()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype).to(DEVICE)
    cbs = (torch.randn(q, k, d, generator=g) / (1 + torch.arange(q)).view(q, 1, 1)).to(dtype).to(DEVICE)
    idx, quant = ops.rvq_encode(x, cbs, backend="triton", precision=precision)
    assert idx.shape == (n, q) and idx.dtype == torch.int64 and quant.dtype == torch.float32
    _check_stagewise(x, cbs, idx, quant)
    idx_ref, quant_ref = ops.rvq_encode(x, cbs, backend="reference")
    same = (idx == idx_ref).all(1)
    # Same codes in the same order -> the same fp32 sums, bit for bit.
    assert torch.equal(quant[same], quant_ref[same])


@here
def test_rvq_encode_per_stage_path_for_large_d():
    # D > 1024 does not fit on chip: the per-stage path must give the same kind of answer.
    ops = _ops()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 1030, generator=g).to(DEVICE)
    cbs = torch.randn(2, 6, 1030, generator=g).to(DEVICE)
    idx, quant = ops.rvq_encode(x, cbs, backend="triton")
    _check_stagewise(x, cbs, idx, quant)


@here
def test_certified_screen_certifies_random_rows():
    # The bf16 bound must be tight enough that the screen, not the exact fallback, decides most
    # rows of random data (else "certified" would silently be the slow path).
    from rvqfast.backends.triton import certified_stats

    ops = _ops()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 130, generator=g).to(DEVICE)
    cb = torch.randn(48, 130, generator=g).to(DEVICE)
    certified_stats(reset=True)
    idx, _ = ops.nearest_code(x, cb, backend="triton", precision="certified")
    stats = certified_stats(reset=True)
    assert stats["rows"] == 64 and stats["fallback_rows"] <= 8, stats
    assert torch.equal(idx, ops.nearest_code(x, cb, backend="reference")[0])


@here
def test_certified_falls_back_below_bf16_resolution():
    # Two clusters of codes at +-base, 1e-5 apart within a cluster: after centring (mean ~0) they
    # differ far below bf16 resolution, so the bound must refuse and the exact search decide.
    from rvqfast.backends.triton import certified_stats

    ops = _ops()
    g = torch.Generator().manual_seed(7)
    sign = torch.where(torch.arange(40) % 2 == 0, 1.0, -1.0).view(40, 1)
    cb = sign * torch.randn(1, 16, generator=g) + 1e-5 * torch.randn(40, 16, generator=g)
    x = cb[torch.randint(0, 40, (30,), generator=g)] + 2e-6 * torch.randn(30, 16, generator=g)
    certified_stats(reset=True)
    idx, _ = ops.nearest_code(x.to(DEVICE), cb.to(DEVICE), backend="triton", precision="certified")
    assert certified_stats(reset=True)["fallback_rows"] > 0
    assert_nearest(x, cb, idx.cpu(), rtol=1e-7)


@here
def test_bf16_precision_is_close():
    ops = _ops()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 33, generator=g).to(DEVICE)
    cb = torch.randn(37, 33, generator=g).to(DEVICE)
    idx, d2 = ops.nearest_code(x, cb, backend="triton", precision="bf16")
    d = sqdist64(x.cpu(), cb.cpu())
    got = d.gather(1, idx.cpu().view(-1, 1)).squeeze(1)
    # bf16 operands: 2^-8 relative error per product, so only a loose bound holds.
    assert (got <= d.min(1).values + 0.05 * (x.cpu().pow(2).sum(1) + cb.cpu().pow(2).sum(1).max())).all()
    torch.testing.assert_close(d2.cpu().double(), got, rtol=1e-5, atol=1e-4)


@here
@few
@given(st.integers(1, 40), st.integers(1, 5), st.integers(1, 30), st.sampled_from(DIMS), st.sampled_from(DTYPES), st.integers(0, 10**6))
def test_rvq_decode_matches_reference(n, q, k, d, dtype, seed):
    ops = _ops()
    g = torch.Generator().manual_seed(seed)
    cbs = torch.randn(q, k, d, generator=g).to(dtype).to(DEVICE)
    idx = torch.randint(-1, k, (n, q), generator=g).to(DEVICE)
    out = ops.rvq_decode(idx, cbs, backend="triton")
    assert out.shape == (n, d) and out.dtype == torch.float32
    assert torch.equal(out, ops.rvq_decode(idx, cbs, backend="reference"))


@here
@few
@given(st.integers(1, 50), st.integers(1, 20), st.sampled_from(DIMS), st.sampled_from(DTYPES), st.integers(0, 10**6))
def test_ema_stats_matches_reference(n, k, d, dtype, seed):
    ops = _ops()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype).to(DEVICE)
    idx = torch.randint(-1, k, (n,), generator=g).to(DEVICE)
    counts, sums = ops.ema_stats(x, idx, k, backend="triton")
    c_ref, s_ref = ops.ema_stats(x, idx, k, backend="reference")
    assert torch.equal(counts, c_ref)  # small integer counts are exact in fp32 whatever the order
    torch.testing.assert_close(sums, s_ref, rtol=1e-5, atol=1e-5)


def test_fixed_config_fits_on_chip():
    # RVQFAST_TRITON_FIXED_CONFIG=1 (GPU tests without autotuning) launches these tilings.
    from rvqfast.backends.triton.config import encode_configs, fixed_config, prune_encode_configs, search_configs

    def key(c):
        return (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps, c.num_stages)

    assert key(fixed_config(False, 128)) == key(search_configs()[0])
    for block_d in (16, 64, 512, 1024):
        cfg = fixed_config(True, block_d)
        assert key(cfg) in {key(c) for c in encode_configs()}
        assert key(cfg) == key(prune_encode_configs(encode_configs(), {"BLOCK_D": block_d})[0])
