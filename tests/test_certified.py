"""Certified mixed-precision search: bf16 / int8 screening + exact re-rank must equal the exact search.

The data here is built to defeat the screens: near-ties, duplicated codes, huge and tiny norms,
tight clusters far from the origin, mixed norms, zero rows, and codebooks whose codes sit closer
together than the bf16 / int8 rounding error of their coordinates. The screens' error bound is
also checked directly against float64 on every (row, code) pair.
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


SCREENS = ["certified-bf16", "certified-int8"]


@pytest.mark.parametrize("precision", SCREENS)
@given(kind=kinds, n=st.integers(1, 200), k=st.integers(1, 300),
       d=st.sampled_from([1, 3, 16, 64, 200, 512, 1024]), seed=st.integers(0, 2**31 - 1))
def test_certified_equals_exact(precision, kind, n, k, d, seed):
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
        x, cb = _clustered(g, n, k, d, scale=1e13, spread=1e-3)  # ops refuse |x| > 1e15
    else:  # tiny
        x, cb = _clustered(g, n, k, d, scale=1e-15, spread=1e-2)
    idx, d2 = ops.nearest_code(x, cb, backend="cpu", precision=precision)
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


@pytest.mark.parametrize("precision", SCREENS)
def test_overflow_rows_fall_back_to_exact_and_are_counted(precision):
    from rvqfast.backends import cpu

    g = torch.Generator().manual_seed(4)
    x, cb = _clustered(g, 300, 128, 64, scale=1.0, spread=1e-4)
    cpu.set_candidate_cap(1)
    idx, _ = ops.nearest_code(x, cb, backend="cpu", precision=precision)
    stats = cpu.certified_stats()
    _check(x, cb, idx)
    assert stats["rows"] == 300
    assert stats["overflow_rows"] > 0
    assert stats["mean_candidates"] >= 1.0
    assert stats["max_candidates"] > 1
    cpu.set_candidate_cap(0)
    cpu.reset_certified_stats()
    ops.nearest_code(torch.randn(50, 64, generator=g), torch.randn(512, 64, generator=g),
                     backend="cpu", precision=precision)
    assert cpu.certified_stats()["overflow_rows"] == 0


@pytest.mark.parametrize("precision", SCREENS)
@given(n=st.integers(1, 100), q=st.integers(1, 4), k=st.integers(1, 64), d=st.sampled_from([8, 64, 300]),
       seed=st.integers(0, 10**6))
def test_certified_rvq_encode_equals_exact(precision, n, q, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    cbs = torch.randn(q, k, d, generator=g) * torch.logspace(0, -1.5, q).view(q, 1, 1)
    idx, quant = ops.rvq_encode(x, cbs, backend="cpu", precision=precision)
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


@pytest.mark.parametrize("precision", SCREENS)
def test_half_inputs_certified(precision):
    g = torch.Generator().manual_seed(8)
    x, cb = _clustered(g, 100, 64, 48, scale=1.0, spread=1e-2)
    idx, _ = ops.nearest_code(x.bfloat16(), cb.bfloat16(), backend="cpu", precision=precision)
    _check(x.bfloat16().float(), cb.bfloat16().float(), idx)


def test_precision_resolution_picks_a_screen_from_the_crossovers():
    from rvqfast.backends import cpu
    from rvqfast.ops import resolve_precision

    dev = torch.device("cpu")
    auto_min, int8_min = cpu.crossovers()
    assert (auto_min, int8_min) == ((cpu.VNNI_AUTO_MIN_DIM, cpu.VNNI_INT8_MIN_DIM)
                                    if cpu.int8_gemm_kernel() == "vnni" else (cpu.AUTO_MIN_DIM, cpu.INT8_MIN_DIM))
    for d in (1, 16, 64, auto_min, int8_min, 4096):
        chosen = resolve_precision("certified", "cpu", dev, d, 512)
        assert chosen == cpu.choose_certified(d, 512)
        assert chosen in ("certified-int8", "certified-bf16")
        if chosen == "certified-int8":
            assert d >= int8_min and cpu.int8_screen_available(d)
        auto = resolve_precision("auto", "cpu", dev, d, 512)
        assert auto == ("exact" if d < auto_min else cpu.choose_certified(d, 512, for_auto=True))
    # explicit screens stay as asked on the CPU; backends with one certified mode run it
    assert resolve_precision("certified-int8", "cpu", dev, 8, 4) == "certified-int8"
    assert resolve_precision("certified-int8", "reference", dev, 8, 4) == "certified"
    assert resolve_precision("certified-bf16", "reference", dev, 8, 4) == "certified"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("certified-fp8", "cpu", dev, 8, 4)


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


# ----------------------------------------------------------------------------------- int8 screen

int8_kinds = st.sampled_from(["far_clusters", "near_duplicates", "mixed_norms", "zero_rows", "random"])


def _int8_adversarial(kind, g, n, k, d):
    if kind == "far_clusters":
        # Tight clusters 1e3 from the origin: centring must remove the offset, or int8's 1/127
        # resolution of the coordinates would swamp the 1e-3 gaps between codes.
        off = 1e3 * torch.randn(d, generator=g)
        cb = off + 1e-3 * torch.randn(k, d, generator=g)
        x = cb[torch.randint(0, k, (n,), generator=g)] + 3e-4 * torch.randn(n, d, generator=g)
    elif kind == "near_duplicates":
        base = torch.randn(max(1, k // 2), d, generator=g)
        cb = base[torch.randint(0, base.shape[0], (k,), generator=g)]
        cb = cb * (1 + 1e-6 * torch.randn(k, d, generator=g))  # far below one int8 step
        x = cb[torch.randint(0, k, (n,), generator=g)] + 1e-7 * torch.randn(n, d, generator=g)
    elif kind == "mixed_norms":
        # Norms from 1e-3 to 1e3 within one codebook (per-row scales must follow each code) and
        # rows with one huge coordinate (one int8 step of that row is then coarse everywhere).
        cb = torch.randn(k, d, generator=g) * torch.logspace(-3, 3, k).view(k, 1)
        x = torch.randn(n, d, generator=g) * torch.logspace(-3, 3, n).view(n, 1)
        x[::3, 0] *= 1e4
    elif kind == "zero_rows":
        cb = torch.randn(k, d, generator=g)
        x = torch.zeros(n, d)
        x[1::2] = cb[torch.randint(0, k, ((n) // 2,), generator=g)]  # zero residual after a hit
    else:
        x, cb = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    return x, cb


@given(kind=int8_kinds, n=st.sampled_from([1, 2, 37, 150]), k=st.sampled_from([1, 2, 31, 257]),
       d=st.sampled_from([1, 2, 5, 64, 300, 1030]), seed=st.integers(0, 2**31 - 1))
def test_certified_int8_equals_exact_on_adversarial_data(kind, n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    x, cb = _int8_adversarial(kind, g, n, k, d)
    idx, _ = ops.nearest_code(x, cb, backend="cpu", precision="certified-int8")
    exact, _ = ops.nearest_code(x, cb, backend="cpu", precision="exact")
    d64 = sqdist64(x, cb)
    got = d64.gather(1, idx.view(-1, 1)).squeeze(1)
    ex = d64.gather(1, exact.view(-1, 1)).squeeze(1)
    # Where the two differ, the certified code is at least as near in float64: they part only
    # where fp32 cannot separate the codes and the certified re-rank can.
    diff = idx != exact
    assert (got[diff] <= ex[diff]).all(), f"{int((got[diff] > ex[diff]).sum())} rows worse than exact"
    if kind != "mixed_norms":
        # (mixed_norms puts rows of norm 1e-3 next to codes of norm 1e3: the rows over the
        # candidate cap go to the fp32 exact search, which cannot resolve them either.)
        assert_nearest(x, cb, idx, rtol=1e-6)
    best = d64.min(1).values
    hit = got == best  # a true fp64-nearest code: the lowest index among fp64-equal distances
    tied_first = (d64 == best[:, None]).float().argmax(1)
    assert torch.equal(idx[hit], tied_first[hit])


@given(n=st.sampled_from([1, 3, 40]), q=st.integers(1, 3), k=st.sampled_from([1, 7, 64]),
       d=st.sampled_from([1, 3, 64, 1030]), seed=st.integers(0, 10**6))
def test_certified_int8_rvq_encode_with_zero_residuals(n, q, k, d, seed):
    # Rows equal to codes of stage 0: the first stage must find a code at fp64 distance 0, and the
    # residual is then exactly zero, the degenerate all-zero row of the int8 quantization (scale
    # 0), whose nearest code in stage 1 is the one of smallest norm (lowest index on ties).
    g = torch.Generator().manual_seed(seed)
    cbs = torch.randn(q, k, d, generator=g) * torch.logspace(0, -1, q).view(q, 1, 1)
    x = cbs[0][torch.randint(0, k, (n,), generator=g)].clone()
    idx, quant = ops.rvq_encode(x, cbs, backend="cpu", precision="certified-int8")
    d0 = sqdist64(x, cbs[0]).gather(1, idx[:, :1]).squeeze(1)
    assert (d0 == 0).all()
    assert torch.equal(cbs[0][idx[:, 0]], x)
    if q > 1:
        norms = cbs[1].double().pow(2).sum(1)
        first_min = int((norms == norms.min()).float().argmax())
        assert (idx[:, 1] == first_min).all()
    residual = torch.zeros_like(x)
    for s in range(1, q):  # later stages: a true nearest code of their residual
        assert_nearest(residual, cbs[s], idx[:, s], rtol=1e-6)
        residual -= cbs[s][idx[:, s]]
    torch.testing.assert_close(quant, x - residual, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("precision", SCREENS)
@pytest.mark.parametrize("d", [1, 7, 64, 513, 1030])
def test_screen_bound_holds_on_every_pair(precision, d):
    """|s_k - T_k| <= E_k, checked against float64 for every (row, code) pair: rows and codes of
    several scales, offsets and norms, a zero row and a row equal to a code."""
    from rvqfast import _C

    g = torch.Generator().manual_seed(d)
    k = 96
    cb = torch.cat([
        torch.randn(32, d, generator=g),
        5.0 + 1e-2 * torch.randn(32, d, generator=g),  # tight cluster off the origin
        torch.randn(32, d, generator=g) * torch.logspace(-4, 4, 32).view(32, 1),
    ])
    x = torch.cat([
        torch.randn(40, d, generator=g),
        cb[32:64][torch.randint(0, 32, (20,), generator=g)] + 1e-3 * torch.randn(20, d, generator=g),
        torch.randn(20, d, generator=g) * torch.logspace(-4, 4, 20).view(20, 1),
        torch.zeros(1, d),
        cb[5:6].clone(),
    ])
    lo, hi, mu = _C.screen_bounds(x, cb, precision)
    x64, c64, mu64 = x.double(), cb.double(), mu.double()
    # T_k = ||x - c_k||^2 - ||x - mu||^2 in float64, with a margin for float64's own rounding
    # (far below the screen's bound, which is ~1e-3 relative for bf16 and ~1e-2 for int8).
    t1, t0 = sqdist64(x, cb), ((x64 - mu64) ** 2).sum(1, keepdim=True)
    t = t1 - t0
    margin = 1e-12 * (t1 + t0) + 1e-300
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
    assert (lo.double() <= t + margin).all(), float((lo.double() - t).max())
    assert (hi.double() >= t - margin).all(), float((t - hi.double()).max())
    # the bound is not vacuous: for unit-scale rows and codes its width is below the spread of T
    # over the codes (measured: 0.007-0.18 of it for bf16, up to 0.8 for int8 at D = 1030)
    lo, hi, mu = _C.screen_bounds(x[:40], cb[:32], precision)
    t = sqdist64(x[:40], cb[:32]) - ((x[:40].double() - mu.double()) ** 2).sum(1, keepdim=True)
    assert ((hi - lo).double().median() < t.std(1).median()).item()


def test_prepared_codebooks_are_cached_by_content():
    from rvqfast import _C

    g = torch.Generator().manual_seed(3)
    x, cbs = torch.randn(64, 32, generator=g), torch.randn(2, 16, 32, generator=g)
    before = _C.codebook_cache_stats()
    first = ops.rvq_encode(x, cbs, backend="cpu", precision="certified-int8")[0]
    again = ops.rvq_encode(x, cbs.clone(), backend="cpu", precision="certified-int8")[0]
    after = _C.codebook_cache_stats()
    assert torch.equal(first, again)
    assert after["hits"] >= before["hits"] + 1
    # An in-place edit that autograd's version counter never sees must not serve stale codes.
    cbs.data[:, :, 0] += 3.0
    edited = ops.rvq_encode(x, cbs, backend="cpu", precision="certified-int8")[0]
    assert torch.equal(edited, ops.rvq_encode(x, cbs, backend="cpu", precision="exact")[0])
    assert not torch.equal(edited, first)
