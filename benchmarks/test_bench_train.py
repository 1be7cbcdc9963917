"""Training step (forward + backward + EMA codebook update): rvqfast vs vector-quantize-pytorch.

N = 4096 vectors (batch 256 x 16 tokens), Q = 6 stages, K = 512 codes, D = 512, fp32, default
options of both libraries (rotation-trick gradient, EMA decay 0.8). Both run in the same session
on the same codebooks; the rvqfast row records its speedup over vector-quantize-pytorch
(target >= 4x on the 2-core CI CPU). Correctness is checked before anything is timed.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

import rvqfast
from rvqfast.quantize import ResidualVQ

vqp = pytest.importorskip("vector_quantize_pytorch")

B, T, Q, K, D = 256, 16, 6, 512, 512
ROUNDS = 3
_MEANS: dict[str, float] = {}


def _modules():
    torch.manual_seed(0)
    theirs = vqp.ResidualVQ(dim=D, num_quantizers=Q, codebook_size=K).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = ResidualVQ(dim=D, num_quantizers=Q, codebook_size=K).train()
    # Codebooks spread like data (their default init is tiny uniform noise).
    with torch.no_grad():
        for layer in theirs.layers:
            cb = layer._codebook
            cb.embed.copy_(torch.randn_like(cb.embed) / (1 + layers_index(theirs, layer)))
            cb.embed_avg.copy_(cb.embed)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def layers_index(rvq, layer) -> int:
    return list(rvq.layers).index(layer)


def _step(model, x):
    x = x.clone().requires_grad_()
    q, idx, losses = model(x)
    loss = (q - x.detach()).square().mean() + losses.sum()
    loss.backward()
    return idx, x.grad


@pytest.fixture(scope="module")
def setup():
    theirs, ours = _modules()
    x = torch.randn(B, T, D)
    # Correctness first: one step on copies gives the same codes, gradients and codebooks.
    t, o = copy.deepcopy(theirs), copy.deepcopy(ours)
    it, gt = _step(t, x)
    io_, go = _step(o, x)
    assert torch.equal(it, io_), f"{int((it != io_).sum())} indices differ"
    torch.testing.assert_close(go, gt, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(o.codebooks, t.codebooks, atol=1e-5, rtol=1e-5)
    return {"vector_quantize_pytorch": theirs, "rvqfast": ours}, x


# Their row first, so ours can report the ratio measured in the same session.
@pytest.mark.parametrize("impl", ["vector_quantize_pytorch", "rvqfast"])
def test_bench_train_step(benchmark, setup, impl):
    models, x = setup
    model = models[impl]
    benchmark.group = "train-step"
    benchmark.extra_info.update(
        impl=impl, n=B * T, q=Q, k=K, d=D, threads=torch.get_num_threads(),
        backends=",".join(rvqfast.available_backends()),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        benchmark.pedantic(_step, args=(model, x), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: the step ran once, untimed
        return
    _MEANS[impl] = benchmark.stats.stats.min
    benchmark.extra_info["min_s"] = _MEANS[impl]
    if impl == "rvqfast" and "vector_quantize_pytorch" in _MEANS:
        speedup = _MEANS["vector_quantize_pytorch"] / _MEANS["rvqfast"]
        benchmark.extra_info["speedup_vs_vector_quantize_pytorch"] = round(speedup, 2)
