"""The crossover table of docs/certified.md ("Choosing the screen"): rvq_encode at N=3136, Q=6,
random codebooks (stage scales 1 .. 0.1), exact vs certified-bf16 vs certified-int8 on the CPU
backend. Thread CPU time of single-threaded runs (wall time on a shared machine is too noisy),
best of 5 alternating rounds; candidates per row-stage from certified_stats(); every precision's
indices are checked equal to the exact ones first. Prints a markdown table.

Run from the repository root: python benchmarks/certified_crossovers.py
(RVQFAST_INT8_GEMM=onednn measures the oneDNN int8 GEMM instead of the VNNI kernel.)"""
import platform
import time

import torch

from rvqfast import ops
from rvqfast.backends import cpu

torch.set_num_threads(1)
cpu_name = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"CPU {cpu_name}, torch {torch.__version__}, 1 thread, int8 GEMM kernel: {cpu.int8_gemm_kernel()}")
print("| K | D | exact ms | certified-bf16 ms (cand.) | certified-int8 ms (cand.) |")
print("|---|---|---|---|---|")
for K, D in [(512,32),(512,64),(512,128),(512,256),(512,512),(4096,64),(4096,128),(256,128)]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3136, D, generator=g)
    cbs = torch.randn(6, K, D, generator=g) * torch.logspace(0, -1, 6).view(6, 1, 1)
    ps = ["exact", "certified-bf16", "certified-int8"]
    cand = {}
    ref = None
    for p in ps:
        cpu.reset_certified_stats()
        idx, _ = ops.rvq_encode(x, cbs, backend="cpu", precision=p)
        st = cpu.certified_stats(); cand[p] = st["mean_candidates"] if st["rows"] else None
        if ref is None: ref = idx
        assert torch.equal(idx, ref), p
    ts = {p: [] for p in ps}
    for _ in range(5):
        for p in ps:
            t = time.process_time(); ops.rvq_encode(x, cbs, backend="cpu", precision=p); ts[p].append(time.process_time() - t)
    b = {p: min(v) * 1e3 for p, v in ts.items()}
    print(f"| {K} | {D} | {b['exact']:.1f} | {b['certified-bf16']:.1f} ({cand['certified-bf16']:.2f}) | {b['certified-int8']:.1f} ({cand['certified-int8']:.2f}) |")
