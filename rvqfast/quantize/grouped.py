"""Grouped residual VQ, a drop-in for ``vector_quantize_pytorch.GroupedResidualVQ``."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .frontend import check_mask, from_sequence, indices_layout, projections, to_sequence
from .residual_vq import ResidualVQ


def _scatter_rows(t: Tensor, keep: Tensor, fill: float) -> Tensor:
    """(G, M', ...) rows of the kept positions -> (G, M, ...) with ``fill`` elsewhere."""
    full = t.new_full((t.shape[0], keep.shape[0]) + tuple(t.shape[2:]), fill)
    full[:, keep] = t
    return full


class _GroupProjection(nn.Module):
    """One group's projections, under the names vector-quantize-pytorch gives them
    (``rvqs.{g}.project_in`` / ``project_out``), so its checkpoints load unchanged."""

    def __init__(self, dim: int, codebook_dim: int) -> None:
        super().__init__()
        self.project_in, self.project_out = projections(dim, codebook_dim)


class GroupedResidualVQ(ResidualVQ):
    """The feature dimension split into ``groups`` chunks, each quantized by its own residual VQ.

    Takes ``vector_quantize_pytorch.GroupedResidualVQ``'s arguments: ``dim``, ``groups``,
    ``accept_image_fmap`` and every :class:`ResidualVQ` keyword (applied to each group, whose
    ``dim`` is ``dim // groups``). The codebooks of all groups and stages live in one
    (G*Q, K, codebook_dim) tensor of one engine; in eval all groups and stages run through one
    ``grouped_rvq_encode`` op call (cosine codebooks: one grouped search call per stage), in
    training each stage searches all groups in one ``grouped_nearest_code`` call. State dicts of vector-quantize-pytorch (``rvqs.{g}.layers.{q}._codebook.*``)
    load directly.

    ``forward(x, indices=None, return_all_codes=False, sample_codebook_temp=None,
    freeze_codebook=False, mask=None)`` returns ``(quantized, indices (G, ..., Q), commit_losses
    (G, Q))`` (plus all codes (G, Q, ..., codebook_dim)); with ``indices`` (one (B, N, Q) tensor
    per group) it returns ``(quantized, summed cross-entropy)``.
    """

    # False: quantize the groups one after another (the searches per group, as before the
    # grouped ops); benchmarks compare the two paths.
    _one_call = True

    def __init__(self, *, dim: int, groups: int = 1, accept_image_fmap: bool = False, **kwargs: Any) -> None:
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or dim % groups:
            raise ValueError(f"dim must be a positive int divisible by groups={groups}, got {dim!r}")
        super().__init__(dim=dim // groups, accept_image_fmap=accept_image_fmap, _groups=groups, **kwargs)
        self.groups = groups
        self.dim_per_group = dim // groups
        self.dim = dim
        # Projections live per group (rvqs.{g}.*), not on the engine.
        del self.project_in, self.project_out
        self.rvqs = nn.ModuleList(_GroupProjection(self.dim_per_group, self.codebook_dim) for _ in range(groups))

    @property
    def split_dim(self) -> int:
        return 1 if self.accept_image_fmap or not self.channel_last else -1

    @property
    def codebooks(self) -> Tensor:
        """(G, Q, K, codebook_dim) codes of every group and stage."""
        return torch.stack([self._group_codebooks(g) for g in range(self.groups)])

    def _check_group_indices(self, indices) -> list[Tensor]:
        if isinstance(indices, Tensor):
            indices = list(indices.unbind(0))
        if not isinstance(indices, (list, tuple)) or len(indices) != self.groups:
            raise ValueError(f"indices must hold one tensor per group ({self.groups}), got {type(indices).__name__}")
        return list(indices)

    def get_codes_from_indices(self, indices) -> Tensor:
        """Codes (G, Q, ..., codebook_dim) for indices (G, ..., Q)."""
        return torch.stack([self._codes_from_indices(i, g) for g, i in enumerate(self._check_group_indices(indices))])

    def get_output_from_indices(self, indices) -> Tensor:
        """Decoded output (B, ..., dim) for indices (G, B, ..., Q) (channels first for image or
        channel-first layouts)."""
        outs = [self.rvqs[g].project_out(self._codes_from_indices(i, g).sum(0)) for g, i in enumerate(self._check_group_indices(indices))]
        out = torch.cat(outs, -1)
        if self.accept_image_fmap or not self.channel_last:
            out = out.movedim(-1, 1)
        return out

    def _quantize_groups(self, hs: list[Tensor], mask: Tensor | None, last: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Every group at once: per group ``(quantized (B, N, cd), indices (B, N, Q), losses
        (Q,))`` as :meth:`_quantize_group` gives. Eval runs all groups and stages in one fused op
        call; training searches each stage of all groups in one op call (where that is exact,
        see ``_groups_in_lockstep``). Masked-out positions get zeros and index ``-1``."""
        h = torch.stack(hs)  # (G, B, N, cd)
        g_n, b, n, d = h.shape
        rows = h.reshape(g_n, b * n, d)
        flat = None if mask is None else mask.reshape(-1)
        if flat is not None:
            rows = rows[:, flat]
        if self.training:
            out, idx, losses = (torch.stack(t) for t in zip(*self.train_groups_flat(rows, last)))
        else:
            out, idx, losses = self.eval_groups_flat(rows, last)
        if flat is not None:
            out = _scatter_rows(out, flat, 0.0)
            idx = _scatter_rows(idx, flat, -1)
        out = out.to(h.dtype).reshape(g_n, b, n, d)
        idx = idx.reshape(g_n, b, n, -1)
        return [(out[g],) + self._finish_group(idx[g], losses[g], g) for g in range(g_n)]

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        indices=None,
        return_all_codes: bool = False,
        sample_codebook_temp: float | None = None,
        freeze_codebook: bool | None = None,
        mask: Tensor | None = None,
    ):
        """Quantize ``x``; see the class docstring for shapes."""
        xs, layout = to_sequence(x, self.dim, channel_last=self.channel_last, accept_image_fmap=self.accept_image_fmap, mask=mask)
        mask = check_mask(mask, xs.shape[0], xs.shape[1])
        chunks = xs.chunk(self.groups, dim=-1)
        saved = self.set_forward_options(sample_codebook_temp, freeze_codebook)
        try:
            if indices is not None and len(indices) > 0:
                parts = [
                    self._forward_ce(self.rvqs[g].project_in(c), i, mask, g, self.rvqs[g].project_out)
                    for g, (c, i) in enumerate(zip(chunks, self._check_group_indices(indices)))
                ]
                out = torch.cat([p[0] for p in parts], -1)
                return from_sequence(out, layout), sum(p[1] for p in parts)
            # One dropout cutoff for all groups, as vector-quantize-pytorch's shared seed gives.
            last = self.last_stage(xs.device)
            hs = [self.rvqs[g].project_in(c) for g, c in enumerate(chunks)]
            if not self._one_call:
                parts = [self._quantize_group(h, mask, last, g) for g, h in enumerate(hs)]
            else:
                parts = self._quantize_groups(hs, mask, last)
            outs = [self.rvqs[g].project_out(p[0]) for g, p in enumerate(parts)]
            idxs = [p[1] for p in parts]
            losses = [p[2] for p in parts]
        finally:
            self.restore_forward_options(saved)
        q = torch.cat(outs, -1)
        if mask is not None and self.has_projections:
            q = q * mask.unsqueeze(-1)
        q = from_sequence(q, layout)
        idx = torch.stack([indices_layout(i, layout) for i in idxs])
        ret = (q, idx, torch.stack(losses))
        if return_all_codes:
            ret = ret + (self.get_codes_from_indices(idx),)
        return ret
