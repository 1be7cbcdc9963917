"""Export-shaped views of a :class:`~rvqfast.models.tokenizer.MotionTokenizer`.

These modules compute exactly what the tokenizer computes, written with ops every engine runs:

* :class:`DecoderGraph` replaces the tokenizer's masked residual sum (``arange`` / ``&`` / clamp)
  by one ``Gather`` in a table whose row 0 of every stage is zero, so index ``-1`` (stage
  skipped) needs no mask ops.
* :class:`EncoderFront` stops at the residual that the quantizer searches; the exporter appends
  the unrolled search (:mod:`rvqfast.export.rvq_graph`) as plain ONNX nodes, because the
  tokenizer's own search is an ``rvqfast`` custom op that ONNX does not know.

Both guard their inputs themselves, because an engine calls the graph directly and nothing else
checks what it feeds (see "Bad input" in export/UNITY.md / UNREAL.md): out-of-range codes or
NaN/Inf/huge features are replaced by safe values (category 0, stage skipped, feature 0), the
affected tokens are flagged 0 in an extra ``valid`` (B, N) output, and the encoder returns -1
codes for them. Only allow-listed ops are used (comparisons, Cast, ReduceSum, Where).

Both read the tokenizer's public pieces (``pose_latent``, ``posecode_categories``, ``encoder``,
``decoder``, ``normalize`` / ``denormalize``, ``rvq.codebooks``); the parity tests compare the
exported graphs with ``MotionTokenizer.encode`` / ``decode`` so any divergence shows up there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rvqfast.motion.features import features_to_joints

from .rvq_graph import codebooks_of

# |raw feature| above which the encoder flags a token invalid: the dataset loader's bound
# (rvqfast.data.humanml3d.MAX_ABS), far beyond any real motion and far below float32 overflow.
FEATURE_LIMIT = 1e5


def _count_true(mask: Tensor) -> Tensor:
    """Number of True entries along the last dim, as float (Cast + ReduceSum: allow-listed)."""
    return mask.to(torch.float32).sum(dim=-1)


def residual_table(codebooks: Tensor) -> Tensor:
    """(Q, K, D) codebooks -> (Q*(K+1), D) table; row ``s*(K+1)`` is zero (index -1 of stage s)."""
    q, k, d = codebooks.shape
    zeros = codebooks.new_zeros(q, 1, d)
    return torch.cat([zeros, codebooks], dim=1).reshape(q * (k + 1), d)


class DecoderGraph(nn.Module):
    """(categories (B, N, 70), indices (B, N, Q)) -> (features (B, 4N, 263), joints (B, 4N, 22, 3)).

    Inputs depend on the variant: ``posecode`` takes categories only, ``rvq`` indices only.
    """

    def __init__(self, tokenizer: nn.Module) -> None:
        super().__init__()
        self.tok = tokenizer
        cfg = tokenizer.config
        self.uses_posecodes = cfg.uses_posecodes
        self.uses_rvq = cfg.uses_rvq
        if self.uses_rvq:
            cb = codebooks_of(tokenizer.rvq)
            q, k, _ = cb.shape
            self.register_buffer("table", residual_table(cb))
            # +1 shifts -1 (skipped) onto the zero row; s*(K+1) selects stage s's block.
            self.register_buffer("stage_offset", torch.arange(q, dtype=torch.int64) * (k + 1) + 1)
            self.codebook_size = k
        if self.uses_posecodes:
            self.register_buffer("slot_sizes", tokenizer.slot_sizes.clone())

    def residual(self, indices: Tensor) -> Tensor:
        codes = F.embedding(indices + self.stage_offset, self.table)  # (B, N, Q, D)
        return codes.sum(dim=-2)

    def guard_categories(self, categories: Tensor) -> tuple[Tensor, Tensor]:
        """(categories with out-of-range entries set to 0, per-token count of such entries)."""
        bad = (categories < 0).to(torch.int64) + (categories >= self.slot_sizes).to(torch.int64)
        return torch.where(bad > 0, torch.zeros_like(categories), categories), _count_true(bad > 0)

    def guard_indices(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """(indices with out-of-range entries set to -1 = stage skipped, per-token bad count)."""
        bad = (indices < -1).to(torch.int64) + (indices >= self.codebook_size).to(torch.int64)
        return torch.where(bad > 0, torch.full_like(indices, -1), indices), _count_true(bad > 0)

    def _decode(self, categories: Tensor | None, indices: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.uses_posecodes and self.uses_rvq:
            h = self.tok.pose_latent(categories) + self.residual(indices)
        elif self.uses_posecodes:
            h = self.tok.pose_latent(categories)
        else:
            h = self.residual(indices)
        y = self.tok.decoder(h.transpose(1, 2)).transpose(1, 2)
        features = self.tok.to_skeleton(self.tok.denormalize(y))
        return features, features_to_joints(features)

    def forward(self, *codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> (features, joints, valid (B, N) int64: 1 = every code of the token was in range)."""
        categories = indices = None
        bad = None
        if self.uses_posecodes:
            categories, bad = self.guard_categories(codes[0])
        if self.uses_rvq:
            indices, bad_i = self.guard_indices(codes[-1])
            bad = bad_i if bad is None else bad + bad_i
        features, joints = self._decode(categories, indices)
        return features, joints, (bad == 0).to(torch.int64)


class EncoderFront(nn.Module):
    """features (B, T, 263) -> (categories (B, N, 70), residual (B*N, D)) with N = T // 4.

    Trailing ``T mod 4`` frames are dropped in the graph so a wrong length can never broadcast
    into a silently wrong result (the Python wrapper refuses such lengths before this point).
    For the ``posecode`` variant only the categories are returned.
    """

    def __init__(self, tokenizer: nn.Module) -> None:
        super().__init__()
        self.tok = tokenizer
        self.unit = tokenizer.config.frames_per_token
        self.uses_posecodes = tokenizer.config.uses_posecodes
        self.uses_rvq = tokenizer.config.uses_rvq

    def forward(self, features: Tensor) -> tuple[Tensor, ...]:
        """-> (categories, [residual,] valid (B, N) int64). Tokens with a NaN/Inf/|x| > FEATURE_LIMIT
        value in their frames are encoded from zeros instead, flagged 0 and given category -1
        (the exporter also sets their indices to -1)."""
        n = features.shape[1] // self.unit
        x = features[:, : n * self.unit]
        ok = x.abs() <= FEATURE_LIMIT  # False for NaN and +-Inf as well
        x = torch.where(ok, x, torch.zeros_like(x))
        bad = _count_true(~ok)  # (B, 4N)
        tok_ok = bad.reshape(bad.shape[0], n, self.unit).sum(dim=-1) == 0  # (B, N)
        categories = self.tok.posecode_categories(x)
        valid = tok_ok.to(torch.int64)
        if not self.uses_rvq:
            return torch.where(tok_ok.unsqueeze(-1), categories, torch.full_like(categories, -1)), valid
        z = self.tok.encoder(self.tok.normalize(x).transpose(1, 2)).transpose(1, 2)
        if self.uses_posecodes:
            z = z - self.tok.pose_latent(categories)
        categories = torch.where(tok_ok.unsqueeze(-1), categories, torch.full_like(categories, -1))
        return categories, z.reshape(-1, z.shape[-1]), valid


__all__ = ["DecoderGraph", "EncoderFront", "residual_table", "FEATURE_LIMIT"]

