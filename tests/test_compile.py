"""torch.compile: the quantizer modules and public ops trace with ``fullgraph=True`` and give
what eager gives (losses, indices, gradients, codebook updates).

Most cases use the ``aot_eager`` backend: it runs dynamo and AOT autograd (where a cut graph or
an untraceable backward would show) without inductor's code generation, which costs ~20 s per
graph on a 2-core CI machine. One case runs inductor end to end.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import rvqfast
from rvqfast import ops
from rvqfast.quantize import (
    FSQ, LFQ, GroupedResidualFSQ, GroupedResidualLFQ, GroupedResidualVQ, ResidualFSQ, ResidualLFQ, ResidualSimVQ,
    ResidualVQ, SimVQ, VectorQuantize,
)

DIM = 16


def _fresh_compile_state() -> None:
    torch._dynamo.reset()


def _step(enc: nn.Module, vq: nn.Module, x: torch.Tensor):
    q, idx, loss = vq(enc(x))[:3]
    total = (q.float() ** 2).mean() + loss.sum()
    return total, idx, loss


def _assert_same_step(make_vq, *, training: bool = True, backend: str = "aot_eager", in_dim: int = 8):
    """One step eager and one compiled (fullgraph) from the same weights: same loss, indices,
    input/codebook gradients and codebook buffers afterwards."""
    _fresh_compile_state()
    torch.manual_seed(0)
    enc = nn.Linear(in_dim, DIM)
    vq = make_vq().train(training)
    x = torch.randn(2, 24, in_dim)
    enc_c, vq_c = copy.deepcopy(enc), copy.deepcopy(vq)

    total_e, idx_e, loss_e = _step(enc, vq, x)
    step_c = torch.compile(_step, fullgraph=True, backend=backend)
    total_c, idx_c, loss_c = step_c(enc_c, vq_c, x)

    assert total_c.requires_grad == total_e.requires_grad
    torch.testing.assert_close(idx_c, idx_e, rtol=0, atol=0)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total_c, total_e, rtol=1e-5, atol=1e-6)
    if total_e.requires_grad:
        total_e.backward()
        total_c.backward()
        if training:
            assert enc.weight.grad.norm() > 0
            torch.testing.assert_close(enc_c.weight.grad, enc.weight.grad, rtol=1e-4, atol=1e-6)
        else:  # eval outputs the codes themselves: nothing flows back to the encoder
            assert enc.weight.grad is None and enc_c.weight.grad is None
        for (name, p), pc in zip(vq.named_parameters(), vq_c.parameters()):
            if p.grad is None:
                assert pc.grad is None, name
            else:
                torch.testing.assert_close(pc.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, b), bc in zip(vq.named_buffers(), vq_c.buffers()):
        torch.testing.assert_close(bc, b, rtol=1e-5, atol=1e-6, msg=name)
    return vq, vq_c


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),  # rotation trick, EMA codebooks
        dict(use_cosine_sim=True, straight_through=True),
        dict(shared_codebook=True, threshold_ema_dead_code=0),
        dict(ema_update=False, learnable_codebook=True, codebook_dim=8),
    ],
    ids=["rotation-ema", "cosine-straight-through", "shared", "learnable-projected"],
)
def test_residual_vq_training_step_compiled_equals_eager(kwargs):
    _assert_same_step(lambda: ResidualVQ(dim=DIM, num_quantizers=3, codebook_size=32, **kwargs))


def test_residual_vq_eval_compiled_equals_eager():
    _assert_same_step(lambda: ResidualVQ(dim=DIM, num_quantizers=3, codebook_size=32), training=False)


def test_vector_quantize_train_and_eval_compiled_equal_eager():
    make = lambda: VectorQuantize(dim=DIM, codebook_size=32, codebook_dim=8, commitment_weight=0.5)  # noqa: E731
    _assert_same_step(make, training=True)
    _assert_same_step(make, training=False)


def test_grouped_and_multi_head_compiled_equal_eager():
    _assert_same_step(lambda: GroupedResidualVQ(dim=DIM, groups=2, num_quantizers=2, codebook_size=16))
    _assert_same_step(
        lambda: VectorQuantize(dim=DIM, codebook_size=16, heads=4, separate_codebook_per_head=True, codebook_dim=4)
    )


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_scalar_and_simvq_modules_compiled_equal_eager(training):
    # FSQ / LFQ / SimVQ families: outputs, indices, losses and input gradients, fullgraph.
    _fresh_compile_state()
    torch.manual_seed(0)
    cases = [
        (FSQ(levels=[8, 5, 5], dim=DIM), ()),
        (ResidualFSQ(levels=[5, 5, 5], num_quantizers=2, dim=DIM), ()),
        (GroupedResidualFSQ(levels=[5, 5, 5], num_quantizers=2, dim=DIM, groups=2), ()),
        (LFQ(dim=DIM, codebook_size=64), ()),
        (ResidualLFQ(dim=DIM, num_quantizers=2, codebook_size=64), ()),
        (GroupedResidualLFQ(dim=DIM, groups=2, num_quantizers=2, codebook_size=16), ()),
        (SimVQ(dim=DIM, codebook_size=32), ()),
        (ResidualSimVQ(dim=DIM, num_quantizers=2, codebook_size=32), ()),
    ]
    x = torch.randn(2, 12, DIM)
    for module, _ in cases:
        module.train(training)
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_e = module(xe)
        out_c = torch.compile(module, fullgraph=True, backend="aot_eager")(xc)
        for a, b in zip(out_e, out_c):
            torch.testing.assert_close(b, a, msg=type(module).__name__)
        loss_e = out_e[0].square().mean() + sum(t.sum() for t in out_e[2:3] if t.is_floating_point())
        loss_c = out_c[0].square().mean() + sum(t.sum() for t in out_c[2:3] if t.is_floating_point())
        if loss_e.requires_grad:
            loss_e.backward()
            loss_c.backward()
            torch.testing.assert_close(xc.grad, xe.grad, msg=type(module).__name__)


def test_dead_code_expiry_under_fullgraph_replaces_dead_codes_with_inputs():
    # Compiled expiry draws its replacement rows differently from eager (no data-dependent
    # shapes), so check the rule rather than equality: dead codes become input rows.
    _fresh_compile_state()
    vq = ResidualVQ(dim=DIM, num_quantizers=2, codebook_size=32, threshold_ema_dead_code=2.0)
    x = torch.randn(1, 20, DIM)
    step = torch.compile(lambda t: vq(t)[2].sum(), fullgraph=True, backend="aot_eager")
    step(x)
    live = vq.cluster_size[0] >= 2.0
    assert bool(live.all())  # every code is alive after the step: reset to the threshold
    rows = x[0]
    hit = (vq.embed[0][:, None, :] == rows[None]).all(-1).any(-1)
    assert hit.sum() >= 16  # at most 20 codes were used by 20 rows: the rest were dead, now inputs


def test_public_ops_trace_with_fullgraph():
    # D=128 reaches the "auto" precision choice that reads /proc/cpuinfo (resolved once while
    # tracing, not traced).
    _fresh_compile_state()
    x, cb, cbs = torch.randn(10, 128), torch.randn(6, 128), torch.randn(3, 6, 128)

    def f(x, cb, cbs):
        i, d = ops.nearest_code(x, cb)
        j, q = ops.rvq_encode(x, cbs)
        dec = ops.rvq_decode(j, cbs)
        counts, sums = ops.ema_stats(x, i, 6)
        return i, d, j, q, dec, counts, sums

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for a, b in zip(compiled(x, cb, cbs), f(x, cb, cbs)):
        torch.testing.assert_close(a, b)
    rvq = ResidualVQ(dim=128, num_quantizers=3, codebook_size=6).eval()
    assert torch.equal(torch.compile(rvq, fullgraph=True, backend="aot_eager")(x[None])[1], rvq(x[None])[1])


def test_issue_scenario_inductor_keeps_gradients():
    # The report: encoder Linear(32, 64) + ResidualVQ(dim=64, 3, 128) under torch.compile had a
    # loss with requires_grad=False. Inductor end to end, fullgraph.
    _fresh_compile_state()
    torch.manual_seed(0)
    enc = nn.Linear(32, 64)
    rvq = ResidualVQ(dim=64, num_quantizers=3, codebook_size=128)
    enc_c, rvq_c = copy.deepcopy(enc), copy.deepcopy(rvq)
    x = torch.randn(4, 50, 32)

    def loss_of(enc, rvq):
        q, _, cl = rvq(enc(x))
        return (q ** 2).mean() + cl.sum()

    loss_e = loss_of(enc, rvq)
    loss_c = torch.compile(loss_of, fullgraph=True)(enc_c, rvq_c)
    assert loss_c.requires_grad
    loss_e.backward()
    loss_c.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(enc_c.weight.grad, enc.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(rvq_c.embed, rvq.embed, rtol=1e-5, atol=1e-6)


def test_rvqfast_exports_resolve_under_compile():
    # The lazy exports resolve before compile sees them; a compiled model built from them traces.
    assert rvqfast.ResidualVQ is ResidualVQ
