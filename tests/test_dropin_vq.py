"""Drop-in parity with vector-quantize-pytorch for the codebook quantizers beyond plain VQ/RVQ:
GroupedResidualVQ, multi-head VectorQuantize, orthogonal regularisation. Each case loads the
vqp module's state dict into ours and compares indices, outputs, losses, input and codebook
gradients and the EMA-updated codebooks after one training step."""
from __future__ import annotations

import pytest
import torch

import rvqfast
from rvqfast.quantize import GroupedResidualVQ, ResidualVQ, VectorQuantize

vqp = pytest.importorskip("vector_quantize_pytorch")


def _same_step(theirs, ours, x, *, embed_of_theirs, embed_of_ours, loss_sum=lambda l: l.sum()):
    """Eval forward then one training step on both; everything must agree."""
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval(), ours.eval()
    with torch.no_grad():
        qt, it, _ = theirs(x)
        qo, io, _ = ours(x)
    assert torch.equal(it, io)
    torch.testing.assert_close(qo, qt)
    theirs.train(), ours.train()
    xt, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    qt, it, lt = theirs(xt)
    qo, io, lo = ours(xo)
    assert torch.equal(it, io) and lo.shape == lt.shape
    torch.testing.assert_close(qo, qt, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lo, lt, rtol=1e-5, atol=1e-6)
    (qt.square().mean() + loss_sum(lt)).backward()
    (qo.square().mean() + loss_sum(lo)).backward()
    assert xo.grad.norm() > 0
    torch.testing.assert_close(xo.grad, xt.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(embed_of_ours(ours), embed_of_theirs(theirs), rtol=1e-5, atol=1e-6)
    return theirs, ours, it


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(codebook_dim=4), dict(shared_codebook=True), dict(use_cosine_sim=True), dict(orthogonal_reg_weight=0.5)],
    ids=["plain", "projected", "shared", "cosine", "orthogonal"],
)
def test_grouped_residual_vq_matches_vqp(kwargs):
    torch.manual_seed(0)
    theirs = vqp.GroupedResidualVQ(dim=16, groups=2, num_quantizers=3, codebook_size=16, **kwargs)
    ours = GroupedResidualVQ(dim=16, groups=2, num_quantizers=3, codebook_size=16, **kwargs)
    x = torch.randn(2, 40, 16)
    theirs, ours, idx = _same_step(
        theirs, ours, x, embed_of_theirs=lambda m: m.codebooks, embed_of_ours=lambda m: m.codebooks
    )
    assert idx.shape == (2, 2, 40, 3)
    # One engine, one codebook tensor for every group and stage.
    assert ours.embed.shape[0] == (2 if kwargs.get("shared_codebook") else 6)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours.get_output_from_indices(idx), theirs.get_output_from_indices(idx))
    torch.testing.assert_close(ours.get_codes_from_indices(idx), theirs.get_codes_from_indices(idx))
    q, i, l, codes = ours(x, return_all_codes=True)
    assert codes.shape == (2, 3, 2, 40, ours.codebook_dim)


def test_grouped_cross_entropy_and_layouts():
    torch.manual_seed(0)
    theirs = vqp.GroupedResidualVQ(dim=8, groups=2, num_quantizers=2, codebook_size=8).eval()
    ours = GroupedResidualVQ(dim=8, groups=2, num_quantizers=2, codebook_size=8).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 10, 8)
    qt, idx, _ = theirs(x)
    qo, ceo = ours(x, indices=idx)
    torch.testing.assert_close(qo, qt)
    # vqp 1.32's own grouped cross-entropy path fails to unpack; reference: per group and stage,
    # cross-entropy of -distance logits of the residual the given codes leave.
    ref = 0.0
    for g, chunk in enumerate(x.chunk(2, -1)):
        r = chunk.reshape(-1, 4)
        for q in range(2):
            cb = theirs.codebooks[g, q]
            tgt = idx[g, ..., q].reshape(-1)
            ref = ref + torch.nn.functional.cross_entropy(-torch.cdist(r, cb), tgt)
            r = r - cb[tgt]
    torch.testing.assert_close(ceo, ref, rtol=1e-4, atol=1e-5)
    # Image feature maps (vqp 1.32 fails on them in GroupedResidualVQ): the same as the tokens
    # laid out as a sequence.
    ours_img = GroupedResidualVQ(dim=8, groups=2, num_quantizers=2, codebook_size=8, accept_image_fmap=True).eval()
    ours_img.load_state_dict(theirs.state_dict())
    fmap = torch.randn(2, 8, 3, 5)
    qo, io, _ = ours_img(fmap)
    qs, is_, _ = ours(fmap.flatten(2).transpose(1, 2))
    assert io.shape == (2, 2, 3, 5, 2) and torch.equal(io.flatten(2, 3), is_)
    torch.testing.assert_close(qo.flatten(2).transpose(1, 2), qs)
    torch.testing.assert_close(ours_img.get_output_from_indices(io), qo)
    with pytest.raises(ValueError, match="divisible by groups"):
        GroupedResidualVQ(dim=10, groups=3, num_quantizers=2, codebook_size=8)


def test_grouped_dropout_masks_and_freeze():
    ours = GroupedResidualVQ(dim=8, groups=2, num_quantizers=4, codebook_size=8, quantize_dropout=True)
    x = torch.randn(2, 6, 8)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    _, idx, losses = ours(x, mask=mask)
    # One dropout cutoff for all groups; masked positions get -1 everywhere.
    assert torch.equal((idx[0] == -1).all(dim=(0, 1)), (idx[1] == -1).all(dim=(0, 1)))
    assert bool((idx[:, 1, 4:] == -1).all())
    before = ours.embed.clone()
    ours(x, freeze_codebook=True)
    assert torch.equal(ours.embed, before)
    ours(x)
    assert not torch.equal(ours.embed, before)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(heads=4, separate_codebook_per_head=True, codebook_dim=4),
        dict(heads=4, codebook_dim=4),
        dict(heads=2, use_cosine_sim=True),
        dict(heads=4, separate_codebook_per_head=True, codebook_dim=4, orthogonal_reg_weight=0.3),
        dict(orthogonal_reg_weight=0.5, orthogonal_reg_active_codes_only=True),
        dict(orthogonal_reg_weight=0.5, orthogonal_reg_max_codes=64),  # max above K: all codes
    ],
    ids=["separate-heads", "shared-heads", "cosine-heads", "separate-orthogonal", "orthogonal-active", "orthogonal-max"],
)
def test_vector_quantize_heads_and_orthogonal_match_vqp(kwargs):
    torch.manual_seed(0)
    theirs = vqp.VectorQuantize(dim=16, codebook_size=16, **kwargs)
    ours = VectorQuantize(dim=16, codebook_size=16, **kwargs)
    x = torch.randn(2, 40, 16)
    theirs, ours, idx = _same_step(
        theirs, ours, x, embed_of_theirs=lambda m: m.codebook, embed_of_ours=lambda m: m.codebook
    )
    if kwargs.get("orthogonal_reg_weight"):
        # The penalty trains the (still EMA-updated) codebook parameter.
        torch.testing.assert_close(ours.embed.grad, theirs._codebook.embed.grad.reshape(ours.embed.shape))
    heads = kwargs.get("heads", 1)
    assert idx.shape == ((2, 40, heads) if heads > 1 else (2, 40))
    torch.testing.assert_close(ours.get_codes_from_indices(idx), theirs.get_codes_from_indices(idx))
    ours.train(), theirs.train()
    bt = theirs(x, return_loss_breakdown=True)[3]
    bo = ours(x, return_loss_breakdown=True)[3]
    assert type(bo).__name__ == "LossBreakdown" and bo._fields == bt._fields
    for a, b in zip(bt, bo):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    ours.eval(), theirs.eval()
    _, ce_t = theirs(x, indices=idx)
    _, ce_o = ours(x, indices=idx)
    torch.testing.assert_close(ce_o, ce_t)


def test_orthogonal_max_codes_draws_a_subset():
    from rvqfast.quantize.regularizers import orthogonal_loss, orthogonal_reg

    cb = torch.randn(1, 32, 8)
    torch.manual_seed(3)
    sub = orthogonal_reg(cb, None, active_codes_only=False, max_codes=5)
    torch.manual_seed(3)
    perm = torch.randperm(32)[:5]
    torch.testing.assert_close(sub, orthogonal_loss(cb[:, perm]))
    eye = torch.eye(8)[None]
    assert abs(float(orthogonal_loss(eye))) < 1e-6  # orthogonal codes: no penalty


def test_residual_vq_orthogonal_matches_vqp():
    torch.manual_seed(0)
    kw = dict(dim=8, num_quantizers=2, codebook_size=8, orthogonal_reg_weight=0.4)
    theirs, ours = vqp.ResidualVQ(**kw), ResidualVQ(**kw)
    x = torch.randn(2, 20, 8)
    _same_step(theirs, ours, x, embed_of_theirs=lambda m: m.codebooks, embed_of_ours=lambda m: m.codebooks)


def test_grouped_is_exported():
    assert rvqfast.GroupedResidualVQ is GroupedResidualVQ


def test_residual_vq_dropout_multiple_of_matches_vqp():
    kw = dict(dim=8, num_quantizers=6, codebook_size=8, quantize_dropout=True, quantize_dropout_multiple_of=4)
    theirs, ours = vqp.ResidualVQ(**kw), ResidualVQ(**kw)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 10, 8)
    kept = set()
    for seed in range(6):
        torch.manual_seed(seed)
        it = theirs(x)[1]
        torch.manual_seed(seed)
        io = ours(x)[1]
        assert torch.equal(it, io)
        kept.add(int((io[0, 0] >= 0).sum()))
    assert kept <= {4, 6} and len(kept) == 2  # multiples of 4 stages, capped at 6


def test_grouped_and_multi_head_state_dicts_convert_back_to_vqp():
    from rvqfast.quantize import to_vector_quantize_pytorch

    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    for shared in (False, True):
        kw = dict(dim=16, groups=2, num_quantizers=3, codebook_size=8, codebook_dim=4, shared_codebook=shared)
        ours = GroupedResidualVQ(**kw)
        ours(x)  # one training step: codebooks move off their init
        back = vqp.GroupedResidualVQ(**kw)
        back.load_state_dict(to_vector_quantize_pytorch(
            ours.state_dict(), residual=True, num_quantizers=3, shared=shared, groups=2), strict=True)
        assert torch.equal(back.eval()(x)[1], ours.eval()(x)[1])
    kw = dict(dim=16, codebook_size=8, heads=4, separate_codebook_per_head=True, codebook_dim=4)
    ours = VectorQuantize(**kw)
    ours(x)
    back = vqp.VectorQuantize(**kw)
    back.load_state_dict(to_vector_quantize_pytorch(ours.state_dict(), residual=False, separate_heads=4), strict=True)
    assert torch.equal(back.eval()(x)[1], ours.eval()(x)[1])
