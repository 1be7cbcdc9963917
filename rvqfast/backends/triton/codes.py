"""Triton kernels that read codes back: the fused RVQ decode and the EMA statistics.

Decode gathers each stage's code and sums in fp32 in stage order (the reference's order, so the
result is bitwise identical); ``-1`` stages add nothing. The EMA statistics scatter rows into
per-code counts and sums with fp32 atomics; the order of atomic adds is not fixed on a GPU, so
sums agree with the reference to rounding, not bitwise. (A sort-based segment sum is the
deterministic alternative; which is faster is to be measured on a GPU, docs/gpu.md.)
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def rvq_decode_kernel(
    idx_ptr, cb_ptr, out_ptr, N, K, D, Q,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Grid (row blocks, D blocks): out[n, d] = sum_q cb[q, idx[n, q], d] over idx >= 0."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ds = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < N
    dmask = ds < D
    rows64 = rows.to(tl.int64)
    acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for q in range(0, Q):
        idx = tl.load(idx_ptr + rows64 * Q + q, mask=rmask, other=-1)
        keep = idx >= 0
        m2 = keep[:, None] & dmask[None, :]
        # idx is int64, so (q*K + idx) * D is computed in int64 even when Q*K*D >= 2**31.
        code = tl.load(cb_ptr + (idx[:, None] + q * K) * D + ds[None, :], mask=m2, other=0.0)
        acc += code.to(tl.float32)
    tl.store(out_ptr + rows64[:, None] * D + ds[None, :], acc, mask=rmask[:, None] & dmask[None, :])


@triton.jit
def ema_stats_kernel(
    x_ptr, idx_ptr, counts_ptr, sums_ptr, N, D,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Grid (row blocks, D blocks): atomically add each kept row to its code's sum (and count)."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ds = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < N
    dmask = ds < D
    idx = tl.load(idx_ptr + rows, mask=rmask, other=-1)
    keep = idx >= 0
    if tl.program_id(1) == 0:
        tl.atomic_add(counts_ptr + idx, tl.full([BLOCK_N], 1.0, tl.float32), mask=keep)
    m2 = keep[:, None] & dmask[None, :]
    x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * D + ds[None, :], mask=m2, other=0.0).to(tl.float32)
    tl.atomic_add(sums_ptr + idx[:, None] * D + ds[None, :], x, mask=m2)
