"""Tile-size configurations for the Triton kernels.

Under ``TRITON_INTERPRET=1`` (CPU correctness checks) one small fixed configuration is used:
autotuning in the interpreter would only multiply the (slow) interpreted runs. On a GPU the
kernels are autotuned per (K, D) over the configurations below; which one wins on an H100 is a
measurement still to be done (docs/gpu.md).
"""
from __future__ import annotations

import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# RVQFAST_TRITON_FIXED_CONFIG=1: on a GPU, launch one fixed tiling instead of autotuning (every
# new (K, D) would otherwise benchmark all configs; scripts/gpu_check.py sets it for the tests,
# whose random shapes would autotune on every example).
FIXED_CONFIG = os.environ.get("RVQFAST_TRITON_FIXED_CONFIG") == "1"

# The fused encode keeps a (BLOCK_N, BLOCK_D) residual in registers and a (BLOCK_D, BLOCK_K)
# codebook tile in shared memory; beyond this D it falls back to per-stage launches.
MAX_FUSED_D = 1024
# Fixed small tiles for the interpreter (tl.dot needs every dimension >= 16).
INTERPRET_META = {"BLOCK_N": 16, "BLOCK_K": 16}
# D chunk of the nearest-code kernel (it streams D, so any D works).
MAX_SEARCH_BLOCK_D = 128
# Shared-memory budget used to prune encode configs (H100: 228 KiB per SM, keep headroom).
_SMEM_BUDGET = 160 * 1024


def _configs(table: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    """(BLOCK_N, BLOCK_K, num_warps, num_stages) rows -> triton configs."""
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)
        for bn, bk, warps, stages in table
    ]


def search_configs() -> list[triton.Config]:
    return _configs([
        (64, 64, 4, 3), (128, 64, 4, 3), (128, 128, 8, 3), (64, 128, 4, 4),
        (128, 64, 8, 4), (256, 64, 8, 3), (64, 32, 4, 4), (32, 64, 4, 3),
    ])


def encode_configs() -> list[triton.Config]:
    return _configs([
        (32, 32, 4, 2), (64, 32, 4, 2), (64, 64, 8, 2), (128, 32, 8, 2),
        (32, 64, 4, 3), (64, 32, 8, 3), (128, 64, 8, 2), (16, 64, 4, 3),
    ])


def prune_encode_configs(configs, named_args, **kwargs):
    """Drop tilings whose residual / codebook tiles cannot fit on chip for this D."""
    block_d = kwargs.get("BLOCK_D") or named_args.get("BLOCK_D")
    keep = []
    for c in configs:
        bn, bk = c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
        smem = 4 * block_d * bk * c.num_stages
        regs_per_thread = (2 * bn * block_d) // (32 * c.num_warps)  # residual + quantized
        if smem <= _SMEM_BUDGET and regs_per_thread <= 128:
            keep.append(c)
    return keep or [min(configs, key=lambda c: c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"])]


def fixed_config(encode: bool, block_d: int) -> triton.Config:
    """The one tiling used without autotuning: the first search config, or the first encode
    config that fits on chip for this BLOCK_D."""
    if not encode:
        return search_configs()[0]
    return prune_encode_configs(encode_configs(), {"BLOCK_D": block_d})[0]
