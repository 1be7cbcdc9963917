"""Pure-PyTorch implementations of every op: the fallback and the oracle for all other backends.

Distances are computed as ``‖c−μ‖² − 2 (x−μ)·(c−μ)`` with μ the codebook mean: the expansion
``‖x‖² + ‖c‖² − 2x·c`` cancels catastrophically in fp32 when data sit far from the origin, and
centring on the codebook removes the common offset before the subtraction happens. The winning
code's distance is then recomputed directly as ``‖x − c‖²`` so ``sqdist`` carries no cancellation
error. Rows are processed in chunks so the N×K distance matrix is never materialised whole.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from . import register

# Bound the distance tile to ~64 MiB of fp32 whatever N and K are.
_TILE_ELEMS = 1 << 24


def _row_chunk(k: int) -> int:
    return max(1, _TILE_ELEMS // max(k, 1))


def search(x: Tensor, codebook: Tensor, precision: str = "exact") -> tuple[Tensor, Tensor]:
    """Nearest code per row of ``x`` (fp32 math; ``precision='bf16'`` screens in bf16 only)."""
    x = x.float()
    cb = codebook.float()
    mu = cb.mean(0)
    cc = cb - mu
    c_norm = (cc * cc).sum(1)
    n = x.shape[0]
    idx = torch.empty(n, dtype=torch.int64, device=x.device)
    step = _row_chunk(cb.shape[0])
    if precision == "bf16":
        # Approximate mode: the product runs in bf16 (fp32 accumulate); no certification.
        cc_t = cc.bfloat16().t()
        for s in range(0, n, step):
            dots = ((x[s : s + step] - mu).bfloat16() @ cc_t).float()
            idx[s : s + step] = (c_norm - 2 * dots).argmin(1)
    else:
        cc_t = cc.t()
        for s in range(0, n, step):
            # argmin returns the first minimum: exact ties resolve to the lowest index.
            idx[s : s + step] = torch.addmm(c_norm, x[s : s + step] - mu, cc_t, alpha=-2).argmin(1)
    diff = x - cb[idx]
    return idx, (diff * diff).sum(1)


@register("reference", "nearest_code")
def nearest_code(x: Tensor, codebook: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    return search(x, codebook, precision)


def rvq_encode_by_stage(
    x: Tensor, codebooks: Tensor, nearest: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    """Greedy RVQ encode, one ``nearest(residual, codebook) -> (idx, dist)`` search per stage;
    returns (indices (N, Q) int64, quantized (N, D) fp32)."""
    residual = x.float().clone()
    quantized = torch.zeros_like(residual)
    q = codebooks.shape[0]
    indices = torch.empty(x.shape[0], q, dtype=torch.int64, device=x.device)
    for stage in range(q):
        cb = codebooks[stage].float()
        idx, _ = nearest(residual, cb)
        code = cb[idx]
        residual -= code
        quantized += code
        indices[:, stage] = idx
    return indices, quantized


@register("reference", "rvq_encode")
def rvq_encode(x: Tensor, codebooks: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    return rvq_encode_by_stage(x, codebooks, lambda r, cb: search(r, cb, precision))


@register("reference", "rvq_decode")
def rvq_decode(indices: Tensor, codebooks: Tensor) -> Tensor:
    q, _, d = codebooks.shape
    out = torch.zeros(indices.shape[0], d, dtype=torch.float32, device=codebooks.device)
    for stage in range(q):
        idx = indices[:, stage]
        keep = idx >= 0
        code = codebooks[stage].float()[idx.clamp(min=0)]
        out += code * keep.unsqueeze(1)
    return out


@register("reference", "ema_stats")
def ema_stats(x: Tensor, indices: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    x = x.float()
    keep = indices >= 0
    idx = indices[keep]
    rows = x[keep]
    counts = torch.zeros(num_codes, dtype=torch.float32, device=x.device)
    counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
    sums = torch.zeros(num_codes, x.shape[1], dtype=torch.float32, device=x.device)
    sums.index_add_(0, idx, rows)
    return counts, sums


@register("reference", "residual_update")
def residual_update(r: Tensor, codebook: Tensor, indices: Tensor, out: Tensor, counts: Tensor | None, sums: Tensor | None) -> None:
    torch.index_select(codebook, 0, indices, out=out)
    torch.sub(r, out, out=out)
    if counts is not None:
        c, s = ema_stats(r, indices, codebook.shape[0])
        counts.copy_(c)
        sums.copy_(s)


def rvq_stages_coefficients(
    residuals: Tensor, g: Tensor, sqnorm: Tensor, code_sq: Tensor, dist_sq: Tensor, commit: Tensor, rotation: bool
) -> tuple[Tensor, Tensor]:
    """Per-row ``S`` (M,) and ``gamma`` (A+1, M) of :func:`rvq_stages_grad`.

    With ``z_q = r_q`` and ``c_q = r_q - r_{q+1}``, every dot product the rotation trick needs
    (rvqfast/quantize/grad.py) follows from ``r_j . g`` and the norms saved by the forward;
    ``commit[q]`` adds to ``gamma_{q+1}`` (the commitment loss's gradient, ``coef (z_q - c_q)``).
    Straight-through: ``S = A``.
    """
    eps = 1e-6
    a, m = residuals.shape[0] - 1, residuals.shape[1]
    gamma = residuals.new_zeros(a + 1, m)
    if rotation:
        # r_j . g for all j in one batched product: (A+1, M, D) x (M, D) -> (A+1, M).
        dots = torch.einsum("jnd,nd->jn", residuals, g)
        nz2, nc2 = sqnorm[:a], code_sq
        zc = 0.5 * (nz2 + nc2 - dist_sq)
        zg, cg = dots[:a], dots[:a] - dots[1:]
        nz, nc = nz2.sqrt(), nc2.sqrt()
        nzc, ncc = nz.clamp(min=eps), nc.clamp(min=eps)
        ug, qg = zg / nzc, cg / ncc
        pp = (nz2 / (nzc * nzc) + nc2 / (ncc * ncc) + 2 * zc / (nzc * ncc)).clamp(min=eps * eps)
        k = 2 * (ug + qg) / pp
        s = nc / nzc
        a_z = s * (2 * qg - k) / nzc
        a_c = -s * k / ncc
        gamma[:a] += a_z + a_c
        gamma[1:] -= a_c
        total = s.sum(0)
    else:
        total = residuals.new_full((m,), float(a))
    gamma[1:] += commit.to(gamma.dtype)[:, None]
    return total, gamma


@register("reference", "rvq_stages_grad")
def rvq_stages_grad(residuals: Tensor, g: Tensor, sqnorm: Tensor, code_sq: Tensor, dist_sq: Tensor, commit: Tensor, rotation: bool) -> Tensor:
    """All stages' gradient as ``S g + sum_j gamma_j r_j`` (:func:`rvq_stages_coefficients`)."""
    total, gamma = rvq_stages_coefficients(residuals, g, sqnorm, code_sq, dist_sq, commit, rotation)
    grad = g * total[:, None]
    for j in range(residuals.shape[0]):
        grad.addcmul_(residuals[j], gamma[j][:, None])
    return grad


# Grouped ops: the loop over groups is the definition the other backends are tested against.
from .grouped import register_per_group  # noqa: E402

grouped_nearest_code, grouped_rvq_encode = register_per_group(
    "reference", nearest_code, rvq_encode, "the reference search / encode of each group's block."
)
