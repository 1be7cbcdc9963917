"""Stage bookkeeping shared by the residual quantizers built from whole sub-quantizers
(ResidualFSQ, ResidualLFQ, ResidualSimVQ): the quantize-dropout draw, the codes of indices, and
the grouped wrapper (GroupedResidualFSQ, GroupedResidualLFQ)."""
from __future__ import annotations

import math
import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


class GroupedStages(nn.Module):
    """The feature dimension split into ``groups`` chunks, each quantized by its own residual
    quantizer ``rvqs[g]`` (vector-quantize-pytorch's ``GroupedResidual*`` layout), all groups
    sharing one quantize-dropout draw."""

    def __init__(self, make: Callable[[int], nn.Module], *, dim: int, groups: int, accept_image_fmap: bool) -> None:
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or dim % groups:
            raise ValueError(f"groups must be a positive int dividing dim={dim}, got {groups!r}")
        self.dim = dim
        self.groups = groups
        self.accept_image_fmap = bool(accept_image_fmap)
        self.rvqs = nn.ModuleList(make(dim // groups) for _ in range(groups))

    @property
    def codebooks(self) -> Tensor:
        """(G, Q, K, codebook_dim) codebooks of every group."""
        return torch.stack([r.codebooks for r in self.rvqs])

    @property
    def split_dim(self) -> int:
        return 1 if self.accept_image_fmap else -1

    def get_codes_from_indices(self, indices) -> Tensor:
        """Codes (G, Q, B, ..., codebook_dim) of indices (G, B, ..., Q)."""
        return torch.stack([r.get_codes_from_indices(i) for r, i in zip(self.rvqs, indices)])

    def get_output_from_indices(self, indices) -> Tensor:
        return torch.cat([r.get_output_from_indices(i) for r, i in zip(self.rvqs, indices)], dim=self.split_dim)

    def _forward_groups(self, x: Tensor, return_all_codes: bool, **fwd) -> tuple:
        """Each group's forward on its chunk; returns quantized (concatenated), the other outputs
        stacked over groups, and the groups' codes as a tuple when asked (as upstream)."""
        if x.shape[self.split_dim] != self.dim:
            raise ValueError(f"x has {x.shape[self.split_dim]} features (dim {self.split_dim}) but dim={self.dim}")
        # Drawn in every training forward as upstream does (the same RNG stream); under
        # torch.compile only when some group uses it (the draw is a graph break).
        used = any(r.quantize_dropout for r in self.rvqs)
        seed = shared_dropout_seed(x.device) if self.training and (used or not torch.compiler.is_compiling()) else None
        outs = [
            r(c, return_all_codes=return_all_codes, rand_quantize_dropout_fixed_seed=seed, **fwd)
            for r, c in zip(self.rvqs, x.chunk(self.groups, dim=self.split_dim))
        ]
        n_stacked = len(outs[0]) - (2 if return_all_codes else 1)
        ret = (torch.cat([o[0] for o in outs], dim=self.split_dim),)
        ret += tuple(torch.stack([o[1 + k] for o in outs]) for k in range(n_stacked))
        if return_all_codes:
            ret += (tuple(o[-1] for o in outs),)
        return ret
