"""Training step (forward + backward + EMA, N=4096, Q=6, K=512, D=512) of two checkouts of
rvqfast, A/B in alternating processes (a before/after check for changes to the training path).

    python benchmarks/train_ab.py OLD_ROOT NEW_ROOT [threads] [rounds] [--vqp] [--cold]

Each round starts one process per checkout (order alternates), with ``PYTHONPATH`` and the
working directory set to that checkout, whose ``rvqfast`` (and built extension) it imports.
A process runs one vector-quantize-pytorch step first unless ``--cold`` (the heap then looks as
in ``benchmarks/test_bench_train.py``, whose vector-quantize-pytorch row runs first; ``--cold``
is a plain training loop, where fresh large blocks cost first-touch page faults), then 2 warm-up
and 7 timed rvqfast steps (and with ``--vqp`` 2 + 3 vector-quantize-pytorch steps on the same
codebooks, for the ratio within the process). Prints per process min / median process CPU time
and wall time per step and the minor page faults of each step, then the ratio of the medians.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import json, resource, statistics, sys, time, warnings
import torch
threads, root, vqp, cold = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
torch.set_num_threads(threads)
sys.path.insert(0, "benchmarks")
import test_bench_train as tb
import rvqfast
assert rvqfast.__file__.startswith(root), f"imported {rvqfast.__file__}, expected a file under {root}"
theirs, ours = tb._modules()
x = torch.randn(tb.B, tb.T, tb.D)
warnings.simplefilter("ignore")
if not cold:
    tb._step(theirs, x)
res = {}
for name, m, n in [("rvqfast", ours, 7)] + ([("vqp", theirs, 3)] if vqp else []):
    for _ in range(2):
        tb._step(m, x)
    cpu, wall, faults = [], [], []
    for _ in range(n):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0, c0 = time.perf_counter(), time.process_time()
        tb._step(m, x)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    res[name] = {"cpu_min": min(cpu) * 1e3, "cpu_med": statistics.median(cpu) * 1e3,
                 "wall_min": min(wall) * 1e3, "wall_med": statistics.median(wall) * 1e3, "faults": faults}
print(json.dumps(res))
'''


def main(argv: list[str]) -> None:
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    if len(args) < 2:
        sys.exit(__doc__)
    roots = {"old": os.path.abspath(args[0]), "new": os.path.abspath(args[1])}
    threads = int(args[2]) if len(args) > 2 else 1
    rounds = int(args[3]) if len(args) > 3 else 6
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"CPU {cpu}; threads {threads}; rounds {rounds}; flags {sorted(flags)}; load at start {os.getloadavg()}")
    out: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(rounds):
        for tag in ("old", "new") if r % 2 == 0 else ("new", "old"):
            root = roots[tag]
            env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS=str(threads))
            cmd = [sys.executable, "-c", CHILD, str(threads), root, "1" if "--vqp" in flags else "0", "1" if "--cold" in flags else "0"]
            p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
            if p.returncode:
                sys.exit(p.stderr[-3000:])
            d = json.loads(p.stdout.strip().splitlines()[-1])
            out[tag].append(d)
            print(r, tag, json.dumps({k: {kk: round(vv, 1) if isinstance(vv, float) else vv for kk, vv in v.items()} for k, v in d.items()}), flush=True)
    med = {}
    for tag, ds in out.items():
        med[tag] = statistics.median(d["rvqfast"]["cpu_med"] for d in ds)
        line = f"{tag}: rvqfast median CPU {med[tag]:.1f} ms, best {min(d['rvqfast']['cpu_min'] for d in ds):.1f}, best wall {min(d['rvqfast']['wall_min'] for d in ds):.1f}"
        if "--vqp" in flags:
            ratios = [d["vqp"]["cpu_min"] / d["rvqfast"]["cpu_min"] for d in ds]
            line += f"; vqp / rvqfast per process (CPU min) median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        print(line)
    print(f"old / new (median CPU) = {med['old'] / med['new']:.3f}; load at end {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
