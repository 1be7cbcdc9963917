"""Alternating A/B timing of GroupedResidualVQ(dim=512, groups=2, num_quantizers=8,
codebook_size=1024) at N=4096: vector-quantize-pytorch, rvqfast one-op-call path, rvqfast
groups one after another. One thread. Each round runs every implementation once, in a rotated
order, so machine load hits all of them alike; reports min and median per implementation and
the median of the per-round ratios.

Usage: OMP_NUM_THREADS=1 python benchmarks/grouped_ab.py MODE ROUNDS   (MODE: eval | train)
"""
from __future__ import annotations

import copy
import statistics
import sys
import time
import warnings

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import vector_quantize_pytorch as vqp  # noqa: E402

from rvqfast.quantize import GroupedResidualVQ  # noqa: E402
from test_bench_dropin import GRVQ, _eval_fwd, _pair, _train_step  # noqa: E402

mode, rounds = sys.argv[1], int(sys.argv[2])
theirs, ours = _pair(vqp.GroupedResidualVQ(**GRVQ), lambda: GroupedResidualVQ(**GRVQ))
per_group = copy.deepcopy(ours)
per_group._one_call = False
x = torch.randn(256, 16, 512)
models = {"vqp": theirs, "one-call": ours, "per-group": per_group}
for m in models.values():
    m.train(mode == "train")
fn = _train_step if mode == "train" else _eval_fwd
# Same indices first (one warm-up call each).
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    outs = {k: fn(m, x) for k, m in models.items()}
assert torch.equal(outs["one-call"], outs["vqp"]) and torch.equal(outs["per-group"], outs["vqp"])
times = {k: [] for k in models}
names = list(models)
for r in range(rounds):
    order = names[r % 3:] + names[: r % 3]
    for k in order:
        t = time.perf_counter()
        fn(models[k], x)
        times[k].append(time.perf_counter() - t)
print(f"mode={mode} rounds={rounds} threads={torch.get_num_threads()} torch={torch.__version__}")
for k, v in times.items():
    print(f"{k:10s} min {min(v):.3f} s  median {statistics.median(v):.3f} s  all {[round(t, 3) for t in v]}")
for k in ("one-call", "per-group"):
    ratios = [a / b for a, b in zip(times["vqp"], times[k])]
    print(f"vqp / {k}: median of per-round ratios {statistics.median(ratios):.2f}x, ratio of mins {min(times['vqp']) / min(times[k]):.2f}x")
ratios = [a / b for a, b in zip(times["per-group"], times["one-call"])]
print(f"per-group / one-call: median of per-round ratios {statistics.median(ratios):.3f}x, ratio of mins {min(times['per-group']) / min(times['one-call']):.3f}x")
