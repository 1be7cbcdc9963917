"""VectorQuantize: parity with vector-quantize-pytorch on the same codebook, layouts, errors."""
from __future__ import annotations


import pytest
import torch

import rvqfast
from rvqfast.quantize import VectorQuantize

vqp = pytest.importorskip("vector_quantize_pytorch")

# The reference-fallback RuntimeWarning (no C++ extension) is expected here, not a failure.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

BACKENDS = [b for b in ("reference", "cpu") if b in rvqfast.available_backends()]


def _pair(backend="auto", **kw):
    kw.setdefault("dim", 16)
    kw.setdefault("codebook_size", 32)
    theirs = vqp.VectorQuantize(**kw)
    theirs.train()
    x = torch.randn(4, 40, kw["dim"])
    if kw.get("accept_image_fmap") or kw.get("channel_last") is False:
        x = x.transpose(1, 2)
        if kw.get("accept_image_fmap"):
            x = x.reshape(4, kw["dim"], 5, 8)
    theirs(x)
    ours = VectorQuantize(**kw, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _run(m, x, train, **fw):
    m.train(train)
    xx = x.clone().requires_grad_(train)
    q, idx, loss = m(xx, **fw)
    if train:
        (q.float().square().sum() + 2.0 * loss).backward()
    return q, idx, loss, xx.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kw",
    [{}, {"rotation_trick": False}, {"use_cosine_sim": True}, {"codebook_dim": 8}, {"straight_through": True, "rotation_trick": False}],
    ids=["default", "ste", "cosine", "proj", "gumbel_st"],
)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_parity(kw, train, backend):
    theirs, ours = _pair(backend, **kw)
    x = torch.randn(3, 20, 16)
    qa, ia, la, ga = _run(ours, x, train)
    qb, ib, lb, gb = _run(theirs, x, train)
    assert ia.shape == ib.shape == (3, 20) and ia.dtype == torch.int64
    assert torch.equal(ia, ib)
    torch.testing.assert_close(qa, qb, atol=2e-5, rtol=1e-5)
    assert la.shape == lb.shape == ()
    torch.testing.assert_close(la, lb.detach(), atol=1e-6, rtol=1e-5)
    if train:
        torch.testing.assert_close(ga, gb, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(ours.codebook, theirs.codebook, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["channel_first", "image", "single"])
def test_layouts_match_theirs(layout):
    kw = {"channel_first": {"channel_last": False}, "image": {"accept_image_fmap": True}, "single": {}}[layout]
    theirs, ours = _pair(**kw)
    x = {"channel_first": torch.randn(2, 16, 9), "image": torch.randn(2, 16, 3, 4), "single": torch.randn(5, 16)}[layout]
    for train in (False, True):
        qa, ia, _, ga = _run(ours, x, train)
        qb, ib, _, gb = _run(theirs, x, train)
        assert qa.shape == qb.shape == x.shape
        assert ia.shape == ib.shape and torch.equal(ia, ib)
        torch.testing.assert_close(qa, qb, atol=2e-5, rtol=1e-5)
        if train:
            torch.testing.assert_close(ga, gb, atol=2e-5, rtol=1e-4)
    ours.eval()
    torch.testing.assert_close(ours.get_output_from_indices(ia), ours(x)[0])
    torch.testing.assert_close(ours.get_codes_from_indices(ia), theirs.get_codes_from_indices(ib))


def test_mask_and_cross_entropy_match_theirs():
    theirs, ours = _pair()
    x = torch.randn(2, 12, 16)
    mask = torch.rand(2, 12) > 0.4
    for train in (False, True):
        qa, ia, la, ga = _run(ours, x, train, mask=mask)
        qb, ib, lb, gb = _run(theirs, x, train, mask=mask)
        assert torch.equal(ia, ib) and torch.all(ia[~mask] == -1)
        torch.testing.assert_close(qa, qb, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(la, lb.detach(), atol=1e-6, rtol=1e-5)
    ours.eval(), theirs.eval()
    _, ia, _ = ours(x)
    _, ce_a = ours(x, indices=ia)
    _, ce_b = theirs(x, indices=ia)
    torch.testing.assert_close(ce_a, ce_b, atol=1e-5, rtol=1e-5)


def test_stochastic_sampling_differs_in_training_and_not_in_eval():
    vq = VectorQuantize(dim=4, codebook_size=8, stochastic_sample_codes=True, sample_codebook_temp=100.0, ema_update=False)
    x = torch.randn(1, 200, 4)
    _, i_eval, _ = vq.eval()(x)
    _, i_train, _ = vq.train()(x)
    assert (i_train != i_eval).float().mean() > 0.3  # hot sampling: far from argmin
    cold = VectorQuantize(dim=4, codebook_size=8, stochastic_sample_codes=True, sample_codebook_temp=1e-6, ema_update=False)
    cold.load_state_dict(vq.state_dict())
    _, i_cold, _ = cold.train()(x)
    assert torch.equal(i_cold, i_eval)


def test_codebook_property_and_setter():
    vq = VectorQuantize(dim=4, codebook_size=8)
    new = torch.randn(8, 4)
    vq.codebook = new
    assert torch.equal(vq.codebook, new)
    with pytest.raises(ValueError, match="codebook must have shape"):
        vq.codebook = torch.randn(7, 4)


def test_errors():
    with pytest.raises(TypeError, match="affine_param"):
        VectorQuantize(dim=4, codebook_size=8, affine_param=True)
    with pytest.raises(TypeError, match="not_an_option"):
        VectorQuantize(dim=4, codebook_size=8, not_an_option=1)
    with pytest.raises(ValueError, match="heads"):
        VectorQuantize(dim=4, codebook_size=8, heads=0)
    with pytest.raises(ValueError, match="separate_codebook_per_head"):
        VectorQuantize(dim=4, codebook_size=8, heads=2, separate_codebook_per_head=True,
                       orthogonal_reg_weight=1.0, orthogonal_reg_active_codes_only=True)
    with pytest.raises(ValueError, match="codebook_size"):
        VectorQuantize(dim=4, codebook_size=0)
    with pytest.raises(ValueError, match="exclusive"):
        VectorQuantize(dim=4, codebook_size=8, straight_through=True, rotation_trick=True)
    vq = VectorQuantize(dim=4, codebook_size=8)
    with pytest.raises(ValueError, match="last dim"):
        vq(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="mask"):
        vq(torch.randn(2, 4), mask=torch.ones(2, 1, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input(dtype):
    theirs, ours = _pair()
    x = torch.randn(2, 10, 16).to(dtype)
    qa, ia, la, ga = _run(ours, x, True)
    qb, ib, lb, gb = _run(theirs, x, True)
    assert qa.dtype == qb.dtype == dtype and ga.dtype == dtype
    assert (ia == ib).float().mean() > 0.9
    torch.testing.assert_close(la, lb.detach().float(), atol=1e-2, rtol=1e-2)
