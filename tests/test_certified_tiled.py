"""The tiled certified-int8 search (per-thread row tiles, all stages per tile, fused one-pass
selection, overflow rows re-ranked in place) must return exactly what the exact search returns,
up to fp32 near-ties, whatever the tiling: tile boundaries inside a batch, batches smaller than a
tile, one or two threads, and the block path it replaced (RVQFAST_INT8_TILE_ROWS=0)."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracle import assert_nearest, assert_same_up_to_ties, sqdist64
from rvqfast import ops
from rvqfast.backends import available_backends, backend_load_errors

pytestmark = pytest.mark.skipif(
    "cpu" not in available_backends(),
    reason=f"rvqfast._C is not built: {backend_load_errors().get('cpu')}",
)


def _int8_gemm_kernels():
    from rvqfast import _C

    # The hand-written VNNI kernel where this CPU runs it, and always oneDNN's _int_mm.
    return (["vnni"] if _C.int8_gemm_vnni_supported() else []) + ["onednn"]


@pytest.fixture(params=_int8_gemm_kernels() if "cpu" in available_backends() else ["onednn"])
def cpu_backend(request):
    from rvqfast import _C
    from rvqfast.backends import cpu

    if not cpu.int8_screen_available(64):
        pytest.skip("the int8 GEMM of this build is not exact: certified-int8 runs the bf16 screen")
    default = _C.int8_gemm_kernel()
    _C.set_int8_gemm_vnni(request.param == "vnni")
    assert cpu.int8_gemm_kernel() == request.param
    cpu.set_candidate_cap(0)
    cpu.reset_certified_stats()
    threads = torch.get_num_threads()
    yield cpu
    cpu.set_candidate_cap(0)
    torch.set_num_threads(threads)
    os.environ.pop("RVQFAST_INT8_TILE_ROWS", None)
    _C.set_int8_gemm_vnni(default == "vnni")


# Products at the int8 extremes (the pattern that would expose saturating or int16 pair-wise
# accumulation), zeros, and odd shapes around the VNNI kernel's 12-row x 32-code micro-tiles.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.sampled_from([1, 11, 12, 13, 25, 130]), k=st.sampled_from([1, 16, 31, 32, 33, 100]),
       dp=st.sampled_from([4, 8, 132, 1032]), extreme=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_int8_gemm_is_exact(cpu_backend, m, k, dp, extreme, seed):
    from rvqfast import _C

    g = torch.Generator().manual_seed(seed)
    if extreme:
        a = torch.where(torch.rand(m, dp, generator=g) < 0.5, -127, 127).to(torch.int8)
        b = torch.where(torch.rand(k, dp, generator=g) < 0.5, -127, 127).to(torch.int8)
        b[0] = 127
        a[0] = -127
    else:
        a = torch.randint(-127, 128, (m, dp), generator=g, dtype=torch.int8)
        b = torch.randint(-127, 128, (k, dp), generator=g, dtype=torch.int8)
    c = _C.int8_gemm(a, b)
    assert c.dtype == torch.int32 and c.shape == (m, k)
    assert torch.equal(c.long(), a.long() @ b.long().T)


def _rvq_problem(g, n, q, k, d):
    cbs = torch.randn(q, k, d, generator=g) * torch.logspace(0, -1, q).view(q, 1, 1)
    x = torch.randn(n, d, generator=g)
    # Near-duplicate codes and rows sitting on codes: candidates the screen cannot separate.
    cbs[:, 1::7] = cbs[:, 0::7][:, : cbs[:, 1::7].shape[1]] * (1 + 1e-6)
    x[::5] = cbs[0][torch.randint(0, k, (x[::5].shape[0],), generator=g)]
    return x, cbs


def _check_rvq(x, cbs, idx, quant, exact_idx):
    residual = x.clone()
    for s in range(cbs.shape[0]):
        assert_same_up_to_ties(residual, cbs[s], idx[:, s], exact_idx[:, s])
        assert_nearest(residual, cbs[s], idx[:, s], rtol=1e-6)
        residual -= cbs[s][idx[:, s]]
    # The output is the left-to-right fp32 sum of the chosen codes.
    expect = cbs[0][idx[:, 0]].clone()
    for s in range(1, cbs.shape[0]):
        expect += cbs[s][idx[:, s]]
    assert torch.equal(quant, expect)


# The fixture only saves and restores global settings; every example sets what it uses.
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([1, 15, 16, 17, 129, 300]), tile=st.sampled_from(["16", "100", "128"]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**31 - 1))
def test_tiles_threads_and_block_path_agree_with_exact(cpu_backend, n, tile, threads, seed):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    x, cbs = _rvq_problem(g, n, 3, 64, 160)
    exact_idx, _ = ops.rvq_encode(x, cbs, backend="cpu", precision="exact")
    os.environ["RVQFAST_INT8_TILE_ROWS"] = tile
    idx, quant = ops.rvq_encode(x, cbs, backend="cpu", precision="certified-int8")
    _check_rvq(x, cbs, idx, quant, exact_idx)
    os.environ["RVQFAST_INT8_TILE_ROWS"] = "0"  # the block path: the same certified answers
    idx_b, quant_b = ops.rvq_encode(x, cbs, backend="cpu", precision="certified-int8")
    assert torch.equal(idx_b, idx) and torch.equal(quant_b, quant)
    near, d2 = ops.nearest_code(x, cbs[0], backend="cpu", precision="certified-int8")
    assert torch.equal(near, idx[:, 0])
    torch.testing.assert_close(d2.double(), sqdist64(x, cbs[0]).gather(1, near.view(-1, 1)).squeeze(1),
                               rtol=1e-6, atol=1e-6)


def test_overflow_rows_are_reranked_in_place(cpu_backend):
    """A cap of 1 makes nearly every row an overflow row; each must still get a true nearest code
    (the rows are re-ranked over their candidates, no separate exact pass)."""
    g = torch.Generator().manual_seed(3)
    x, cbs = _rvq_problem(g, 200, 2, 96, 64)
    exact_idx, _ = ops.rvq_encode(x, cbs, backend="cpu", precision="exact")
    cpu_backend.set_candidate_cap(1)
    idx, quant = ops.rvq_encode(x, cbs, backend="cpu", precision="certified-int8")
    stats = cpu_backend.certified_stats()
    assert stats["rows"] == 400 and stats["overflow_rows"] > 100, stats
    _check_rvq(x, cbs, idx, quant, exact_idx)


def test_unusable_screen_reranks_every_code_in_fp64(cpu_backend):
    """Coordinates of 1e20 (the kernel, called directly, skips the public range check) overflow
    the fp32 norms of the screen: the row must fall back to an fp64 re-rank of every canonical
    code and still return the fp64-nearest code, lowest index on exact ties."""
    from rvqfast import _C

    g = torch.Generator().manual_seed(5)
    cb = torch.randn(40, 24, generator=g) * 1e20
    cb[7] = cb[3]  # an exact duplicate: the lower index must win
    x = cb[torch.tensor([3, 7, 11, 0])] + 1e17 * torch.randn(4, 24, generator=g)
    idx, _ = _C.nearest_code(x, cb, "certified-int8")
    stats = cpu_backend.certified_stats()
    assert stats["overflow_rows"] == 4 and stats["max_candidates"] == 40, stats  # every code kept
    d = sqdist64(x, cb)
    best = d.min(1).values
    first = (d == best[:, None]).float().argmax(1)
    assert torch.equal(idx, first)
