"""The one place the tokenizer touches its residual quantizer's internals."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rvqfast.quantize import ResidualVQ


def quantize_first_stages(rvq: ResidualVQ, x: Tensor, n_active: int) -> tuple[Tensor, Tensor, Tensor]:
    """Quantize ``x`` (B, N, D) through the first ``n_active`` stages only.

    The module's own ``quantize_dropout`` keeps a uniform random number of stages on EVERY
    training step; the tokenizer wants that only with probability 0.2 and draws ``n_active``
    itself (from a generator all ranks share), then runs the same pass ``forward`` uses
    (k-means init, EMA updates and dead-code expiry of the active stages included).

    Returns ``(quantized (B, N, D), indices (B, N, Q) with -1 for skipped stages,
    commitment losses (Q,) with 0 for skipped stages)``.
    """
    q = rvq.num_quantizers
    if not 1 <= n_active <= q:
        raise ValueError(f"n_active: expected 1..{q}, got {n_active}")
    out, idx, losses = rvq.quantize_seq(x, None, n_active - 1)
    pad = q - idx.shape[-1]
    if pad:
        idx = F.pad(idx, (0, pad), value=-1)
        losses = F.pad(losses, (0, pad), value=0.0)
    return out, idx, losses


__all__ = ["ResidualVQ", "quantize_first_stages"]
