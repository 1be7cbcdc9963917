"""Export-shaped views of a :class:`~rvqfast.models.tokenizer.MotionTokenizer`.

These modules compute exactly what the tokenizer computes, written with ops every engine runs:

* :class:`DecoderGraph` replaces the tokenizer's masked residual sum (``arange`` / ``&`` / clamp)
  by one ``Gather`` in a table whose row 0 of every stage is zero, so index ``-1`` (stage
  skipped) needs no mask ops.
* :class:`EncoderFront` stops at the residual that the quantizer searches; the exporter appends
  the unrolled search (:mod:`rvqfast.export.rvq_graph`) as plain ONNX nodes, because the
  tokenizer's own search is an ``rvqfast`` custom op that ONNX does not know.

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

    def residual(self, indices: Tensor) -> Tensor:
        codes = F.embedding(indices + self.stage_offset, self.table)  # (B, N, Q, D)
        return codes.sum(dim=-2)

    def _decode(self, categories: Tensor | None, indices: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.uses_posecodes and self.uses_rvq:
            h = self.tok.pose_latent(categories) + self.residual(indices)
        elif self.uses_posecodes:
            h = self.tok.pose_latent(categories)
        else:
            h = self.residual(indices)
        y = self.tok.decoder(h.transpose(1, 2)).transpose(1, 2)
        features = self.tok.denormalize(y)
        return features, features_to_joints(features)

    def forward(self, *codes: Tensor) -> tuple[Tensor, Tensor]:
        if self.uses_posecodes and self.uses_rvq:
            return self._decode(codes[0], codes[1])
        if self.uses_posecodes:
            return self._decode(codes[0], None)
        return self._decode(None, codes[0])


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
        n = features.shape[1] // self.unit
        x = features[:, : n * self.unit]
        categories = self.tok.posecode_categories(x)
        if not self.uses_rvq:
            return (categories,)
        z = self.tok.encoder(self.tok.normalize(x).transpose(1, 2)).transpose(1, 2)
        if self.uses_posecodes:
            z = z - self.tok.pose_latent(categories)
        return categories, z.reshape(-1, z.shape[-1])


__all__ = ["DecoderGraph", "EncoderFront", "residual_table"]

