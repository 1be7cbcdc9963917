"""The grouped ops (``grouped_rvq_encode``, ``grouped_nearest_code``) on every backend that runs
here, against the per-group single-codebook ops and the brute-force oracle; and
GroupedResidualVQ's eval, which runs all groups and stages through one grouped op call."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rvqfast._ops as raw_ops
from oracle import assert_nearest
from rvqfast import ops
from rvqfast.backends import available_backends
from rvqfast.quantize import GroupedResidualVQ

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# CPU tensors run on the C++ and reference backends, and on Triton's interpreter in CI.
BACKENDS = [b for b in ("reference", "cpu") if b in available_backends()]
if INTERPRET and "triton" in available_backends():
    BACKENDS.append("triton")
# Triton's grouped ops loop over its single-group kernels (tested with every precision in
# test_ops_triton.py); exact suffices to show the loop, and the interpreter is slow.
PRECISIONS = {"reference": ["exact"], "cpu": ["exact", "certified"], "triton": ["exact"]}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _cases(backend: str):
    return [(backend, p) for p in PRECISIONS[backend]]


CASES = [c for b in BACKENDS for c in _cases(b)]


def _data(seed: int, g: int, n: int, q: int, k: int, d: int, dtype: torch.dtype, dup: bool):
    gen = torch.Generator().manual_seed(seed)
    cbs = torch.randn(g, q, k, d, generator=gen) * torch.logspace(0, -1, q).view(1, q, 1, 1)
    if dup:  # duplicated codes, rows sitting on codes: exact ties at stage 0
        cbs = torch.cat([cbs, cbs], 2)
        x = torch.stack([cbs[i, 0][torch.randint(0, 2 * k, (n,), generator=gen)] for i in range(g)])
    else:
        x = torch.randn(g, n, d, generator=gen)
    return x.to(dtype), cbs.to(dtype)


def _check_encode(x, cbs, idx, quant):
    """Per group: every stage's index is a (near-)nearest code of the residual left so far, and
    ``quant`` is the sum of the chosen codes."""
    for g in range(x.shape[0]):
        residual = x[g].float().clone()
        for q in range(cbs.shape[1]):
            assert_nearest(residual, cbs[g, q], idx[g, :, q])
            residual -= cbs[g, q].float()[idx[g, :, q]]
        torch.testing.assert_close(quant[g], x[g].float() - residual, rtol=1e-5, atol=1e-4)


def _few(n: int):
    return settings(max_examples=min(n, int(os.environ.get("RVQFAST_HYPOTHESIS_EXAMPLES", "30"))), deadline=None)


@pytest.mark.parametrize("backend,precision", CASES)
@_few(12)
@given(
    st.integers(1, 3), st.integers(1, 40), st.integers(1, 3), st.integers(1, 24),
    st.sampled_from([1, 3, 16, 33, 130]), st.sampled_from(DTYPES), st.booleans(), st.integers(0, 2**31 - 1),
)
def test_grouped_rvq_encode_equals_per_group(backend, precision, g, n, q, k, d, dtype, dup, seed):
    x, cbs = _data(seed, g, n, q, k, d, dtype, dup)
    idx, quant = ops.grouped_rvq_encode(x, cbs, backend=backend, precision=precision)
    assert idx.shape == (g, n, q) and idx.dtype == torch.int64
    assert quant.shape == (g, n, d) and quant.dtype == torch.float32
    # The same kernels run per group: bit-identical to the backend's single-group op.
    for i in range(g):
        ri, rq = ops.rvq_encode(x[i], cbs[i], backend=backend, precision=precision)
        assert torch.equal(idx[i], ri) and torch.equal(quant[i], rq)
    _check_encode(x, cbs, idx, quant)
    if dup:  # rows on a duplicated code: stage 0 picks the lowest of the tied indices
        first = torch.stack([torch.cdist(x[i].float(), cbs[i, 0].float()).argmin(1) for i in range(g)])
        assert torch.equal(idx[..., 0], first)


@pytest.mark.parametrize("backend,precision", CASES)
@_few(12)
@given(
    st.integers(1, 3), st.integers(1, 40), st.integers(1, 24), st.sampled_from([1, 7, 64, 130]),
    st.sampled_from(DTYPES), st.booleans(), st.integers(0, 2**31 - 1),
)
def test_grouped_nearest_code_equals_per_group(backend, precision, g, n, k, d, dtype, dup, seed):
    x, cbs = _data(seed, g, n, 1, k, d, dtype, dup)
    cbs = cbs[:, 0]
    idx, dist = ops.grouped_nearest_code(x, cbs, backend=backend, precision=precision)
    assert idx.shape == (g, n) and dist.shape == (g, n) and dist.dtype == torch.float32
    for i in range(g):
        ri, rd = ops.nearest_code(x[i], cbs[i], backend=backend, precision=precision)
        assert torch.equal(idx[i], ri) and torch.equal(dist[i], rd)
        assert_nearest(x[i].float(), cbs[i].float(), idx[i])


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_shapes_and_ties(backend):
    # G = Q = K = N = 1
    x, cb = torch.randn(1, 1, 5), torch.randn(1, 1, 1, 5)
    idx, quant = ops.grouped_rvq_encode(x, cb, backend=backend)
    assert idx.tolist() == [[[0]]] and torch.equal(quant, cb[:, 0].float())
    # Every code of every group equal (small integers: every distance exact in any summation
    # order): the lowest index wins everywhere.
    cbs = torch.randint(-4, 5, (3, 2, 1, 6)).float().expand(3, 2, 9, 6).contiguous()
    x = torch.randint(-4, 5, (3, 17, 6)).float()
    idx, _ = ops.grouped_rvq_encode(x, cbs, backend=backend, precision="exact")
    assert not idx.any()
    idx, _ = ops.grouped_nearest_code(x, cbs[:, 0], backend=backend, precision="exact")
    assert not idx.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_group_dim(backend):
    torch.manual_seed(1)
    x, cbs = torch.randn(2, 9, 1536), torch.randn(2, 2, 12, 1536)
    idx, quant = ops.grouped_rvq_encode(x, cbs, backend=backend, precision="exact")
    _check_encode(x, cbs, idx, quant)


def test_bad_inputs_name_the_argument():
    x, cbs = torch.randn(2, 5, 4), torch.randn(2, 3, 8, 4)
    with pytest.raises(ValueError, match=r"x must have 3 dims \(G, N, D\)"):
        ops.grouped_rvq_encode(x[0], cbs)
    with pytest.raises(ValueError, match=r"codebooks must have 4 dims \(G, Q, K, D\)"):
        ops.grouped_rvq_encode(x, cbs[0])
    with pytest.raises(ValueError, match="x has G=2 groups but codebooks has 3"):
        ops.grouped_rvq_encode(x, torch.randn(3, 3, 8, 4))
    with pytest.raises(ValueError, match="x has D=4 but codebooks has D=5"):
        ops.grouped_rvq_encode(x, torch.randn(2, 3, 8, 5))
    with pytest.raises(ValueError, match="codebooks has no stages"):
        ops.grouped_rvq_encode(x, cbs[:, :0])
    with pytest.raises(ValueError, match="codebooks is empty"):
        ops.grouped_nearest_code(x, cbs[:, 0, :0])
    with pytest.raises(ValueError, match="x is an empty batch"):
        ops.grouped_rvq_encode(x[:, :0], cbs)
    with pytest.raises(ValueError, match="x has no groups"):
        ops.grouped_nearest_code(x[:0], cbs[:0, 0])
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        ops.grouped_rvq_encode(bad, cbs)
    with pytest.raises(ValueError, match="codebooks must be float32"):
        ops.grouped_nearest_code(x, cbs[:, 0].long())
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        ops.grouped_rvq_encode(x, cbs, backend="gpu")


def test_torch_compile_fullgraph_through_the_op():
    torch._dynamo.reset()
    x, cbs = torch.randn(2, 30, 8), torch.randn(2, 3, 16, 8)

    def f(x, cbs):
        idx, quant = ops.grouped_rvq_encode(x, cbs)
        nidx, dist = ops.grouped_nearest_code(x, cbs[:, 0])
        return idx, quant * 2, nidx, dist

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x, cbs)
    for a, b in zip(got, f(x, cbs)):
        assert torch.equal(a, b)


class _CountOps:
    """Counts the search ops the quantizer modules call (they call ``rvqfast._ops`` directly)."""

    def __init__(self, monkeypatch):
        self.calls: dict[str, int] = {}
        for name in ("grouped_rvq_encode", "grouped_nearest_code", "rvq_encode", "nearest_code"):
            fn = getattr(raw_ops, name)
            monkeypatch.setattr(raw_ops, name, self._wrap(name, fn))

    def _wrap(self, name, fn):
        def counted(*a, **k):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*a, **k)

        return counted


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(codebook_dim=4), dict(shared_codebook=True), dict(learnable_codebook=True, ema_update=False),
     dict(use_cosine_sim=True)],
    ids=["plain", "projected", "shared", "learnable", "cosine"],
)
def test_grouped_residual_vq_eval_is_one_op_call_and_matches_vqp(kwargs, monkeypatch):
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    theirs = vqp.GroupedResidualVQ(dim=12, groups=3, num_quantizers=4, codebook_size=16, **kwargs).eval()
    ours = GroupedResidualVQ(dim=12, groups=3, num_quantizers=4, codebook_size=16, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 25, 12)
    mask = torch.rand(2, 25) > 0.3
    for fwd in (dict(), dict(mask=mask)):
        counter = _CountOps(monkeypatch)
        qo, io, lo = ours(x, **fwd)
        # Cosine codebooks search normalised residuals: one grouped search per stage.
        want = {"grouped_nearest_code": 4} if kwargs.get("use_cosine_sim") else {"grouped_rvq_encode": 1}
        assert counter.calls == want, counter.calls
        qt, it, lt = theirs(x, **fwd)
        assert torch.equal(io, it)
        torch.testing.assert_close(qo, qt, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lo, lt)
        monkeypatch.undo()
    if kwargs.get("learnable_codebook"):
        # Eval output is the codes themselves: a loss on it reaches the learnable codebook.
        qo, _, _ = ours(x)
        qo.square().sum().backward()
        assert ours.embed.grad is not None and ours.embed.grad.norm() > 0


def test_grouped_eval_in_half_precision_and_compiled():
    torch.manual_seed(0)
    vq = GroupedResidualVQ(dim=16, groups=2, num_quantizers=3, codebook_size=16).eval()
    x = torch.randn(2, 20, 16)
    q, idx, _ = vq(x)
    for dtype in (torch.float16, torch.bfloat16):
        qh, idxh, _ = vq(x.to(dtype))
        assert qh.dtype == dtype
        # The search runs in fp32 on the rounded inputs: the per-group reference on those.
        xr = x.to(dtype).float()
        ref = torch.stack([ops.rvq_encode(xr[..., 8 * g: 8 * (g + 1)].reshape(-1, 8), vq.codebooks[g], backend="reference")[0]
                           for g in range(2)]).reshape(idxh.shape)
        assert torch.equal(idxh, ref)
    torch._dynamo.reset()
    qc, idxc, _ = torch.compile(vq, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(idxc, idx) and torch.equal(qc, q)


def _train_step(vq, x, seed, **fwd):
    xx = x.clone().requires_grad_()
    torch.manual_seed(seed)
    q, idx, loss = vq(xx, **fwd)
    (q.square().mean() + loss.sum()).backward()
    return q.detach(), idx, loss.detach(), xx.grad


@pytest.mark.parametrize(
    "kwargs",
    [dict(kmeans_init=True, threshold_ema_dead_code=2), dict(threshold_ema_dead_code=2),
     dict(codebook_dim=4, rotation_trick=False), dict(shared_codebook=True),
     dict(learnable_codebook=True, ema_update=False), dict(use_cosine_sim=True)],
    ids=["kmeans-dead-codes", "dead-codes", "projected-straight-through", "shared", "learnable", "cosine"],
)
def test_grouped_training_searches_each_stage_in_one_call(kwargs, monkeypatch):
    """Training: one grouped search per stage for all groups, the same steps (outputs, indices,
    losses, input gradients, codebooks) as the groups run one after another (random draws of
    k-means init and dead-code replacement included), and as vector-quantize-pytorch (whose
    k-means init and dead-code replacement draw differently: compared without them)."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    theirs = vqp.GroupedResidualVQ(dim=12, groups=3, num_quantizers=3, codebook_size=16, **kwargs).train()
    ours = GroupedResidualVQ(dim=12, groups=3, num_quantizers=3, codebook_size=16, **kwargs).train()
    ours.load_state_dict(theirs.state_dict())
    one_by_one = copy.deepcopy(ours)
    one_by_one._groups_in_lockstep = lambda: False
    mask = torch.rand(2, 30) > 0.2
    # Step 1 may k-means initialise (the groups then run one after another); the later steps
    # search all groups per stage in one call. Growing inputs leave dead codes to replace.
    for step, fwd in enumerate((dict(), dict(), dict(mask=mask))):
        x = torch.randn(2, 30, 12) * (1 + 2 * step)
        counter = _CountOps(monkeypatch)
        got = _train_step(ours, x, step, **fwd)
        monkeypatch.undo()
        if step or not kwargs.get("kmeans_init"):
            assert counter.calls == {"grouped_nearest_code": 3}, counter.calls
        wants = [(one_by_one, _train_step(one_by_one, x, step, **fwd))]
        # vqp 1.32's masked cosine commitment loss is taken on the unnormalised input (25.0 here
        # where the normalised rows give 0.08): that case is compared without vqp.
        cosine_mask = kwargs.get("use_cosine_sim") and "mask" in fwd
        if not (kwargs.get("kmeans_init") or kwargs.get("threshold_ema_dead_code") or cosine_mask):
            wants.append((theirs, _train_step(theirs, x, step, **fwd)))
        for module, want in wants:
            assert torch.equal(got[1], want[1])
            for a, b in zip(got[:1] + got[2:], want[:1] + want[2:]):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(ours.codebooks, module.codebooks, rtol=1e-5, atol=1e-6)
