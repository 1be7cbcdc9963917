"""The reference backend is the oracle: check it against brute force, plus the public op checks."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import rvqfast
from rvqfast import ops
from oracle import assert_nearest, far_from_origin, sqdist64

shapes = st.tuples(st.integers(1, 70), st.integers(1, 40), st.sampled_from([1, 2, 3, 7, 16, 33, 130]))


@given(shapes, st.integers(0, 2**31 - 1), st.sampled_from([0.0, 1000.0]))
def test_nearest_code_is_nearest(shape, seed, offset):
    n, k, d = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) + offset
    cb = torch.randn(k, d, generator=g) + offset
    idx, d2 = ops.nearest_code(x, cb, backend="reference")
    assert idx.dtype == torch.int64 and d2.dtype == torch.float32 and idx.shape == (n,)
    assert_nearest(x, cb, idx)
    exact = sqdist64(x, cb).gather(1, idx.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(d2.double(), exact, rtol=1e-5, atol=1e-4)


def test_far_from_origin_is_exact():
    x, cb = far_from_origin(200)
    idx, _ = ops.nearest_code(x, cb, backend="reference")
    assert_nearest(x, cb, idx, rtol=1e-6)


def test_ties_resolve_to_lowest_index():
    cb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    idx, _ = ops.nearest_code(x, cb, backend="reference")
    assert idx.tolist() == [0, 1, 0]


@given(st.integers(1, 30), st.integers(1, 4), st.integers(1, 9), st.integers(1, 12), st.integers(0, 10**6))
def test_rvq_encode_matches_stagewise_search(n, q, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    cbs = torch.randn(q, k, d, generator=g)
    idx, quant = ops.rvq_encode(x, cbs, backend="reference")
    assert idx.shape == (n, q) and quant.shape == (n, d)
    residual = x.clone()
    for s in range(q):
        assert_nearest(residual, cbs[s], idx[:, s])
        residual = residual - cbs[s][idx[:, s]]
    torch.testing.assert_close(quant, x - residual, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ops.rvq_decode(idx, cbs, backend="reference"), quant, rtol=1e-5, atol=1e-5)


def test_rvq_decode_skips_minus_one():
    cbs = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    idx = torch.tensor([[1, -1], [-1, 2], [0, 0]])
    out = ops.rvq_decode(idx, cbs, backend="reference")
    torch.testing.assert_close(out, torch.stack([cbs[0, 1], cbs[1, 2], cbs[0, 0] + cbs[1, 0]]))


def test_ema_stats_counts_and_sums():
    x = torch.randn(50, 6)
    idx = torch.randint(-1, 5, (50,))
    counts, sums = ops.ema_stats(x, idx, 5, backend="reference")
    for c in range(5):
        sel = idx == c
        assert counts[c] == sel.sum()
        torch.testing.assert_close(sums[c], x[sel].sum(0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_compute_in_fp32(dtype):
    x, cb = torch.randn(40, 16).to(dtype), torch.randn(20, 16).to(dtype)
    idx, d2 = ops.nearest_code(x, cb, backend="reference")
    assert d2.dtype == torch.float32
    assert_nearest(x.float(), cb.float(), idx)


def test_non_contiguous_input():
    x = torch.randn(16, 30)[:, ::2]
    cb = torch.randn(9, 15)
    idx, _ = ops.nearest_code(x, cb, backend="reference")
    assert_nearest(x, cb, idx)


@pytest.mark.parametrize(
    "x, cb, match",
    [
        (torch.randn(4, 3), torch.randn(5, 4), "D=3"),
        (torch.full((4, 3), float("nan")), torch.randn(5, 3), "x contains NaN"),
        (torch.randn(4, 3), torch.tensor([[float("inf")] * 3]), "codebook contains NaN or Inf"),
        (torch.randn(0, 3), torch.randn(5, 3), "empty batch"),
        (torch.randn(4, 3), torch.randn(0, 3), "codebook is empty"),
        (torch.randn(4, 3).double(), torch.randn(5, 3), "float32, float16 or bfloat16"),
        (torch.randn(4, 3, 1), torch.randn(5, 3), r"x must have 2 dims \(N, D\)"),
        ([[1.0]], torch.randn(5, 3), "x must be a torch.Tensor"),
    ],
)
def test_bad_input_is_named(x, cb, match):
    with pytest.raises(ValueError, match=match):
        ops.nearest_code(x, cb, backend="reference")


def test_bad_backend_precision_and_indices():
    x, cb = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="backend must be"):
        ops.nearest_code(x, cb, backend="gpu")
    with pytest.raises(ValueError, match="precision must be"):
        ops.nearest_code(x, cb, precision="fp8")
    with pytest.raises(ValueError, match=r"indices out of range.*\[0, 5\)"):
        ops.rvq_decode(torch.tensor([[5]]), cb[None])
    with pytest.raises(ValueError, match="integer tensor"):
        ops.rvq_decode(torch.tensor([[0.5]]), cb[None])


def test_auto_backend_is_available_and_correct():
    assert "reference" in rvqfast.available_backends()
    x, cb = torch.randn(33, 12), torch.randn(17, 12)
    idx, _ = ops.nearest_code(x, cb)
    assert_nearest(x, cb, idx)


def test_ops_trace_under_torch_compile():
    # The fake impls let torch.compile build a graph around the custom ops without graph breaks.
    x, cb = torch.randn(10, 8), torch.randn(6, 8)
    cbs = torch.randn(3, 6, 8)

    def f(x, cb, cbs):
        i, _ = torch.ops.rvqfast.nearest_code(x, cb, "reference", "exact")
        j, q = torch.ops.rvqfast.rvq_encode(x, cbs, "reference", "exact")
        return i, j, q

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(x, cb, cbs), f(x, cb, cbs)):
        torch.testing.assert_close(a, b)
    torch.library.opcheck(torch.ops.rvqfast.nearest_code.default, (x, cb, "reference", "exact"))
