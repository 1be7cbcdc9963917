"""state_dict conversion between vector-quantize-pytorch and rvqfast, both ways."""
from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from rvqfast.quantize import ResidualVQ, VectorQuantize, to_vector_quantize_pytorch

vqp = pytest.importorskip("vector_quantize_pytorch")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _trained_theirs(**kw):
    m = vqp.ResidualVQ(**kw).train()
    for _ in range(3):
        m(torch.randn(4, 32, kw["dim"]))
    return m.eval()


@pytest.mark.parametrize("kw", [{}, {"codebook_dim": 8}, {"shared_codebook": True}, {"kmeans_init": True}])
def test_their_checkpoint_loads_and_gives_same_indices(kw):
    theirs = _trained_theirs(dim=16, num_quantizers=3, codebook_size=32, **kw)
    buf = io.BytesIO()
    torch.save(theirs.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    ours = ResidualVQ(dim=16, num_quantizers=3, codebook_size=32, **kw).eval()
    ours.load_state_dict(sd)  # strict: every key accounted for
    assert bool(ours.initted.all())
    x = torch.randn(3, 25, 16)
    qa, ia, _ = ours(x)
    qb, ib, _ = theirs(x)
    assert torch.equal(ia, ib)
    torch.testing.assert_close(qa, qb, atol=1e-5, rtol=1e-5)


def test_nested_model_loads_their_state_dict():
    class Model(nn.Module):
        def __init__(self, cls):
            super().__init__()
            self.enc = nn.Linear(16, 16)
            self.rvq = cls(dim=16, num_quantizers=2, codebook_size=32)

    theirs = Model(vqp.ResidualVQ)
    theirs.rvq.train()(torch.randn(2, 20, 16))
    ours = Model(ResidualVQ)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 9, 16)
    assert torch.equal(ours.rvq.eval()(x)[1], theirs.rvq.eval()(x)[1])


def test_our_state_dict_round_trips_and_converts_back():
    ours = ResidualVQ(dim=16, num_quantizers=3, codebook_size=32, codebook_dim=8).train()
    ours(torch.randn(4, 20, 16))
    sd = ours.state_dict()
    assert set(sd) >= {"embed", "embed_avg", "cluster_size", "initted", "project_in.weight"}
    again = ResidualVQ(dim=16, num_quantizers=3, codebook_size=32, codebook_dim=8)
    again.load_state_dict(sd)
    for k, v in sd.items():
        assert torch.equal(again.state_dict()[k], v)
    theirs = vqp.ResidualVQ(dim=16, num_quantizers=3, codebook_size=32, codebook_dim=8)
    theirs.load_state_dict(to_vector_quantize_pytorch(sd, residual=True, num_quantizers=3))
    x = torch.randn(2, 11, 16)
    assert torch.equal(theirs.eval()(x)[1], ours.eval()(x)[1])


def test_vector_quantize_both_ways():
    theirs = vqp.VectorQuantize(dim=16, codebook_size=32).train()
    theirs(torch.randn(2, 30, 16))
    ours = VectorQuantize(dim=16, codebook_size=32)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 10, 16)
    assert torch.equal(ours.eval()(x)[1], theirs.eval()(x)[1])
    back = vqp.VectorQuantize(dim=16, codebook_size=32)
    back.load_state_dict(to_vector_quantize_pytorch(ours.state_dict(), residual=False))
    assert torch.equal(back.eval()(x)[1], theirs(x)[1])


def test_bad_foreign_state_dicts_raise():
    theirs = vqp.ResidualVQ(dim=16, num_quantizers=3, codebook_size=32)
    sd = theirs.state_dict()
    ours = ResidualVQ(dim=16, num_quantizers=3, codebook_size=32)
    two_heads = dict(sd)
    two_heads["layers.0._codebook.embed"] = torch.zeros(2, 32, 16)
    with pytest.raises(ValueError, match="heads"):
        ours.load_state_dict(two_heads)
    short = {k: v for k, v in sd.items() if not k.startswith("layers.2.")}
    with pytest.raises(ValueError, match="needs 3"):
        ours.load_state_dict(short)
    wrong_k = ResidualVQ(dim=16, num_quantizers=3, codebook_size=64)
    with pytest.raises(RuntimeError, match="size mismatch"):
        wrong_k.load_state_dict(sd)
