"""Drop-in modules beyond ResidualVQ: rvqfast eager, rvqfast under torch.compile and
vector-quantize-pytorch, same weights, same session.

- GroupedResidualVQ(dim=512, groups=2, num_quantizers=8, codebook_size=1024), N = 4096 vectors
  (256 x 16 tokens): training step (forward + backward + EMA update) and eval forward
  (targets: >= 5x and >= 3x vector-quantize-pytorch). rvqfast runs all groups x stages in one
  ``grouped_rvq_encode`` op call in eval and one ``grouped_nearest_code`` call per stage in
  training; ``rvqfast-per-group`` is the same module quantizing its groups one after another.
- VectorQuantize(dim=512, heads=8, separate_codebook_per_head=True, codebook_dim=64,
  codebook_size=1024), eval forward at N = 12544 (256 x 49) (target >= 3x).

Correctness is checked before anything is timed: the same indices as vector-quantize-pytorch,
and the compiled module gives the eager module's indices. Compiled rows use inductor with
``fullgraph=True``; compilation happens in the warm-up round and is not timed.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

import rvqfast
from rvqfast.quantize import GroupedResidualVQ, VectorQuantize

vqp = pytest.importorskip("vector_quantize_pytorch")

ROUNDS = 3
IMPLS = ["vector_quantize_pytorch", "rvqfast", "rvqfast-compiled"]
# GroupedResidualVQ also runs its groups one after another (the searches per group, G op calls
# per stage in training and G fused encodes in eval), beside the default one-op-call path.
GROUPED_IMPLS = IMPLS + ["rvqfast-per-group"]
_MINS: dict[tuple[str, str], float] = {}


def _spread_codebooks(module: torch.nn.Module) -> None:
    """Codebooks spread like data (vqp's default init is tiny uniform noise), EMA state to match."""
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if name.endswith("_codebook.embed"):
                buf.copy_(torch.randn_like(buf))
        for name, buf in module.named_buffers():
            if name.endswith("_codebook.embed_avg"):
                buf.copy_(module.get_buffer(name.replace("embed_avg", "embed")))


def _pair(theirs: torch.nn.Module, make_ours):
    torch.manual_seed(0)
    _spread_codebooks(theirs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = make_ours()
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _train_step(model, x):
    x = x.clone().requires_grad_()
    q, idx, losses = model(x)
    loss = (q - x.detach()).square().mean() + losses.sum()
    loss.backward()
    return idx


def _eval_fwd(model, x):
    with torch.no_grad():
        return model(x)[1]


def _record(benchmark, group: str, impl: str) -> None:
    if benchmark.stats is None:  # --benchmark-disable
        return
    _MINS[(group, impl)] = benchmark.stats.stats.min
    benchmark.extra_info["min_s"] = _MINS[(group, impl)]
    base = _MINS.get((group, "vector_quantize_pytorch"))
    if impl != "vector_quantize_pytorch" and base:
        benchmark.extra_info["speedup_vs_vector_quantize_pytorch"] = round(base / _MINS[(group, impl)], 2)
    eager = _MINS.get((group, "rvqfast"))
    if impl == "rvqfast-compiled" and eager:
        benchmark.extra_info["speedup_vs_rvqfast_eager"] = round(eager / _MINS[(group, impl)], 2)


GRVQ = dict(dim=512, groups=2, num_quantizers=8, codebook_size=1024)


@pytest.fixture(scope="module")
def grouped():
    theirs, ours = _pair(vqp.GroupedResidualVQ(**GRVQ), lambda: GroupedResidualVQ(**GRVQ))
    x = torch.randn(256, 16, 512)
    # Same codes as vqp, eval and one training step (on copies).
    assert torch.equal(_eval_fwd(ours.eval(), x), _eval_fwd(theirs.eval(), x))
    t, o = copy.deepcopy(theirs).train(), copy.deepcopy(ours).train()
    assert torch.equal(_train_step(t, x), _train_step(o, x))
    torch.testing.assert_close(o.codebooks, t.codebooks, atol=1e-5, rtol=1e-5)
    return {"vector_quantize_pytorch": theirs, "rvqfast": ours}, x


def _model_for(models: dict, impl: str, mode: str):
    if impl == "rvqfast-per-group":
        model = copy.deepcopy(models["rvqfast"]).train(mode == "train")
        model._one_call = False
        return model
    model = models["rvqfast" if impl == "rvqfast-compiled" else impl].train(mode == "train")
    if impl == "rvqfast-compiled":
        torch._dynamo.reset()
        model = torch.compile(model, fullgraph=True)
    return model


@pytest.mark.parametrize("impl", GROUPED_IMPLS)
def test_bench_grouped_train_step(benchmark, grouped, impl):
    models, x = grouped
    model = _model_for(models, impl, "train")
    if impl in ("rvqfast-compiled", "rvqfast-per-group"):  # == eager one-call on the same state (copies)
        ref = copy.deepcopy(models["rvqfast"]).train()
        if impl == "rvqfast-compiled":
            twin = torch.compile(copy.deepcopy(models["rvqfast"]).train(), fullgraph=True)
        else:
            twin = copy.deepcopy(model)
        assert torch.equal(_train_step(twin, x), _train_step(ref, x))
        if impl == "rvqfast-per-group":  # the same kernels in another order: identical updates
            assert torch.equal(twin.codebooks, ref.codebooks)
    benchmark.group = "grouped-rvq-train-step"
    benchmark.extra_info.update(impl=impl, n=x.shape[0] * x.shape[1], threads=torch.get_num_threads(),
                                backends=",".join(rvqfast.available_backends()), **GRVQ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        benchmark.pedantic(_train_step, args=(model, x), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, benchmark.group, impl)


@pytest.mark.parametrize("impl", GROUPED_IMPLS)
def test_bench_grouped_eval(benchmark, grouped, impl):
    models, x = grouped
    model = _model_for(models, impl, "eval")
    if impl in ("rvqfast-compiled", "rvqfast-per-group"):
        assert torch.equal(_eval_fwd(model, x), _eval_fwd(models["rvqfast"].eval(), x))
    benchmark.group = "grouped-rvq-eval"
    benchmark.extra_info.update(impl=impl, n=x.shape[0] * x.shape[1], threads=torch.get_num_threads(), **GRVQ)
    benchmark.pedantic(_eval_fwd, args=(model, x), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, benchmark.group, impl)


HEADS = dict(dim=512, codebook_size=1024, heads=8, separate_codebook_per_head=True, codebook_dim=64)


@pytest.fixture(scope="module")
def heads():
    theirs, ours = _pair(vqp.VectorQuantize(**HEADS), lambda: VectorQuantize(**HEADS))
    x = torch.randn(256, 49, 512)
    assert torch.equal(_eval_fwd(ours.eval(), x), _eval_fwd(theirs.eval(), x))
    return {"vector_quantize_pytorch": theirs, "rvqfast": ours}, x


@pytest.mark.parametrize("impl", IMPLS)
def test_bench_heads_eval(benchmark, heads, impl):
    models, x = heads
    model = _model_for(models, impl, "eval")
    if impl == "rvqfast-compiled":
        assert torch.equal(_eval_fwd(model, x), _eval_fwd(models["rvqfast"].eval(), x))
    benchmark.group = "vq-heads8-separate-eval"
    benchmark.extra_info.update(impl=impl, n=x.shape[0] * x.shape[1], threads=torch.get_num_threads(), **HEADS)
    benchmark.pedantic(_eval_fwd, args=(model, x), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _record(benchmark, benchmark.group, impl)
