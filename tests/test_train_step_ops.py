"""The training step's row kernels (ops residual_update, rvq_stages_grad) of the C++ CPU backend
against their pure-torch reference implementations, and a training step on each backend."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rvqfast import _ops, ops
from rvqfast.backends import available_backends, backend_load_errors
from rvqfast.quantize import ResidualVQ
from test_ops_cpu import simd  # noqa: F401  (fixture: AVX-512 and portable kernels)

pytestmark = pytest.mark.skipif(
    "cpu" not in available_backends(),
    reason=f"rvqfast._C is not built: {backend_load_errors().get('cpu')}",
)

dims = st.sampled_from([1, 2, 3, 15, 16, 17, 64, 130, 1030])


def _update(backend: str, r, cb, idx, stats: bool):
    nan = float("nan")
    out = torch.full_like(r, nan)
    counts = torch.full((cb.shape[0],), nan) if stats else None
    sums = torch.full((cb.shape[0], r.shape[1]), nan) if stats else None
    _ops.residual_update(r, cb, idx, out, counts, sums, backend)
    return out, counts, sums


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 200), st.integers(1, 40), dims, st.booleans(), st.integers(0, 10**6))
def test_residual_update_matches_reference(n, k, d, stats, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, d, generator=g) * 10
    cb = torch.randn(k, d, generator=g)
    idx = torch.randint(0, k, (n,), generator=g)
    out, counts, sums = _update("cpu", r, cb, idx, stats)
    ref_out, ref_counts, ref_sums = _update("reference", r, cb, idx, stats)
    assert torch.equal(out, ref_out)  # one fp32 subtraction per element, as torch.sub
    assert torch.equal(out, r - cb[idx])
    if stats:
        assert torch.equal(counts, ref_counts)
        # The same row-order sums as the C++ ema_stats kernel; close to the reference's.
        c2, s2 = ops.ema_stats(r, idx, k, backend="cpu")
        assert torch.equal(counts, c2) and torch.equal(sums, s2)
        torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n,k,d", [(1, 1, 1), (1, 1, 1030), (513, 3, 17), (2000, 512, 96)])
def test_residual_update_edges_and_threads(simd, n, k, d):
    g = torch.Generator().manual_seed(n + k + d)
    r = torch.randn(n, d, generator=g)
    cb = torch.randn(k, d, generator=g)
    idx = torch.randint(0, k, (n,), generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _update("cpu", r, cb, idx, True)
        torch.set_num_threads(max(2, before))
        many = _update("cpu", r, cb, idx, True)
    finally:
        torch.set_num_threads(before)
    ref = _update("reference", r, cb, idx, True)
    for a, b in zip(one, many):
        assert torch.equal(a, b)  # bitwise independent of the thread count
    assert torch.equal(one[0], ref[0]) and torch.equal(one[1], ref[1])
    torch.testing.assert_close(one[2], ref[2], rtol=1e-5, atol=1e-4)


def test_residual_update_rejects_bad_input():
    from rvqfast import _C

    r, cb = torch.randn(4, 5), torch.randn(3, 5)
    out, counts, sums = torch.empty(4, 5), torch.empty(3), torch.empty(3, 5)
    idx = torch.tensor([0, 1, 2, 2])
    with pytest.raises(ValueError, match="every row needs a code"):
        _C.residual_update(r, cb, torch.tensor([0, 1, -1, 2]), out, counts, sums)
    with pytest.raises(ValueError, match="indices out of range"):
        _C.residual_update(r, cb, torch.tensor([0, 1, 3, 2]), out, counts, sums)
    with pytest.raises(ValueError, match="out must be"):
        _C.residual_update(r, cb, idx, torch.empty(4, 6), counts, sums)
    with pytest.raises(ValueError, match="not contiguous"):
        _C.residual_update(r, cb, idx, torch.empty(5, 4).t(), counts, sums)
    with pytest.raises(ValueError, match="overlap"):
        _C.residual_update(r, cb, idx, r, counts, sums)
    with pytest.raises(ValueError, match="sums must be"):
        _C.residual_update(r, cb, idx, out, counts, torch.empty(4, 5))
    with pytest.raises(ValueError, match="together"):
        _C.residual_update(r, cb, idx, out, counts, None)
    with pytest.raises(ValueError, match="must not overlap"):
        _C.residual_update(r, cb, idx, out, counts, out[:3])


def _grad_inputs(seed: int, a: int, n: int, d: int, zero_rows: bool):
    """Residuals of a real pass (r_{q+1} = r_q - c_q) with the forward's saved norms; with
    ``zero_rows`` some inputs and codes are exactly zero (the clamped-norm branches)."""
    g = torch.Generator().manual_seed(seed)
    res = torch.empty(a + 1, n, d)
    res[0] = torch.randn(n, d, generator=g) * 3
    codes = torch.randn(a, n, d, generator=g)
    if zero_rows and n > 1:
        res[0, ::3] = 0
        codes[:, 1::3] = 0
        codes[0, ::3] = 0
    for q in range(a):
        res[q + 1] = res[q] - codes[q]
    sqnorm = res.square().sum(-1)
    code_sq = codes.square().sum(-1)
    dist_sq = sqnorm[1:].clone()
    up = torch.randn(n, d, generator=g)
    commit = torch.rand(a, generator=g) * 1e-2
    return res, up, sqnorm, code_sq, dist_sq, commit


def _integer_inputs(seed: int, a: int, n: int, d: int, span: int):
    """Integer-valued residual chain and upstream gradient: every dot product and norm is an exact
    fp32 integer in any summation order, so both implementations see the same ``r_j . g``
    (with ``span`` 1 or 2 many rows and codes are exactly zero: the clamped-norm branches)."""
    g = torch.Generator().manual_seed(seed)
    res = torch.empty(a + 1, n, d)
    res[0] = torch.randint(-4 * span, 4 * span + 1, (n, d), generator=g).float()
    codes = torch.randint(-span, span + 1, (a, n, d), generator=g).float()
    for q in range(a):
        res[q + 1] = res[q] - codes[q]
    up = torch.randint(-3, 4, (n, d), generator=g).float()
    return res, up, res.square().sum(-1), codes.square().sum(-1), res[1:].square().sum(-1)


def _error_scale(res, up, sqnorm, code_sq, dist_sq, rotation: bool):
    """Per element, the size (in units of the fp32 rounding unit) of the rounding error an fp32
    evaluation of S g + sum_j gamma_j r_j may make: each coefficient's magnitude inflated by how
    much its formula amplifies rounding (cancellation in u.g + q.g, in z.c = (|z|^2 + |c|^2 -
    |z-c|^2)/2 and in pp = |u + q|^2), all in float64."""
    eps = 1e-6
    r, g = res.double(), up.double()
    a = r.shape[0] - 1
    dots = torch.einsum("jnd,nd->jn", r, g)
    size_s = torch.full((r.shape[1],), float(a), dtype=torch.float64)
    size_gamma = torch.zeros(a + 1, r.shape[1], dtype=torch.float64)
    if rotation:
        nz2, nc2, dz = sqnorm[:a].double(), code_sq.double(), dist_sq.double()
        nzc, ncc = nz2.sqrt().clamp(min=eps), nc2.sqrt().clamp(min=eps)
        terms = nz2 / nzc**2 + nc2 / ncc**2 + (nz2 + nc2 + dz) / (nzc * ncc)
        pp = (nz2 / nzc**2 + nc2 / ncc**2 + (nz2 + nc2 - dz) / (nzc * ncc)).clamp(min=eps * eps)
        gross_k = 2 * (dots[:a].abs() / nzc + (dots[:a] - dots[1:]).abs() / ncc) / pp * (1 + terms / pp)
        s = nc2.sqrt() / nzc
        size_s = s.sum(0)
        a_z = s * (2 * (dots[:a] - dots[1:]).abs() / ncc + gross_k) / nzc
        a_c = s * gross_k / ncc
        size_gamma[:a] += a_z + a_c
        size_gamma[1:] += a_c
    size_gamma[1:] += 1e-2  # the commitment coefficients (at most 1e-2 here)
    return size_s[:, None] * g.abs() + (size_gamma[..., None] * r.abs()).sum(0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(1, 150), dims, st.booleans(), st.sampled_from([1, 2, 8]), st.booleans(), st.integers(0, 10**6))
def test_rvq_stages_grad_matches_reference(a, n, d, rotation, span, no_commit, seed):
    from rvqfast.backends.reference import rvq_stages_grad as reference_grad

    res, up, sqnorm, code_sq, dist_sq = _integer_inputs(seed, a, n, d, span)
    commit = torch.zeros(a) if no_commit else torch.rand(a, generator=torch.Generator().manual_seed(seed)) * 1e-2
    got = _ops.rvq_stages_grad(res, up, sqnorm, code_sq, dist_sq, commit, rotation, "cpu")
    ref = _ops.rvq_stages_grad(res, up, sqnorm, code_sq, dist_sq, commit, rotation, "reference")
    assert got.shape == (n, d) and torch.isfinite(got).all()
    # The inputs are exact (integers), so the reference evaluated in float64 is the true value to
    # ~1e-16; both fp32 evaluations must lie within the same rounding-error bound of it.
    exact = reference_grad(*(t.double() for t in (res, up, sqnorm, code_sq, dist_sq, commit)), rotation)
    bound = 32 * (a + 2) * 2.0**-24 * _error_scale(res, up, sqnorm, code_sq, dist_sq, rotation) + 1e-30
    for name, val in (("cpu", got), ("reference", ref)):
        excess = (val.double() - exact).abs() - bound
        assert bool((excess <= 0).all()), f"{name}: {float(excess.max())} over the bound"
    if not rotation:  # no dot products, no coefficient arithmetic: the same operations
        torch.testing.assert_close(got, ref, rtol=4 * (a + 2) * 2.0**-24, atol=0)


@pytest.mark.parametrize("a,n,d", [(1, 1, 1), (6, 4096 // 16, 512), (3, 70, 1030)])
def test_rvq_stages_grad_edges_and_threads(simd, a, n, d):
    res, up, sqnorm, code_sq, dist_sq, commit = _grad_inputs(a * n + d, a, n, d, True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _ops.rvq_stages_grad(res, up, sqnorm, code_sq, dist_sq, commit, True, "cpu")
        torch.set_num_threads(max(2, before))
        many = _ops.rvq_stages_grad(res, up, sqnorm, code_sq, dist_sq, commit, True, "cpu")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)  # rows are independent
    ref = _ops.rvq_stages_grad(res, up, sqnorm, code_sq, dist_sq, commit, True, "reference")
    torch.testing.assert_close(one, ref, rtol=1e-4, atol=1e-5 * (float(ref.abs().max()) + 1.0))


@pytest.mark.parametrize("kwargs", [{}, {"rotation_trick": False}, {"shared_codebook": True, "threshold_ema_dead_code": 2.0}])
def test_training_step_same_on_cpu_and_reference_backends(kwargs):
    """A training step through the C++ row kernels equals the step through the torch ones."""
    torch.manual_seed(0)
    base = ResidualVQ(dim=40, num_quantizers=3, codebook_size=16, precision="exact", **kwargs).train()
    with torch.no_grad():
        base.embed.copy_(torch.randn_like(base.embed))
        base.embed_avg.copy_(base.embed)
    x = torch.randn(4, 50, 40)
    results = []
    for backend in ("cpu", "reference"):
        m = ResidualVQ(dim=40, num_quantizers=3, codebook_size=16, precision="exact", backend=backend, **kwargs).train()
        m.load_state_dict(base.state_dict())
        xi = x.clone().requires_grad_()
        torch.manual_seed(1)  # dead-code replacement draws rows
        q, idx, losses = m(xi)
        ((q - x).square().mean() + losses.sum()).backward()
        results.append((q.detach(), idx, losses.detach(), xi.grad, m.embed.detach().clone(), m.embed_avg.clone()))
    (q1, i1, l1, g1, e1, a1), (q2, i2, l2, g2, e2, a2) = results
    assert torch.equal(i1, i2)
    assert torch.equal(q1, q2)
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(e1, e2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a1, a2, rtol=1e-5, atol=1e-6)


def _rvq(**kwargs):
    torch.manual_seed(0)
    m = ResidualVQ(dim=24, num_quantizers=3, codebook_size=16, **kwargs).train()
    with torch.no_grad():
        m.embed.copy_(torch.randn_like(m.embed))
        m.embed_avg.copy_(m.embed)
    return m


def _grad_of_step(m, x):
    xi = x.clone().requires_grad_()
    q, _, losses = m(xi)
    ((q - x).square().mean() + losses.sum()).backward()
    return xi.grad


def test_residual_buffer_is_reused_only_when_released():
    import copy

    m = _rvq()
    x1, x2 = torch.randn(3, 40, 24), torch.randn(3, 40, 24)
    _grad_of_step(m, x1)
    ptr = m._residual_buffer._t.data_ptr()
    _grad_of_step(m, x2)
    assert m._residual_buffer._t.data_ptr() == ptr  # released by the backward: reused

    # A step whose graph is still alive keeps its buffer: the next forward must not write it.
    fresh = copy.deepcopy(m)
    assert fresh._residual_buffer._t is None  # copies start without the scratch buffer
    xa = x1.clone().requires_grad_()
    qa, _, la = m(xa)
    held = m._residual_buffer._t.data_ptr()
    m(x2.clone().requires_grad_())
    assert m._residual_buffer._t.data_ptr() != held
    ((qa - x1).square().mean() + la.sum()).backward()
    torch.testing.assert_close(xa.grad, _grad_of_step(fresh, x1), rtol=0, atol=0)


def test_retained_graph_backward_twice_across_steps():
    m, ref = _rvq(), _rvq()
    x = torch.randn(2, 30, 24)
    xi = x.clone().requires_grad_()
    q, _, losses = m(xi)
    loss = (q - x).square().mean() + losses.sum()
    loss.backward(retain_graph=True)
    first = xi.grad.clone()
    _grad_of_step(m, torch.randn(2, 30, 24))  # another step in between
    xi.grad = None
    loss.backward()
    torch.testing.assert_close(xi.grad, first, rtol=0, atol=0)
    torch.testing.assert_close(first, _grad_of_step(ref, x), rtol=0, atol=0)


def test_reused_buffers_give_the_same_training_steps(monkeypatch):
    """Steps with the reused buffers equal steps that allocate every buffer afresh (ResidualVQ and
    GroupedResidualVQ, whose groups share one residual buffer)."""
    import copy

    from rvqfast.quantize import GroupedResidualVQ
    from rvqfast.quantize.scratch import StepBuffer

    torch.manual_seed(3)
    models = [_rvq(), GroupedResidualVQ(dim=24, groups=2, num_quantizers=3, codebook_size=16).train()]
    xs = [torch.randn(2, 30, 24) for _ in range(3)]

    def run(m):
        out = []
        for x in xs:
            xi = x.clone().requires_grad_()
            q, idx, losses = m(xi)
            ((q - x).square().mean() + losses.sum()).backward()
            out.append((q.detach(), idx, xi.grad, m.embed.detach().clone()))
        return out

    copies = [copy.deepcopy(m) for m in models]
    reused = [run(m) for m in models]
    monkeypatch.setattr(StepBuffer, "get", lambda self, shape, like: like.new_empty(shape, dtype=torch.float32))
    fresh = [run(m) for m in copies]
    for a, b in zip(reused, fresh):
        for step_a, step_b in zip(a, b):
            for ta, tb in zip(step_a, step_b):
                assert torch.equal(ta, tb)
