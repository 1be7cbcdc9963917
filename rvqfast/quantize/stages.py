"""Stage bookkeeping shared by the residual quantizers built from whole sub-quantizers
(ResidualFSQ, ResidualLFQ, ResidualSimVQ): the quantize-dropout draw and the codes of indices."""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import Tensor

from .distributed import all_reduce_sum_, is_distributed


def shared_dropout_seed(device: torch.device) -> int:
    """A seed for the quantize-dropout draw, the same on all ranks (summed) when distributed."""
    seed = torch.randint(0, 10_000, (), device=device)
    if is_distributed():
        all_reduce_sum_(seed)
    return int(seed.item())


def dropout_last_index(seed: int, cutoff: int, num: int, multiple_of: int) -> int:
    """Index of the last quantizer kept under quantize dropout (vector-quantize-pytorch's rule:
    uniform in ``[cutoff, num)``, rounded up to a multiple of ``multiple_of`` stages)."""
    last = random.Random(seed).randrange(cutoff, num)
    if multiple_of != 1:
        last = math.ceil((last + 1) / multiple_of) * multiple_of - 1
    return last


def last_active_stage(module, device: torch.device, seed: int | None, needs_grad: bool = True) -> int:
    """The last stage ``module`` runs this forward: all of them unless quantize dropout applies
    (training mode, and autograd enabled when ``needs_grad``)."""
    last = module.num_quantizers - 1
    if module.training and module.quantize_dropout and (torch.is_grad_enabled() or not needs_grad):
        if seed is None:
            seed = shared_dropout_seed(device)
        last = dropout_last_index(seed, module.quantize_dropout_cutoff_index, module.num_quantizers, module.quantize_dropout_multiple_of)
    return last


def stage_codes(codebooks: Tensor, indices: Tensor, quantize_dropout: bool) -> Tensor:
    """Codes (Q, B, ..., D) of ``indices`` (B, ..., Q') in ``codebooks`` (Q, K, D); ``-1`` and
    stages past Q' (only allowed with quantize dropout) give zeros."""
    num, qn = codebooks.shape[0], indices.shape[-1]
    if qn > num:
        raise ValueError(f"indices has {qn} stages but the module has {num}")
    if qn < num:
        if not quantize_dropout:
            raise ValueError("indices has fewer stages than num_quantizers: only allowed with quantize_dropout=True")
        indices = F.pad(indices, (0, num - qn), value=-1)
    idx = indices.long().movedim(-1, 0)
    codes = torch.stack([codebooks[q][idx[q].clamp(min=0)] for q in range(num)])
    return codes * (idx >= 0).unsqueeze(-1)
