"""Grouped ops built from a backend's single-group kernels (``grouped_nearest_code``,
``grouped_rvq_encode``; schemas in :mod:`rvqfast._ops`).

Layout: groups lead, ``x`` (G, N, D) and codebooks (G, K, D) / (G, Q, K, D), so each group's
rows, codes and outputs are one contiguous block and a per-group kernel reads them in place.

:func:`register_per_group` registers, for a backend, the two grouped ops as a loop over groups
calling that backend's own ``nearest_code`` / ``rvq_encode`` on each block. The reference backend
uses it (the loop over groups *is* the definition the other backends are tested against), and so
do the backends without a grouped kernel (Triton, CUDA): one op call for the caller, G kernel
launches underneath. The CPU backend has a C++ grouped kernel (one call into the extension for
all groups and stages).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from . import register

Search = Callable[[Tensor, Tensor, str], tuple[Tensor, Tensor]]


def grouped_outputs(x: Tensor, g: int, n: int, tail: tuple[int, ...], width: int) -> tuple[Tensor, Tensor]:
    """Empty (G, N, *tail) int64 indices and (G, N, width) fp32 values on ``x``'s device."""
    return (
        torch.empty((g, n) + tail, dtype=torch.int64, device=x.device),
        torch.empty((g, n, width) if width else (g, n), dtype=torch.float32, device=x.device),
    )


def per_group_nearest_code(nearest: Search) -> Search:
    """``grouped_nearest_code`` as one ``nearest(x[g], codebooks[g], precision)`` per group."""

    def grouped_nearest_code(x: Tensor, codebooks: Tensor, precision: str) -> tuple[Tensor, Tensor]:
        g, n = x.shape[0], x.shape[1]
        idx, dist = grouped_outputs(x, g, n, (), 0)
        for i in range(g):
            idx[i], dist[i] = nearest(x[i], codebooks[i], precision)
        return idx, dist

    return grouped_nearest_code


def per_group_rvq_encode(encode: Search) -> Search:
    """``grouped_rvq_encode`` as one ``encode(x[g], codebooks[g], precision)`` per group."""

    def grouped_rvq_encode(x: Tensor, codebooks: Tensor, precision: str) -> tuple[Tensor, Tensor]:
        g, n, d = x.shape
        idx, quant = grouped_outputs(x, g, n, (codebooks.shape[1],), d)
        for i in range(g):
            idx[i], quant[i] = encode(x[i], codebooks[i], precision)
        return idx, quant

    return grouped_rvq_encode


def register_per_group(backend: str, nearest: Search, encode: Search, how: str) -> tuple[Search, Search]:
    """Register ``backend``'s grouped ops as per-group loops over ``nearest`` / ``encode``.

    ``how`` is appended to the docstrings (what each group's call runs). The registered functions
    carry the single-group kernels' ``precisions`` / ``choose_certified`` so precision resolution
    sees the same capabilities. Returns ``(grouped_nearest_code, grouped_rvq_encode)``.
    """
    gn, ge = per_group_nearest_code(nearest), per_group_rvq_encode(encode)
    for fn, single in ((gn, nearest), (ge, encode)):
        fn.__doc__ = f"Loop over groups: {how}"
        for attr in ("precisions", "choose_certified"):
            if hasattr(single, attr):
                setattr(fn, attr, getattr(single, attr))
        register(backend, fn.__name__)(fn)
    return gn, ge
