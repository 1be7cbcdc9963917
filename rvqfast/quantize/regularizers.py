"""Codebook regularisers of vector-quantize-pytorch, written on rvqfast's (S, K, D) codebooks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def orthogonal_loss(codebooks: Tensor) -> Tensor:
    """Orthogonality penalty of Shin et al. 2021 (arXiv:2112.00384, eq. 2) on (H, N, D) codes:
    mean squared cosine similarity over all code pairs, minus its value ``1/N`` for orthogonal
    codes (the diagonal)."""
    h, n = codebooks.shape[:2]
    unit = F.normalize(codebooks, dim=-1, eps=1e-6)
    cos = torch.einsum("hid,hjd->hij", unit, unit)
    return (cos * cos).sum() / (h * n * n) - 1.0 / n


def orthogonal_reg(
    codebooks: Tensor, indices: Tensor | None, *, active_codes_only: bool, max_codes: int | None
) -> Tensor:
    """:func:`orthogonal_loss` over the codes vector-quantize-pytorch picks: only those used in
    ``indices`` (``-1`` ignored) when ``active_codes_only``, then at most ``max_codes`` drawn at
    random (global torch RNG)."""
    if active_codes_only:
        used = torch.unique(indices)
        used = used[used >= 0]
        codebooks = codebooks[:, used]
    n = codebooks.shape[-2]
    if max_codes is not None and n > max_codes:
        codebooks = codebooks[:, torch.randperm(n, device=codebooks.device)[:max_codes]]
    return orthogonal_loss(codebooks)


def check_orthogonal(weight: float, max_codes: int | None) -> None:
    """Validate the orthogonal-regularisation options (named in the error)."""
    if float(weight) < 0:
        raise ValueError(f"orthogonal_reg_weight must be >= 0, got {weight!r}")
    if max_codes is not None and (isinstance(max_codes, bool) or not isinstance(max_codes, int) or max_codes < 1):
        raise ValueError(f"orthogonal_reg_max_codes must be a positive int or None, got {max_codes!r}")
