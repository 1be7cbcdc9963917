"""LFQ and ResidualLFQ against vector-quantize-pytorch on the same weights and RNG draws."""
from __future__ import annotations

import pytest
import torch

import rvqfast
from dropin_parity import same_forward
from rvqfast.quantize import LFQ, GroupedResidualLFQ, ResidualLFQ

vqp = pytest.importorskip("vector_quantize_pytorch")


def _same(theirs, ours, x, *, train=True, seed=0, **fwd):
    theirs.train(train)
    loss = (lambda r: r[0].square().mean() + r[2].sum()) if train else None
    return same_forward(theirs, ours, x, loss_of=loss, seed=seed, **fwd)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(dim=8),
        dict(dim=16, codebook_size=256),
        dict(dim=16, codebook_size=16, num_codebooks=2, commitment_loss_weight=0.25),
        dict(dim=8, spherical=True),
        dict(dim=12, codebook_size=64, cosine_sim_project_in=True),
        dict(dim=8, frac_per_sample_entropy=0.5),
        dict(dim=8, experimental_softplus_entropy_loss=True, soft_clamp_input_value=1.5),
        dict(dim=8, orthogonal_rotation=True),
    ],
    ids=["plain", "projected", "codebooks-commit", "spherical", "cosine-in", "frac", "softplus-clamp", "rotation"],
)
def test_lfq_matches_vqp(kwargs):
    torch.manual_seed(0)
    theirs = vqp.LFQ(**kwargs)
    torch.manual_seed(0)
    ours = LFQ(**kwargs)
    x = torch.randn(2, 20, kwargs["dim"])
    rt, _ = _same(theirs, ours, x)
    _same(theirs, ours, x, train=False)
    _same(theirs, ours, torch.randn(2, kwargs["dim"], 3, 4))  # image: channel first
    torch.testing.assert_close(ours.indices_to_codes(rt[1]), theirs.indices_to_codes(rt[1]))
    bt = theirs(x, return_loss_breakdown=True)[1]
    bo = ours(x, return_loss_breakdown=True)[1]
    for a, b in zip(bt, bo):
        torch.testing.assert_close(b, a)


def test_lfq_mask_batch_entropy_is_over_the_masked_batch():
    # Deliberate difference: with a mask, vqp 1.32 takes the "batch" entropy per token (no mean
    # over the batch), so it equals the per-sample entropy; rvqfast averages over kept tokens.
    torch.manual_seed(0)
    theirs, ours = vqp.LFQ(dim=8), LFQ(dim=8)
    ours.load_state_dict(theirs.state_dict())
    theirs.train(), ours.train()
    x = torch.randn(2, 20, 8)
    mask = torch.rand(2, 20) > 0.3
    (qt, it, _), bt = theirs(x, mask=mask, return_loss_breakdown=True)
    (qo, io, _), bo = ours(x, mask=mask, return_loss_breakdown=True)
    assert torch.equal(it, io) and torch.equal(qt, qo)
    torch.testing.assert_close(bo.per_sample_entropy, bt.per_sample_entropy)
    _, b_kept = ours(x[mask][None], return_loss_breakdown=True)
    torch.testing.assert_close(bo.batch_entropy, b_kept.batch_entropy)


@pytest.mark.parametrize(
    "kwargs",
    [dict(codebook_size=256), dict(codebook_size=16, quantize_dropout=True, soft_clamp_input_value=2.0)],
    ids=["plain", "dropout-clamp"],
)
def test_residual_lfq_matches_vqp(kwargs):
    torch.manual_seed(0)
    theirs = vqp.ResidualLFQ(dim=16, num_quantizers=3, **kwargs)
    torch.manual_seed(0)
    ours = ResidualLFQ(dim=16, num_quantizers=3, **kwargs)
    x = torch.randn(2, 20, 16)
    for seed in range(3):
        rt, _ = _same(theirs, ours, x, seed=seed)
    torch.testing.assert_close(ours.get_output_from_indices(rt[1]), theirs.get_output_from_indices(rt[1]))
    torch.testing.assert_close(ours.codebooks, theirs.codebooks)


def test_lfq_compiles_fullgraph_and_is_exported():
    assert rvqfast.LFQ is LFQ and rvqfast.ResidualLFQ is ResidualLFQ
    torch._dynamo.reset()
    m = LFQ(dim=12, codebook_size=64).train()
    x = torch.randn(2, 10, 12)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    re = m(xe)
    rc = torch.compile(m, fullgraph=True, backend="aot_eager")(xc)
    for a, b in zip(re, rc):
        torch.testing.assert_close(b, a)
    (re[0].square().sum() + re[2]).backward()
    (rc[0].square().sum() + rc[2]).backward()
    torch.testing.assert_close(xc.grad, xe.grad)
    with pytest.raises(ValueError, match="power of 2"):
        LFQ(dim=4, codebook_size=12)


def test_grouped_residual_lfq_matches_vqp():
    kw = dict(dim=16, groups=2, num_quantizers=2, codebook_size=16, quantize_dropout=True)
    torch.manual_seed(0)
    theirs = vqp.GroupedResidualLFQ(**kw)
    torch.manual_seed(0)
    ours = GroupedResidualLFQ(**kw)
    x = torch.randn(2, 20, 16)
    for seed in range(3):
        rt, _ = _same(theirs, ours, x, seed=seed)
    assert rt[1].shape == (2, 2, 20, 2) and rt[2].shape == (2, 2)
    torch.testing.assert_close(ours.get_output_from_indices(rt[1]), theirs.get_output_from_indices(rt[1]))
    theirs.eval(), ours.eval()
    ct, co = theirs(x, return_all_codes=True)[3], ours(x, return_all_codes=True)[3]
    assert isinstance(co, tuple) and len(co) == 2
    for a, b in zip(ct, co):
        torch.testing.assert_close(b, a)
