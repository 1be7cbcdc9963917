"""Alternating A/B rounds (one process, contenders interleaved round by round) for the issue-14
targets: RVQ encode (Q=6, K=512, D=512, fp32) at N=3136 / 12544 against the exact path,
vector-quantize-pytorch ResidualVQ eval and faiss IndexFlatL2, and the training step (N=4096).
Run from the repository root: python benchmarks/certified_ab.py [threads] [rounds]
Every contender's indices are checked (stagewise nearest) before timing. Ratios use the best
round of each contender; medians are printed too. Wall time (perf_counter), or process CPU time with TIMER=cpu."""
import os, platform, sys, time, warnings
import torch
sys.path.insert(0, "benchmarks"); sys.path.insert(0, "tests")
import _peers
from rvqfast import ops

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
# TIMER=cpu: process CPU time (meaningful with 1 thread on a shared machine); default wall time.
clock = time.process_time if os.environ.get("TIMER") == "cpu" else time.perf_counter
torch.set_num_threads(threads)
Q, K, D = 6, 512, 512
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"CPU {cpu}, torch {torch.__version__}, threads {threads}, rounds {rounds}, timer {clock.__name__}, load at start {os.getloadavg()}")

def problem(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, D, generator=g)
    cbs = torch.randn(Q, K, D, generator=g) * torch.logspace(0, -1, Q).view(Q, 1, 1)
    return x, cbs

def rvq(x, cbs, p):
    return lambda: ops.rvq_encode(x, cbs, backend="cpu", precision=p)[0]

def table(title, fns, base_names):
    for name, f in fns.items():
        f()  # warm-up (prepared-codebook cache, oneDNN primitives, thread pools)
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t = clock(); f(); times[name].append(clock() - t)
    best = {k: min(v) for k, v in times.items()}
    print(f"\n## {title}  (load after: {os.getloadavg()})")
    print("| contender | best ms | median ms | " + " | ".join(f"x vs {b}" for b in base_names) + " |")
    print("|---|---|---|" + "---|" * len(base_names))
    for k, v in times.items():
        v = sorted(v)
        ratios = " | ".join(f"{best[b] / best[k]:.2f}" for b in base_names)
        print(f"| {k} | {v[0]*1e3:.1f} | {v[len(v)//2]*1e3:.1f} | {ratios} |")
    sys.stdout.flush()

for n in (3136, 12544):
    x, cbs = problem(n)
    fns = {"rvqfast exact": rvq(x, cbs, "exact"), "rvqfast auto (certified-int8)": rvq(x, cbs, "auto"),
           "rvqfast certified-bf16": rvq(x, cbs, "certified-bf16"),
           "vqp ResidualVQ eval": _peers.vqp(x, cbs), "faiss IndexFlatL2": _peers.faiss_flat(x, cbs)}
    fns["rvqfast exact"]()  # loads the cpu backend (registry is lazy)
    assert ops.resolve_precision("auto", "cpu", x.device, D, K) == "certified-int8"
    for name, f in fns.items():
        _peers.check_stagewise(x, cbs, f())
    table(f"encode N={n} Q={Q} K={K} D={D} fp32", fns, ["rvqfast exact", "vqp ResidualVQ eval", "faiss IndexFlatL2"])

import test_bench_train as tb  # noqa: E402
warnings.simplefilter("ignore")
theirs, ours = tb._modules()
xt = torch.randn(tb.B, tb.T, tb.D)
table(f"train step N={tb.B * tb.T} Q={tb.Q} K={tb.K} D={tb.D} (fwd+bwd+EMA)",
      {"vector_quantize_pytorch": lambda: tb._step(theirs, xt), "rvqfast": lambda: tb._step(ours, xt)},
      ["vector_quantize_pytorch"])
