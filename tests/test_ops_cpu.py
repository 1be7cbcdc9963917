"""The C++ CPU backend against the reference oracle (exact precision, decode, EMA statistics)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rvqfast import ops
from rvqfast.backends import available_backends, backend_load_errors
from oracle import assert_nearest, assert_same_up_to_ties, far_from_origin, sqdist64

pytestmark = pytest.mark.skipif(
    "cpu" not in available_backends(),
    reason=f"rvqfast._C is not built: {backend_load_errors().get('cpu')}",
)

shapes = st.tuples(
    st.integers(1, 300), st.integers(1, 70), st.sampled_from([1, 2, 3, 7, 16, 17, 33, 64, 130, 1024])
)


def _data(seed: int, n: int, k: int, d: int, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + offset, torch.randn(k, d, generator=g) + offset


@pytest.fixture(params=["avx512", "scalar"])
def simd(request):
    """Run the test with the AVX-512 kernels (when the CPU has them) and with the scalar ones."""
    from rvqfast import _C

    used = _C.set_simd_avx512(request.param == "avx512")
    if request.param == "avx512" and not used:
        _C.set_simd_avx512(True)
        pytest.skip("this CPU has no AVX-512")
    yield request.param
    _C.set_simd_avx512(True)


@given(shapes, st.integers(0, 2**31 - 1), st.sampled_from([0.0, 1000.0]))
def test_nearest_code_matches_reference(shape, seed, offset):
    n, k, d = shape
    x, cb = _data(seed, n, k, d, offset)
    idx, d2 = ops.nearest_code(x, cb, backend="cpu")
    ref, _ = ops.nearest_code(x, cb, backend="reference")
    assert idx.dtype == torch.int64 and d2.dtype == torch.float32 and idx.shape == (n,)
    assert_same_up_to_ties(x, cb, idx, ref)
    exact = sqdist64(x, cb).gather(1, idx.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(d2.double(), exact, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n,k,d", [(1, 1, 1), (1, 5, 3), (7, 1, 9), (3, 4, 1024), (1100, 1030, 5)])
def test_edge_shapes(simd, n, k, d):
    # 1100 rows x 1030 codes crosses both the row-block (1024) and the code-chunk (1024) edges.
    x, cb = _data(n * 31 + k, n, k, d)
    idx, d2 = ops.nearest_code(x, cb, backend="cpu")
    assert_nearest(x, cb, idx)
    if k == 1:
        assert (idx == 0).all()


def test_duplicated_codes_resolve_to_lowest_index(simd):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(20, 37, generator=g)
    # Codes 20..39 repeat 0..19 and 40..59 repeat them again, in shuffled order.
    perm = torch.randperm(20, generator=g)
    cb = torch.cat([base, base[perm], base[perm.flip(0)]])
    x = torch.cat([base + 1e-3 * torch.randn(20, 37, generator=g), torch.randn(50, 37, generator=g)])
    idx, _ = ops.nearest_code(x, cb, backend="cpu")
    assert (idx < 20).all(), "a duplicate won over the lowest index holding the same code"
    assert_nearest(x, cb, idx)
    # Exact geometric ties between distinct codes, as in the reference's own test.
    cb2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    x2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert ops.nearest_code(x2, cb2, backend="cpu")[0].tolist() == [0, 1, 0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_fp32(dtype):
    x, cb = _data(5, 200, 50, 24)
    x, cb = x.to(dtype), cb.to(dtype)
    idx, d2 = ops.nearest_code(x, cb, backend="cpu")
    ref, _ = ops.nearest_code(x, cb, backend="reference")
    assert d2.dtype == torch.float32
    assert_same_up_to_ties(x.float(), cb.float(), idx, ref)
    qi, qq = ops.rvq_encode(x, torch.stack([cb, cb]), backend="cpu")
    assert qq.dtype == torch.float32 and qi.shape == (200, 2)


def test_non_contiguous_input():
    x, cb = _data(6, 64, 40, 30)
    xt = torch.randn(30, 128)[:, ::2].t()  # (64, 30), strided
    cbt = torch.randn(30, 40).t()
    for xx, cc in ((xt, cb), (x, cbt), (xt, cbt)):
        assert not (xx.is_contiguous() and cc.is_contiguous())
        idx, _ = ops.nearest_code(xx, cc, backend="cpu")
        ref, _ = ops.nearest_code(xx.contiguous(), cc.contiguous(), backend="reference")
        assert_same_up_to_ties(xx, cc, idx, ref)


def test_far_from_origin_is_exact():
    x, cb = far_from_origin(300)
    idx, _ = ops.nearest_code(x, cb, backend="cpu")
    assert_nearest(x, cb, idx, rtol=1e-6)


def _check_encode(x, cbs, idx, quant):
    """Every stage's index is a (near-)nearest code of the residual left by the earlier stages."""
    residual = x.float().clone()
    for q in range(cbs.shape[0]):
        assert_nearest(residual, cbs[q], idx[:, q])
        residual -= cbs[q].float()[idx[:, q]]
    torch.testing.assert_close(quant, (x.float() - residual), rtol=1e-5, atol=1e-4)


@given(st.integers(1, 120), st.integers(1, 5), st.integers(1, 40), st.sampled_from([1, 5, 16, 64, 257]),
       st.integers(0, 10**6))
def test_rvq_encode_matches_reference(n, q, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    cbs = torch.randn(q, k, d, generator=g) * torch.logspace(0, -1, q).view(q, 1, 1)
    idx, quant = ops.rvq_encode(x, cbs, backend="cpu")
    ref_idx, ref_quant = ops.rvq_encode(x, cbs, backend="reference")
    assert idx.shape == (n, q) and quant.shape == (n, d)
    _check_encode(x, cbs, idx, quant)
    same = (idx == ref_idx).all(1)  # rows that took no near-tie detour agree exactly
    torch.testing.assert_close(quant[same], ref_quant[same], rtol=1e-5, atol=1e-5)
    # quantized is exactly the sum of the chosen codes
    torch.testing.assert_close(quant, ops.rvq_decode(idx, cbs, backend="reference"), rtol=1e-6, atol=1e-5)


@given(st.integers(1, 200), st.integers(1, 5), st.integers(1, 30), st.integers(1, 70), st.integers(0, 10**6))
def test_rvq_decode_with_skipped_stages(n, q, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    cbs = torch.randn(q, k, d, generator=g)
    idx = torch.randint(-1, k, (n, q), generator=g)
    out = ops.rvq_decode(idx, cbs, backend="cpu")
    torch.testing.assert_close(out, ops.rvq_decode(idx, cbs, backend="reference"), rtol=1e-6, atol=1e-6)
    # fewer stages than codebooks: the trailing codebooks are unused
    out2 = ops.rvq_decode(idx[:, :1], cbs, backend="cpu")
    torch.testing.assert_close(out2, ops.rvq_decode(idx[:, :1], cbs, backend="reference"))


@given(st.integers(1, 300), st.integers(1, 40), st.integers(1, 80), st.integers(0, 10**6))
def test_ema_stats_matches_reference(n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    idx = torch.randint(-1, k, (n,), generator=g)
    counts, sums = ops.ema_stats(x, idx, k, backend="cpu")
    rc, rs = ops.ema_stats(x, idx, k, backend="reference")
    torch.testing.assert_close(counts, rc)
    torch.testing.assert_close(sums, rs, rtol=1e-5, atol=1e-5)


def test_ema_stats_is_thread_count_independent():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5000, 96, generator=g)
    idx = torch.randint(-1, 7, (5000,), generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.ema_stats(x, idx, 7, backend="cpu")
        torch.set_num_threads(max(2, before))
        many = ops.ema_stats(x, idx, 7, backend="cpu")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_binding_rejects_bad_input():
    from rvqfast import _C

    x, cb = _data(0, 4, 3, 5)
    with pytest.raises(ValueError, match="precision"):
        _C.nearest_code(x, cb, "fp8")
    with pytest.raises(ValueError, match="D="):
        _C.nearest_code(x, cb[:, :4], "exact")
    with pytest.raises(ValueError, match="indices out of range"):
        _C.rvq_decode(torch.tensor([[3]]), cb[None])
    with pytest.raises(ValueError, match="indices"):
        _C.ema_stats(x, torch.tensor([0, 1, 2, -2]), 3)
