"""Certified mixed-precision search: bf16 screening + fp64 re-rank must equal the exact search.

The data here is built to defeat bf16: near-ties, duplicated codes, huge and tiny norms, and
codebooks whose codes sit closer together than the bf16 rounding error of their coordinates.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rvqfast import ops
from rvqfast.backends import available_backends, backend_load_errors
from oracle import assert_nearest, assert_same_up_to_ties, lloyd_rvq_codebooks, sqdist64

pytestmark = pytest.mark.skipif(
    "cpu" not in available_backends(),
    reason=f"rvqfast._C is not built: {backend_load_errors().get('cpu')}",
)


@pytest.fixture(autouse=True)
def _fresh_stats():
    from rvqfast.backends import cpu

    cpu.set_candidate_cap(0)
    cpu.reset_certified_stats()
    yield
    cpu.set_candidate_cap(0)


def _clustered(g, n, k, d, scale, spread):
    """Two far-apart clusters (so centring on the mean does not shrink them) of codes `spread`
    apart, and rows next to random codes: distances differ far below bf16 resolution."""
    centre = scale * torch.randn(d, generator=g)
    sign = torch.where(torch.arange(k) % 2 == 0, 1.0, -1.0).view(k, 1)
    cb = sign * centre + spread * scale * torch.randn(k, d, generator=g)
    x = cb[torch.randint(0, k, (n,), generator=g)] + 0.3 * spread * scale * torch.randn(n, d, generator=g)
    return x, cb


def _check(x, cb, idx):
    exact, _ = ops.nearest_code(x, cb, backend="cpu", precision="exact")
    assert_same_up_to_ties(x, cb, idx, exact)
    assert_nearest(x, cb, idx, rtol=1e-6)


kinds = st.sampled_from(["random", "clustered", "near_tie", "duplicates", "huge", "tiny"])


@given(kinds, st.integers(1, 200), st.integers(1, 300), st.sampled_from([1, 3, 16, 64, 200, 512, 1024]),
       st.integers(0, 2**31 - 1))
def test_certified_equals_exact(kind, n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        x, cb = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    elif kind == "clustered":
        x, cb = _clustered(g, n, k, d, scale=10.0, spread=1e-4)
    elif kind == "near_tie":
        # Rows exactly half-way between two codes, nudged by far less than bf16 resolution.
        cb = torch.randn(k, d, generator=g)
        i, j = torch.randint(0, k, (n,), generator=g), torch.randint(0, k, (n,), generator=g)
        x = 0.5 * (cb[i] + cb[j]) + 1e-6 * torch.randn(n, d, generator=g)
    elif kind == "duplicates":
        base = torch.randn(max(1, k // 3), d, generator=g)
        cb = base[torch.randint(0, base.shape[0], (k,), generator=g)]
        x = cb[torch.randint(0, k, (n,), generator=g)] + 1e-3 * torch.randn(n, d, generator=g)
    elif kind == "huge":
        x, cb = _clustered(g, n, k, d, scale=1e15, spread=1e-3)
    else:  # tiny
        x, cb = _clustered(g, n, k, d, scale=1e-15, spread=1e-2)
    idx, d2 = ops.nearest_code(x, cb, backend="cpu", precision="certified")
    _check(x, cb, idx)
    if kind == "duplicates":
        # the winner is the first of its duplicates
        first = {}
        for pos, row in enumerate(cb.tolist()):
            first.setdefault(tuple(row), pos)
        assert all(first[tuple(cb[i].tolist())] == i for i in idx.tolist())


def test_bf16_alone_gets_clustered_codebooks_wrong_but_certified_does_not():
    # The adversarial data really is beyond bf16: the screen alone picks wrong codes.
    g = torch.Generator().manual_seed(11)
    x, cb = _clustered(g, 400, 256, 256, scale=1.0, spread=3e-4)
    best = sqdist64(x, cb).min(1).values
    approx, _ = ops.nearest_code(x, cb, backend="cpu", precision="bf16")
    approx_d = sqdist64(x, cb).gather(1, approx.view(-1, 1)).squeeze(1)
    assert (approx_d > best * (1 + 1e-3)).any(), "bf16 screening was exact here: data not adversarial"
    cert, _ = ops.nearest_code(x, cb, backend="cpu", precision="certified")
    _check(x, cb, cert)


def test_overflow_rows_fall_back_to_exact_and_are_counted():
    from rvqfast.backends import cpu

    g = torch.Generator().manual_seed(4)
    x, cb = _clustered(g, 300, 128, 64, scale=1.0, spread=1e-4)
    cpu.set_candidate_cap(1)
    idx, _ = ops.nearest_code(x, cb, backend="cpu", precision="certified")
    stats = cpu.certified_stats()
    _check(x, cb, idx)
    assert stats["rows"] == 300
    assert stats["overflow_rows"] > 0
    assert stats["mean_candidates"] >= 1.0
    cpu.set_candidate_cap(0)
    cpu.reset_certified_stats()
    ops.nearest_code(torch.randn(50, 64, generator=g), torch.randn(512, 64, generator=g),
                     backend="cpu", precision="certified")
    assert cpu.certified_stats()["overflow_rows"] == 0


@given(st.integers(1, 100), st.integers(1, 4), st.integers(1, 64), st.sampled_from([8, 64, 300]),
       st.integers(0, 10**6))
def test_certified_rvq_encode_equals_exact(n, q, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    cbs = torch.randn(q, k, d, generator=g) * torch.logspace(0, -1.5, q).view(q, 1, 1)
    idx, quant = ops.rvq_encode(x, cbs, backend="cpu", precision="certified")
    residual = x.clone()
    for s in range(q):
        assert_nearest(residual, cbs[s], idx[:, s], rtol=1e-6)
        residual -= cbs[s][idx[:, s]]
    torch.testing.assert_close(quant, x - residual, rtol=1e-5, atol=1e-5)
    ex_idx, _ = ops.rvq_encode(x, cbs, backend="cpu", precision="exact")
    first_diff = (idx != ex_idx).float().argmax(1)
    rows = (idx != ex_idx).any(1).nonzero().flatten()
    for r in rows.tolist():  # a row may only leave the exact path at a near-tie
        s = int(first_diff[r])
        res = x[r : r + 1] - sum((cbs[t][idx[r, t]] for t in range(s)), torch.zeros(d))
        assert_same_up_to_ties(res, cbs[s], idx[r : r + 1, s], ex_idx[r : r + 1, s])


def test_half_inputs_certified():
    g = torch.Generator().manual_seed(8)
    x, cb = _clustered(g, 100, 64, 48, scale=1.0, spread=1e-2)
    idx, _ = ops.nearest_code(x.bfloat16(), cb.bfloat16(), backend="cpu", precision="certified")
    _check(x.bfloat16().float(), cb.bfloat16().float(), idx)


def test_auto_precision_is_certified_only_with_bf16_matrix_units():
    from rvqfast.ops import _has_bf16_matrix_units, resolve_precision

    p = resolve_precision("auto", "cpu", torch.device("cpu"))
    assert p == ("certified" if _has_bf16_matrix_units(torch.device("cpu")) else "exact")


def _kmeans_rvq(g, n_train, k, d, q, lloyd):
    """RVQ codebooks trained by a few Lloyd steps on clustered data. With few training points per
    code, later stages hold many duplicated (zero) codes: the screen must not keep them all."""
    centres = 2 * torch.randn(32, d, generator=g)

    def data(n):
        return centres[torch.randint(0, 32, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)

    cbs = lloyd_rvq_codebooks(g, data(n_train), k, q, lloyd)
    return data(300), cbs


@pytest.mark.parametrize("points_per_code,lloyd", [(2, 1), (8, 2)])
def test_certified_on_kmeans_codebooks(points_per_code, lloyd):
    from rvqfast.backends import cpu

    g = torch.Generator().manual_seed(points_per_code)
    k, d, q = 64, 128, 4
    x, cbs = _kmeans_rvq(g, points_per_code * k, k, d, q, lloyd)
    cpu.reset_certified_stats()
    idx, quant = ops.rvq_encode(x, cbs, backend="cpu", precision="certified")
    stats = cpu.certified_stats()
    residual = x.clone()
    for s in range(q):  # each stage a true nearest code (fp64 check), duplicates at lowest index
        assert_nearest(residual, cbs[s], idx[:, s], rtol=1e-6)
        d64 = sqdist64(residual, cbs[s])
        first_tied = (d64 == d64.gather(1, idx[:, s : s + 1])).float().argmax(1)
        dup = (cbs[s][first_tied] == cbs[s][idx[:, s]]).all(1)
        assert (first_tied[dup] == idx[:, s][dup]).all()
        residual -= cbs[s][idx[:, s]]
    ex_idx, _ = ops.rvq_encode(x, cbs, backend="cpu", precision="exact")
    rows = (idx != ex_idx).any(1).nonzero().flatten()
    assert len(rows) <= 3  # only fp32 near-ties may separate them
    # The bound is tight enough here that rows rarely fall back to the exact search.
    assert stats["rows"] == 300 * q
    assert stats["overflow_rows"] <= 0.02 * stats["rows"], stats
    assert stats["mean_candidates"] < 8, stats


@pytest.mark.parametrize("d", [8, 64, 512])
def test_one_ulp_apart_codes_take_the_fp64_fallback_and_stay_exact(d):
    # Pairs of codes one float32 ulp apart in one coordinate: the fp32 re-rank intervals of the
    # two overlap, so the kernel must fall back to the fp64 re-rank and return the true nearest
    # code (lowest index on an exact fp64 tie).
    g = torch.Generator().manual_seed(d)
    base = torch.randn(32, d, generator=g)
    twin = base.clone()
    twin[:, 0] = torch.nextafter(base[:, 0], torch.full_like(base[:, 0], float("inf")))
    cb = torch.cat([base, twin])
    x = base[torch.randint(0, 32, (200,), generator=g)] + 1e-6 * torch.randn(200, d, generator=g)
    idx, _ = ops.nearest_code(x, cb, backend="cpu", precision="certified")
    d64 = sqdist64(x, cb)
    best = d64.min(1).values
    got = d64.gather(1, idx.view(-1, 1)).squeeze(1)
    assert torch.equal(got, best), "certified did not return an fp64-nearest code"
    first = (d64 == best[:, None]).float().argmax(1)
    assert torch.equal(idx, first), "exact fp64 ties must resolve to the lowest index"
