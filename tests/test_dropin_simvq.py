"""SimVQ and ResidualSimVQ against vector-quantize-pytorch on the same weights: indices,
outputs, losses, gradients to the input and to the codebook transform; the search runs on
rvqfast's kernels (checked against a brute-force nearest code)."""
from __future__ import annotations

import pytest
import torch

import rvqfast
from rvqfast.quantize import ResidualSimVQ, SimVQ

vqp = pytest.importorskip("vector_quantize_pytorch")


def _pair_step(theirs, ours, x, seed=0):
    ours.load_state_dict(theirs.state_dict(), strict=True)
    xt, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(seed)
    qt, it, lt = theirs(xt)
    torch.manual_seed(seed)
    qo, io, lo = ours(xo)
    assert torch.equal(it, io)
    torch.testing.assert_close(qo, qt, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lo, lt, rtol=1e-5, atol=1e-6)
    (qt.square().mean() + lt.sum()).backward()
    (qo.square().mean() + lo.sum()).backward()
    torch.testing.assert_close(xo.grad, xt.grad, rtol=1e-4, atol=1e-7)
    for (name, pt), po in zip(theirs.named_parameters(), ours.parameters()):
        if pt.grad is None:
            assert po.grad is None, name
        else:
            torch.testing.assert_close(po.grad, pt.grad, rtol=1e-4, atol=1e-7, msg=name)
    theirs.zero_grad(), ours.zero_grad()
    return io


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(rotation_trick=False), dict(frozen_codebook_dim=8), dict(channel_first=True)],
    ids=["rotation", "straight-through", "frozen-dim", "channel-first"],
)
def test_simvq_matches_vqp(kwargs):
    torch.manual_seed(0)
    theirs, ours = vqp.SimVQ(dim=16, codebook_size=32, **kwargs), SimVQ(dim=16, codebook_size=32, **kwargs)
    x = torch.randn(2, 16, 30) if kwargs.get("channel_first") else torch.randn(2, 30, 16)
    idx = _pair_step(theirs, ours, x)
    torch.testing.assert_close(ours.indices_to_codes(idx), theirs.indices_to_codes(idx))
    # The index is the nearest code of the transformed codebook.
    rows = x.movedim(1, -1) if kwargs.get("channel_first") else x
    d = torch.cdist(rows.reshape(-1, 16).double(), ours.codebook.detach().double())
    got = d.gather(1, idx.reshape(-1, 1)).squeeze(1)
    assert bool((got <= d.min(1).values + 1e-5).all())


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(quantize_dropout=True, quantize_dropout_multiple_of=2), dict(channel_first=True)],
    ids=["plain", "dropout", "channel-first"],
)
def test_residual_simvq_matches_vqp(kwargs):
    torch.manual_seed(0)
    kw = dict(dim=16, num_quantizers=4, codebook_size=32, **kwargs)
    theirs, ours = vqp.ResidualSimVQ(**kw), ResidualSimVQ(**kw)
    x = torch.randn(2, 16, 30) if kwargs.get("channel_first") else torch.randn(2, 30, 16)
    for seed in range(3):
        idx = _pair_step(theirs, ours, x, seed)
    torch.testing.assert_close(ours.get_codes_from_indices(idx), theirs.get_codes_from_indices(idx))
    torch.testing.assert_close(ours.get_output_from_indices(idx), theirs.get_output_from_indices(idx))
    out = ours.eval()(x, return_all_codes=True)
    assert out[3].shape[0] == 4


def test_simvq_compiles_fullgraph():
    torch._dynamo.reset()
    m = ResidualSimVQ(dim=8, num_quantizers=2, codebook_size=16)
    x = torch.randn(2, 10, 8)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_e = m(xe)
    out_c = torch.compile(m, fullgraph=True, backend="aot_eager")(xc)
    assert torch.equal(out_e[1], out_c[1])
    torch.testing.assert_close(out_c[2], out_e[2])
    (out_e[0].sum() + out_e[2].sum()).backward()
    (out_c[0].sum() + out_c[2].sum()).backward()
    torch.testing.assert_close(xc.grad, xe.grad)


def test_simvq_exported_and_validated():
    assert rvqfast.SimVQ is SimVQ and rvqfast.ResidualSimVQ is ResidualSimVQ
    with pytest.raises(ValueError, match="dim=16"):
        SimVQ(dim=16, codebook_size=8)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="heads"):
        ResidualSimVQ(dim=8, num_quantizers=2, codebook_size=8, heads=2)
