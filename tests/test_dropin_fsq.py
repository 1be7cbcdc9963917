"""FSQ, ResidualFSQ, GroupedResidualFSQ against vector-quantize-pytorch on the same weights and
the same RNG draws: identical outputs, indices (values and dtype) and input gradients."""
from __future__ import annotations

import pytest
import torch

import rvqfast
from dropin_parity import same_forward
from rvqfast.quantize import FSQ, GroupedResidualFSQ, ResidualFSQ

vqp = pytest.importorskip("vector_quantize_pytorch")


def _same(theirs, ours, x, *, train: bool, seed: int = 0, **fwd):
    theirs.train(train)
    return same_forward(theirs, ours, x, loss_of=lambda r: r[0].square().sum(), compare=2, seed=seed, **fwd)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(levels=[8, 5, 5, 5]),
        dict(levels=[8, 5, 5, 5], dim=12),
        dict(levels=[4, 4], num_codebooks=3),
        dict(levels=[2, 3, 4, 5], preserve_symmetry=True),
        dict(levels=[7, 5, 5], preserve_symmetry=True, noise_dropout=0.5),
        dict(levels=[5, 5, 5, 5], orthogonal_rotation=True),
        dict(levels=[8, 6, 5], bound_hard_clamp=True),
    ],
    ids=["plain", "projected", "codebooks", "symmetric", "noise", "rotation", "hard-clamp"],
)
def test_fsq_matches_vqp(kwargs):
    torch.manual_seed(0)
    theirs, ours = vqp.FSQ(**kwargs), FSQ(**kwargs)
    d = theirs.dim
    x = torch.randn(2, 30, d) * 2
    _, (_, idx) = _same(theirs, ours, x, train=True)
    _same(theirs, ours, torch.randn(2, d, 3, 4), train=False)  # image: channel first
    assert ours.codebook_size == theirs.codebook_size
    torch.testing.assert_close(ours.implicit_codebook, theirs.implicit_codebook)
    torch.testing.assert_close(ours.indices_to_codes(idx), theirs.indices_to_codes(idx))
    # Every code maps to its own index and back.
    codes = ours.implicit_codebook
    assert torch.equal(ours.codes_to_indices(codes), torch.arange(ours.codebook_size, dtype=torch.int32))


def test_fsq_rejects_bad_options():
    with pytest.raises(ValueError, match="preserve_symmetry"):
        FSQ(levels=[2, 4])
    with pytest.raises(ValueError, match="levels"):
        FSQ(levels=[1, 4])
    with pytest.raises(ValueError, match="dim=4"):
        FSQ(levels=[8, 5, 5, 5])(torch.randn(2, 3, 5))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(levels=[8, 5, 5, 5], num_quantizers=3),
        dict(levels=[8, 5, 5, 5], num_quantizers=3, dim=8),
        dict(levels=[5, 5, 5], num_quantizers=4, dim=8, quantize_dropout=True, quantize_dropout_multiple_of=2),
        dict(levels=[5, 5, 5], num_quantizers=2, bound_hard_clamp=False, soft_clamp_input_value=2.0),
    ],
    ids=["plain", "projected", "dropout", "soft-clamp"],
)
def test_residual_fsq_matches_vqp(kwargs):
    torch.manual_seed(0)
    theirs, ours = vqp.ResidualFSQ(**kwargs), ResidualFSQ(**kwargs)
    d = kwargs.get("dim", len(kwargs["levels"]))
    x = torch.randn(2, 20, d)
    for seed in range(3):  # several dropout draws
        (_, it), _ = _same(theirs, ours, x, train=True, seed=seed)
    torch.testing.assert_close(ours.get_output_from_indices(it), theirs.get_output_from_indices(it))
    torch.testing.assert_close(ours.codebooks, theirs.codebooks)
    theirs.eval(), ours.eval()
    rt, ro = theirs(x, return_all_codes=True), ours(x, return_all_codes=True)
    torch.testing.assert_close(ro[2], rt[2])


@pytest.mark.parametrize("dropout", [False, True])
def test_grouped_residual_fsq_matches_vqp(dropout):
    kw = dict(levels=[5, 5, 5], num_quantizers=3, dim=16, groups=2, quantize_dropout=dropout)
    torch.manual_seed(0)
    theirs, ours = vqp.GroupedResidualFSQ(**kw), GroupedResidualFSQ(**kw)
    x = torch.randn(2, 20, 16)
    for seed in range(3):
        (_, it), _ = _same(theirs, ours, x, train=True, seed=seed)
    assert it.shape == (2, 2, 20, 3)
    torch.testing.assert_close(ours.get_output_from_indices(it), theirs.get_output_from_indices(it))
    theirs.eval(), ours.eval()
    rt, ro = theirs(x, return_all_codes=True), ours(x, return_all_codes=True)
    assert isinstance(ro[2], tuple) and len(ro[2]) == 2
    for a, b in zip(rt[2], ro[2]):
        torch.testing.assert_close(b, a)


def test_fsq_family_compiles_fullgraph():
    torch._dynamo.reset()
    for m, x in ((FSQ(levels=[8, 5, 5, 5], dim=8), torch.randn(2, 10, 8)),
                 (ResidualFSQ(levels=[5, 5, 5], num_quantizers=2, dim=8), torch.randn(2, 10, 8))):
        m.train()
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_e = m(xe)
        out_c = torch.compile(m, fullgraph=True, backend="aot_eager")(xc)
        for a, b in zip(out_e, out_c):
            torch.testing.assert_close(b, a)
        out_e[0].square().sum().backward()
        out_c[0].square().sum().backward()
        torch.testing.assert_close(xc.grad, xe.grad)


def test_fsq_exported():
    assert rvqfast.FSQ is FSQ and rvqfast.ResidualFSQ is ResidualFSQ and rvqfast.GroupedResidualFSQ is GroupedResidualFSQ
