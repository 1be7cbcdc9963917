"""ResidualVQ: parity with vector-quantize-pytorch on the same codebooks, and its behaviours."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rvqfast
from rvqfast.quantize import ResidualVQ
from oracle import assert_nearest

vqp = pytest.importorskip("vector_quantize_pytorch")

# The reference-fallback RuntimeWarning (no C++ extension) is expected here, not a failure.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

BACKENDS = [b for b in ("reference", "cpu") if b in rvqfast.available_backends()]


def _pair(backend="auto", warm=True, **kw):
    """Their ResidualVQ, moved off its init by a few EMA steps, and ours loaded from it."""
    kw.setdefault("dim", 32)
    kw.setdefault("num_quantizers", 3)
    kw.setdefault("codebook_size", 64)
    theirs = vqp.ResidualVQ(**kw)
    if warm:
        theirs.train()
        for _ in range(2):
            theirs(torch.randn(4, 64, kw["dim"]))
    ours = ResidualVQ(**kw, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _run(m, x, train, loss_w=3.0, **fw):
    m.train(train)
    xx = x.clone().requires_grad_(train)
    out = m(xx, **fw)
    q, idx, losses = out[:3]
    if train:
        (q.float().square().sum() + loss_w * losses.sum()).backward()
    return q, idx, losses, xx.grad


CASES = [
    {},
    {"rotation_trick": False},
    {"use_cosine_sim": True},
    {"codebook_dim": 16},
    {"shared_codebook": True},
    {"learnable_codebook": True, "ema_update": False},
    {"commitment_weight": 0.25, "decay": 0.9},
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_parity_with_vector_quantize_pytorch(kw, train, backend):
    theirs, ours = _pair(backend, **kw)
    x = torch.randn(3, 40, 32)
    qa, ia, la, ga = _run(ours, x, train)
    qb, ib, lb, gb = _run(theirs, x, train)
    assert ia.dtype == torch.int64 and ia.shape == ib.shape == (3, 40, 3)
    assert torch.equal(ia, ib)
    assert qa.shape == qb.shape and qa.dtype == qb.dtype
    torch.testing.assert_close(qa, qb, atol=2e-5, rtol=1e-5)
    assert la.shape == lb.shape == (3,)
    torch.testing.assert_close(la, lb.detach(), atol=1e-6, rtol=1e-5)
    if train:
        torch.testing.assert_close(ga, gb, atol=2e-5, rtol=1e-4)
        # EMA / dead-code state after the step.
        torch.testing.assert_close(ours.codebooks.detach(), theirs.codebooks.detach(), atol=1e-5, rtol=1e-5)
        cs_theirs = torch.stack([l._codebook.cluster_size[0] for l in theirs.layers])
        cs_ours = ours.cluster_size.expand(3, -1) if kw.get("shared_codebook") else ours.cluster_size
        torch.testing.assert_close(cs_ours, cs_theirs)
        if kw.get("learnable_codebook"):
            g_theirs = torch.stack([l._codebook.embed.grad[0] for l in theirs.layers])
            torch.testing.assert_close(ours.embed.grad, g_theirs, atol=1e-7, rtol=1e-4)
    else:
        assert torch.all(la == 0)


def test_default_gradient_is_rotation_not_identity():
    theirs, ours = _pair()
    x = torch.randn(2, 16, 32)
    _, _, _, g_rot = _run(ours, x, True, loss_w=0.0)
    ours_st = ResidualVQ(dim=32, num_quantizers=3, codebook_size=64, rotation_trick=False)
    ours_st.load_state_dict(theirs.state_dict())
    _, _, _, g_st = _run(ours_st, x, True, loss_w=0.0)
    assert ours.rotation_trick and not ours_st.rotation_trick
    assert not torch.allclose(g_rot, g_st, atol=1e-3)


def test_ema_update_matches_formula_without_kmeans():
    torch.manual_seed(1)
    decay, eps, k = 0.7, 1e-4, 16
    rvq = ResidualVQ(dim=8, num_quantizers=1, codebook_size=k, decay=decay, eps=eps, kmeans_init=False)
    before = rvq.embed[0].clone()
    x = torch.randn(2, 50, 8)
    _, idx, _ = rvq.train()(x)
    flat, ind = x.reshape(-1, 8), idx.reshape(-1)
    counts = torch.bincount(ind, minlength=k).float()
    sums = torch.zeros(k, 8).index_add_(0, ind, flat)
    cs = torch.ones(k) * decay + counts * (1 - decay)
    avg = before * decay + sums * (1 - decay)
    smooth = (cs + eps) / (cs.sum() + k * eps) * cs.sum()
    torch.testing.assert_close(rvq.cluster_size[0], cs)
    torch.testing.assert_close(rvq.embed[0], avg / smooth[:, None], atol=1e-6, rtol=1e-5)
    # Eval forwards never touch the codebook.
    snap = rvq.embed.clone()
    rvq.eval()(x)
    assert torch.equal(rvq.embed, snap)


def test_kmeans_init_same_as_theirs_with_same_seed():
    kw = dict(dim=16, num_quantizers=2, codebook_size=32, kmeans_init=True, kmeans_iters=5)
    theirs = vqp.ResidualVQ(**kw)
    ours = ResidualVQ(**kw)
    assert not bool(ours.initted.any())
    x = torch.randn(4, 64, 16)
    torch.manual_seed(5)
    _, ib, _ = theirs.train()(x)
    torch.manual_seed(5)
    _, ia, _ = ours.train()(x)
    assert bool(ours.initted.all())
    assert torch.equal(ia, ib)
    torch.testing.assert_close(ours.codebooks, theirs.codebooks, atol=1e-5, rtol=1e-5)


def test_dead_codes_are_replaced_by_batch_vectors_in_training_only():
    rvq = ResidualVQ(dim=8, num_quantizers=2, codebook_size=32, threshold_ema_dead_code=2.0, decay=0.5)
    x = torch.randn(1, 8, 8) * 5 + 20  # far from every code: few codes win, the rest die
    rvq.eval()(x)
    assert torch.all(rvq.cluster_size == 1)  # eval: nothing changes
    rvq.train()(x)
    # Unused codes' EMA counts fell to 0.5 < 2: dead. There are more dead codes than the 8 batch
    # vectors, so exactly 8 are replaced now (reset to the threshold), each by a batch vector.
    replaced = rvq.cluster_size[0] == 2.0
    assert int(replaced.sum()) == 8
    rows = x.reshape(-1, 8)
    for code in rvq.embed[0][replaced]:
        assert (rows - code).abs().amax(1).min() < 1e-5
    torch.testing.assert_close(rvq.embed_avg[0][replaced], rvq.embed[0][replaced] * 2.0)


def test_quantize_dropout_drops_trailing_stages_in_training_only():
    rvq = ResidualVQ(dim=8, num_quantizers=5, codebook_size=16, quantize_dropout=True, quantize_dropout_cutoff_index=1)
    x = torch.randn(2, 10, 8)
    seen = set()
    for seed in range(30):
        torch.manual_seed(seed)
        _, idx, losses = rvq.train()(x)
        kept = int((idx[0, 0] >= 0).sum())
        seen.add(kept)
        assert kept >= 2
        assert torch.all(idx[..., :kept] >= 0) and torch.all(idx[..., kept:] == -1)
        assert torch.all(losses[kept:] == 0) and torch.all(losses[:kept] > 0)
    assert len(seen) >= 3
    _, idx, _ = rvq.eval()(x)
    assert torch.all(idx >= 0)
    # Truncated indices decode (the missing stages count as dropped).
    out = rvq.get_output_from_indices(idx[..., :2])
    torch.testing.assert_close(out, rvq.get_codes_from_indices(idx)[:2].sum(0))


def test_dropout_seed_use_matches_theirs():
    theirs, ours = _pair(quantize_dropout=True, num_quantizers=4)
    x = torch.randn(2, 12, 32)
    for seed in range(5):
        torch.manual_seed(seed)
        _, ia, _, _ = _run(ours, x, True)
        torch.manual_seed(seed)
        _, ib, _, _ = _run(theirs, x, True)
        assert torch.equal(ia, ib)


def test_unknown_and_unsupported_kwargs_raise_type_error_naming_them():
    with pytest.raises(TypeError, match="codebook_sizee"):
        ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, codebook_sizee=3)
    with pytest.raises(TypeError, match="beam_size"):
        ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, beam_size=4)
    with pytest.raises(ValueError, match="heads"):
        ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, heads=2)
    with pytest.raises(ValueError, match="learnable_codebook"):
        ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, learnable_codebook=True)
    with pytest.raises(ValueError, match="backend"):
        ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, backend="gpu")
    with pytest.raises(ValueError, match="num_quantizers"):
        ResidualVQ(dim=8, num_quantizers=0, codebook_size=16)


def test_bad_inputs_raise_value_errors():
    rvq = ResidualVQ(dim=8, num_quantizers=2, codebook_size=16)
    with pytest.raises(ValueError, match="last dim"):
        rvq(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="float32"):
        rvq(torch.randint(0, 3, (2, 3, 8)))
    with pytest.raises(ValueError, match="NaN"):
        rvq(torch.full((2, 3, 8), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        rvq.train()(torch.full((2, 3, 8), float("inf")))
    with pytest.raises(ValueError, match="mask"):
        rvq(torch.randn(2, 3, 8), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        rvq(torch.randn(8))
    with pytest.raises(ValueError, match="out of range"):
        rvq.get_output_from_indices(torch.full((2, 3, 2), 16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input(dtype):
    theirs, ours = _pair()
    x = torch.randn(2, 20, 32)
    q32, i32, _, _ = _run(ours, x, False)
    q, i, losses, g = _run(copy.deepcopy(ours), x.to(dtype), True)
    assert q.dtype == dtype and i.dtype == torch.int64 and losses.dtype == torch.float32
    assert g.dtype == dtype and torch.isfinite(g.float()).all()
    # Rounding the input may flip a near-tie; most indices must agree with fp32.
    assert (i == i32).float().mean() > 0.9


@pytest.mark.parametrize("train", [False, True])
def test_mask_matches_theirs(train):
    theirs, ours = _pair()
    x = torch.randn(2, 16, 32)
    mask = torch.rand(2, 16) > 0.3
    qa, ia, la, ga = _run(ours, x, train, mask=mask)
    qb, ib, lb, gb = _run(theirs, x, train, mask=mask)
    assert torch.equal(ia, ib) and torch.all(ia[~mask] == -1)
    torch.testing.assert_close(qa, qb, atol=2e-5, rtol=1e-5)
    assert torch.all(qa[~mask] == 0)
    torch.testing.assert_close(la, lb.detach(), atol=1e-6, rtol=1e-5)
    if train:
        torch.testing.assert_close(ga, gb, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(ours.codebooks, theirs.codebooks, atol=1e-5, rtol=1e-5)


def test_layouts_channel_first_image_and_single_token():
    rvq = ResidualVQ(dim=8, num_quantizers=3, codebook_size=16).eval()
    x = torch.randn(2, 5, 8)
    q, idx, _ = rvq(x)
    cf = ResidualVQ(dim=8, num_quantizers=3, codebook_size=16, channel_last=False).eval()
    cf.load_state_dict(rvq.state_dict())
    q2, idx2, _ = cf(x.transpose(1, 2))
    assert q2.shape == (2, 8, 5) and torch.equal(idx2, idx) and torch.equal(q2, q.transpose(1, 2))
    im = ResidualVQ(dim=8, num_quantizers=3, codebook_size=16, accept_image_fmap=True).eval()
    im.load_state_dict(rvq.state_dict())
    img = torch.randn(2, 8, 3, 4)
    q3, idx3, _ = im(img)
    assert q3.shape == img.shape and idx3.shape == (2, 3, 4, 3)
    _, ref_idx, _ = rvq(img.permute(0, 2, 3, 1).reshape(2, 12, 8))
    assert torch.equal(idx3.reshape(2, 12, 3), ref_idx)
    torch.testing.assert_close(im.get_output_from_indices(idx3), q3)
    q4, idx4, _ = rvq(x[:, 0])
    assert q4.shape == (2, 8) and idx4.shape == (2, 3) and torch.equal(idx4, idx[:, 0])


def test_return_all_codes_and_decode_match_theirs():
    theirs, ours = _pair()
    x = torch.randn(2, 7, 32)
    theirs.eval(), ours.eval()
    qa, ia, _, ca = ours(x, return_all_codes=True)
    qb, ib, _, cb = theirs(x, return_all_codes=True)
    assert ca.shape == cb.shape == (3, 2, 7, 32)
    torch.testing.assert_close(ca, cb)
    torch.testing.assert_close(ours.get_output_from_indices(ia), theirs.get_output_from_indices(ib))
    torch.testing.assert_close(ours.get_output_from_indices(ia), qa, atol=1e-5, rtol=1e-5)
    assert ours.codebooks.shape == (3, 64, 32)


def test_cross_entropy_with_given_indices():
    rvq = ResidualVQ(dim=8, num_quantizers=2, codebook_size=16).eval()
    x = torch.randn(2, 6, 8)
    q, idx, _ = rvq(x)
    q2, ce = rvq(x, indices=idx)
    torch.testing.assert_close(q2, q, atol=1e-5, rtol=1e-5)
    assert ce.ndim == 0 and ce > 0
    _, ce_wrong = rvq(x, indices=(idx + 1) % 16)
    assert ce_wrong > ce


@pytest.mark.skipif(len(BACKENDS) < 2, reason="only one backend built")
def test_backends_agree():
    x = torch.randn(4, 50, 32)
    mods = {}
    for b in BACKENDS:
        torch.manual_seed(3)
        mods[b] = ResidualVQ(dim=32, num_quantizers=3, codebook_size=64, backend=b)
    outs = {b: _run(m, x, True) for b, m in mods.items()}
    ref = outs["reference"]
    for b, o in outs.items():
        assert torch.equal(o[1], ref[1])
        torch.testing.assert_close(o[3], ref[3], atol=1e-5, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    n=st.integers(1, 9),
    d=st.integers(1, 12),
    k=st.integers(1, 20),
    q=st.integers(1, 4),
    rotation=st.booleans(),
)
def test_property_parity_small_shapes(b, n, d, k, q, rotation):
    torch.manual_seed(b * 1000 + n * 100 + d * 10 + k + q)
    theirs, ours = _pair(dim=d, codebook_size=k, num_quantizers=q, rotation_trick=rotation and d > 1)
    x = torch.randn(b, n, d)
    cbs = ours.codebooks.detach().clone()  # before the step's EMA update
    qa, ia, la, ga = _run(ours, x, True)
    qb, ib, lb, gb = _run(theirs, x, True)
    if not torch.equal(ia, ib):
        # Their sqrt-of-expansion distance may flip a near-tie; ours must still be a nearest
        # code of the first stage where the two differ (later stages then see other residuals).
        stage = int((ia != ib).reshape(-1, q).any(0).nonzero()[0])
        flat = ia.reshape(-1, q)
        r = x.reshape(-1, d).clone()
        for j in range(stage):
            r -= cbs[j][flat[:, j]]
        assert_nearest(r, cbs[stage], flat[:, stage])
        return
    torch.testing.assert_close(qa, qb, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(la, lb.detach(), atol=1e-5, rtol=1e-4)


def test_training_forward_under_no_grad_updates_like_theirs():
    theirs, ours = _pair()
    x = torch.randn(2, 30, 32)
    with torch.no_grad():
        _, ia, la = ours.train()(x)
        _, ib, lb = theirs.train()(x)
    assert torch.equal(ia, ib)
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(ours.codebooks, theirs.codebooks, atol=1e-5, rtol=1e-5)


def test_eval_forward_initialises_kmeans_codebooks_when_not_distributed():
    rvq = ResidualVQ(dim=8, num_quantizers=2, codebook_size=8, kmeans_init=True).eval()
    x = torch.randn(4, 16, 8)
    _, idx, _ = rvq(x)
    assert bool(rvq.initted.all()) and rvq.embed.abs().sum() > 0
    assert len(idx.unique()) > 1


def test_training_step_frees_its_activations(monkeypatch):
    # Regression: the autograd node once kept its own outputs alive (output -> grad_fn -> ctx ->
    # output), a cycle through the C++ graph that gc cannot break: every step leaked.
    import gc
    import weakref

    from rvqfast.quantize import core

    refs = []
    original = core.stages_autograd

    def spy(x, embed, sp):
        out = original(x, embed, sp)
        refs.append(weakref.ref(out[0]))
        return out

    monkeypatch.setattr(core, "stages_autograd", spy)
    rvq = ResidualVQ(dim=16, num_quantizers=3, codebook_size=8, kmeans_init=False)
    x = torch.randn(2, 5, 16, requires_grad=True)
    for _ in range(3):
        q, _, loss = rvq(x)
        (q.sum() + loss.sum()).backward()
        del q, loss
    gc.collect()
    assert refs and all(r() is None for r in refs)
