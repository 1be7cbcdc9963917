"""Certified search (issues 9, 14): exact vs certified bf16 / int8 screens vs bf16 vs peers, one run.

Grid (default): N=3136 (the tokenizer's encode size) x K in {512, 4096} x D in {64, 128, 512} on
random codebooks and on k-means codebooks of clustered data (K=512), plus N=12544 at K=D=512 (the
issue's target shape). RVQFAST_BENCH_FULL=1 runs every N x K x D x kind. Each row records GOP/s
(2 N K D Q / time) against the machine's measured fp32 / bf16 / int8 GEMM rates, the speedup over
the exact path measured in the same run, the candidate statistics of the certified screens (mean
and max per row-stage, overflow rows) and how often plain bf16 disagrees with the exact answer.
The peers (vector-quantize-pytorch, faiss) run at K=512, D=512.
"""
from __future__ import annotations

import functools
import itertools
import os

import pytest
import torch

import _peers
import _results
from oracle import lloyd_rvq_codebooks
from rvqfast import ops
from rvqfast.backends import available_backends, backend_load_errors

pytestmark = pytest.mark.skipif(
    "cpu" not in available_backends(), reason=f"rvqfast._C is not built: {backend_load_errors().get('cpu')}"
)

Q = 6
TRAIN_PER_CODE, LLOYD_STEPS = 8, 2
FULL = os.environ.get("RVQFAST_BENCH_FULL") == "1"
OURS = ("exact", "certified-bf16", "certified-int8", "certified", "bf16")
_EXACT_S: dict[tuple, float] = {}


def _clustered_data(g, n, d, centres):
    z = torch.randint(0, centres.shape[0], (n,), generator=g)
    return centres[z] + 0.3 * torch.randn(n, d, generator=g)


@functools.lru_cache(maxsize=None)
def _codebooks(kind: str, k: int, d: int):
    g = torch.Generator().manual_seed(k * 7 + d)
    if kind == "random":
        return None, torch.randn(Q, k, d, generator=g) * torch.logspace(0, -1, Q).view(Q, 1, 1)
    # k-means codebooks of clustered data: per stage, seed with residual samples, LLOYD_STEPS
    # Lloyd steps on TRAIN_PER_CODE points per code. (With only 2 points per code, half the codes
    # own a single point whose residual is then exactly zero, so later stages hold hundreds of
    # duplicated zero codes: a degenerate codebook no trainer would produce.)
    centres = 2 * torch.randn(256, d, generator=g)
    train = _clustered_data(g, TRAIN_PER_CODE * k, d, centres)
    return centres, lloyd_rvq_codebooks(g, train, k, Q, LLOYD_STEPS)


def _problem(kind, n, k, d):
    centres, cbs = _codebooks(kind, k, d)
    g = torch.Generator().manual_seed(n + k + d)
    x = torch.randn(n, d, generator=g) if centres is None else _clustered_data(g, n, d, centres)
    return x, cbs


@functools.lru_cache(maxsize=None)
def _exact(kind, n, k, d):
    x, cbs = _problem(kind, n, k, d)
    return ops.rvq_encode(x, cbs, backend="cpu", precision="exact")[0]


def _shapes():
    if FULL:
        yield from itertools.product([3136, 12544], [512, 4096], [64, 128, 512], ["random", "kmeans"])
        return
    for k, d, kind in itertools.product([512, 4096], [64, 128, 512], ["random", "kmeans"]):
        if kind == "kmeans" and k == 4096:
            continue  # k-means training at K=4096 costs more than the whole suite's budget
        yield 3136, k, d, kind
    yield 12544, 512, 512, "random"


def _cases():
    for n, k, d, kind in _shapes():
        for who in OURS + ("vqp", "faiss"):
            if who in ("vqp", "faiss") and (k, d) != (512, 512):
                continue
            yield pytest.param(kind, n, k, d, who, id=f"{kind}-N{n}-K{k}-D{d}-{who}")


def _rounds(n, k, d):
    """Best-of rounds per row. The issue's target shape gets 5: with 3, two rows running the same
    code (`certified` and `certified-int8` at D=512) differed by up to 8% on the shared VM."""
    if n * k * d > 3136 * 4096 * 512:
        return 1
    return 5 if (n, k, d) == (12544, 512, 512) else 3


@pytest.mark.parametrize("kind,n,k,d,who", list(_cases()))
def test_certified_grid(benchmark, kind, n, k, d, who):
    from rvqfast.backends import cpu

    x, cbs = _problem(kind, n, k, d)
    exact = _exact(kind, n, k, d)
    if who in OURS:
        def run():
            return ops.rvq_encode(x, cbs, backend="cpu", precision=who)[0]
    else:
        run = (_peers.vqp if who == "vqp" else _peers.faiss_flat)(x, cbs)
    cpu.reset_certified_stats()
    idx = run()
    info = {"row_disagreement_vs_exact": _peers.row_disagreement(idx, exact)}
    if who.startswith("certified"):
        stats = cpu.certified_stats()
        info.update(
            screen=ops.resolve_precision(who, "cpu", x.device, d, k),
            mean_candidates=stats["mean_candidates"],
            max_candidates=stats["max_candidates"],
            overflow_rows=stats["overflow_rows"],
        )
    if who != "bf16":  # bf16 is approximate by design: its disagreement rate is the result
        diff = (idx != exact).any(1)
        if diff.any():  # only rows off the exact path need the (expensive) brute-force check
            _peers.check_stagewise(x[diff], cbs, idx[diff], rtol=1e-3 if who in ("vqp", "faiss") else 1e-4)
    benchmark.group = f"certified {kind} N={n} Q={Q} K={k} D={d}"
    benchmark.pedantic(run, rounds=_rounds(n, k, d), iterations=1)
    if benchmark.stats is None:  # --benchmark-disable
        return
    sec = benchmark.stats.stats.min
    gops = 2 * n * k * d * Q / sec / 1e9
    key = (kind, n, k, d)
    if who == "exact":
        _EXACT_S[key] = sec
    info.update(
        gops=gops,
        pct_of_int8_gemm=100 * gops / _results.gemm_rate_gops("int8"),
        int8_gemm_gops=_results.gemm_rate_gops("int8"),
        bf16_gemm_gops=_results.gemm_rate_gops("bf16"),
        fp32_gemm_gops=_results.gemm_rate_gops("fp32"),
    )
    if key in _EXACT_S:
        info["speedup_vs_exact"] = _EXACT_S[key] / sec
    benchmark.extra_info.update(info)
