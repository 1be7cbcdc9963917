"""Residual vector quantization, a drop-in for ``vector_quantize_pytorch.ResidualVQ``."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .compat import reject_kwargs
from .core import QuantizerCore
from .regularizers import check_orthogonal, orthogonal_reg
from .frontend import (
    check_mask, code_logits, core_options, from_sequence, indices_layout, output_layout, projections, to_sequence,
)


class ResidualVQ(QuantizerCore):
    """Residual VQ (Zeghidour et al. 2021, alg. 1) with EMA codebooks, on rvqfast's kernels.

    Takes the keyword arguments of ``vector_quantize_pytorch.ResidualVQ`` (1.32) for the
    features listed below, with the same defaults; any other keyword raises ``TypeError``.

    Args:
        dim: input feature size.
        num_quantizers: number of stages Q.
        codebook_size: codes per stage K (an int, or a tuple of equal ints).
        codebook_dim: code size; when it differs from ``dim`` inputs are projected in and out.
        shared_codebook: one codebook for all stages.
        heads: must be 1 (as in vector-quantize-pytorch); ``separate_codebook_per_head`` is
            accepted and has no effect with one head.
        orthogonal_reg_weight, orthogonal_reg_active_codes_only, orthogonal_reg_max_codes: each
            stage's loss gains the orthogonality penalty of its codebook (see
            :class:`VectorQuantize`).
        freeze_codebook: no EMA update or dead-code replacement (a forward argument overrides it).
        quantize_dropout: in training, quantize through a random number of stages (the same
            for the whole batch); later stages get index ``-1`` and loss 0.
        quantize_dropout_cutoff_index: the first stage that may be the last one kept.
        quantize_dropout_multiple_of: the number of stages kept is rounded up to a multiple of it.
        accept_image_fmap: inputs are (B, C, H, W); indices come out as (B, H, W, Q).
        channel_last: when False inputs are (B, D, N).
        decay, eps: EMA decay and Laplace-smoothing epsilon of the codebook update.
        kmeans_init, kmeans_iters: initialise each codebook by k-means on its first batch.
        threshold_ema_dead_code: codes whose EMA count falls below it are replaced by random
            inputs of the batch (training only).
        commitment_weight: weight of each stage's ``mean((code - input)^2)`` loss.
        ema_update: update codes by EMA of their assigned inputs (default True).
        learnable_codebook: codes are a parameter learned through the commitment loss
            (needs ``ema_update=False``).
        use_cosine_sim: l2-normalised inputs and codes, codes chosen by dot product.
        sync_codebook: all-reduce codebook statistics across ranks (default: when
            ``torch.distributed`` runs with more than one process).
        rotation_trick: gradient through the quantizer by the rotation trick (default True
            when ``codebook_dim > 1`` and not ``straight_through``); else straight-through.
        stochastic_sample_codes, sample_codebook_temp: Gumbel sampling of codes in training.
        straight_through: accepted for compatibility; selects the straight-through gradient.
        backend: rvqfast backend for the search (``"auto"``, ``"reference"``, ``"cpu"``, ...).
        precision: search precision (``"exact"``, ``"certified"``, ``"bf16"``, ``"auto"``).

    ``forward(x, mask=None, indices=None, return_all_codes=False, sample_codebook_temp=None,
    freeze_codebook=False)`` returns
    ``(quantized, indices (..., Q) int64, commit_losses (Q,))`` (plus all codes (Q, ..., D)).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_quantizers: int | None = None,
        codebook_size: int | tuple[int, ...],
        codebook_dim: int | None = None,
        shared_codebook: bool = False,
        heads: int = 1,
        quantize_dropout: bool | float = False,
        quantize_dropout_cutoff_index: int = 0,
        quantize_dropout_multiple_of: int = 1,
        accept_image_fmap: bool = False,
        channel_last: bool = True,
        decay: float = 0.8,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0,
        commitment_weight: float = 1.0,
        ema_update: bool | None = None,
        learnable_codebook: bool | None = None,
        use_cosine_sim: bool = False,
        sync_codebook: bool | None = None,
        rotation_trick: bool | None = None,
        stochastic_sample_codes: bool = False,
        sample_codebook_temp: float = 1.0,
        straight_through: bool = False,
        separate_codebook_per_head: bool = False,
        orthogonal_reg_weight: float = 0.0,
        orthogonal_reg_active_codes_only: bool = False,
        orthogonal_reg_max_codes: int | None = None,
        freeze_codebook: bool = False,
        backend: str = "auto",
        precision: str = "auto",
        _groups: int = 1,
        **kwargs: Any,
    ) -> None:
        # ``_groups`` is internal: GroupedResidualVQ holds its groups' codebooks in this engine.
        reject_kwargs(type(self).__name__, kwargs)
        if isinstance(codebook_size, tuple):
            if len(set(codebook_size)) != 1:
                raise ValueError(f"codebook_size must be one size for all stages in rvqfast, got {codebook_size}")
            if num_quantizers is not None and num_quantizers != len(codebook_size):
                raise ValueError(f"num_quantizers={num_quantizers} but codebook_size has {len(codebook_size)} entries")
            num_quantizers, codebook_size = len(codebook_size), codebook_size[0]
        if isinstance(num_quantizers, bool) or not isinstance(num_quantizers, int) or num_quantizers < 1:
            raise ValueError(f"num_quantizers must be a positive int, got {num_quantizers!r}")
        if isinstance(quantize_dropout_cutoff_index, bool) or not isinstance(quantize_dropout_cutoff_index, int) or not (
            0 <= quantize_dropout_cutoff_index < num_quantizers
        ):
            raise ValueError(
                f"quantize_dropout_cutoff_index must be an int in [0, {num_quantizers}), got {quantize_dropout_cutoff_index!r}"
            )
        cdim, core = core_options(
            dim=dim, codebook_size=codebook_size, codebook_dim=codebook_dim, heads=heads, decay=decay, eps=eps,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            commitment_weight=commitment_weight, ema_update=ema_update, learnable_codebook=learnable_codebook,
            use_cosine_sim=use_cosine_sim, sync_codebook=sync_codebook, rotation_trick=rotation_trick,
            stochastic_sample_codes=stochastic_sample_codes, sample_codebook_temp=sample_codebook_temp,
            straight_through=straight_through, backend=backend, precision=precision,
        )
        check_orthogonal(orthogonal_reg_weight, orthogonal_reg_max_codes)
        super().__init__(
            num_stages=num_quantizers, shared_codebook=bool(shared_codebook), num_groups=_groups,
            codebook_param=float(orthogonal_reg_weight) > 0, **core,
        )
        self.orthogonal_reg_weight = float(orthogonal_reg_weight)
        self.orthogonal_reg_active_codes_only = bool(orthogonal_reg_active_codes_only)
        self.orthogonal_reg_max_codes = orthogonal_reg_max_codes
        self._frozen = bool(freeze_codebook)
        self.dim = dim
        self.codebook_dim = cdim
        self.num_quantizers = num_quantizers
        self.quantize_dropout = bool(quantize_dropout) and num_quantizers > 1
        self.quantize_dropout_cutoff_index = quantize_dropout_cutoff_index
        if isinstance(quantize_dropout_multiple_of, bool) or not isinstance(quantize_dropout_multiple_of, int) or quantize_dropout_multiple_of < 1:
            raise ValueError(f"quantize_dropout_multiple_of must be a positive int, got {quantize_dropout_multiple_of!r}")
        self.quantize_dropout_multiple_of = quantize_dropout_multiple_of
        self.accept_image_fmap = bool(accept_image_fmap)
        self.channel_last = bool(channel_last)
        self.project_in, self.project_out = projections(dim, cdim)
        self.has_projections = cdim != dim

    def _group_codebooks(self, group: int = 0) -> Tensor:
        """(Q, K, codebook_dim) codes of every stage of ``group`` (a shared codebook repeats)."""
        if self.shared_codebook:
            return self.embed[group : group + 1].expand(self.num_quantizers, -1, -1)
        base = group * self.num_quantizers
        return self.embed[base : base + self.num_quantizers]

    @property
    def codebooks(self) -> Tensor:
        """(Q, K, codebook_dim) codes of every stage (a shared codebook repeats)."""
        return self._group_codebooks(0)

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Codes (Q, ..., codebook_dim) for indices (..., Q'); ``-1`` and missing stages give 0."""
        return self._codes_from_indices(indices, 0)

    def _codes_from_indices(self, indices: Tensor, group: int) -> Tensor:
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point or indices.dim() < 2:
            raise ValueError("indices must be an integer tensor of shape (B, ..., Q)")
        qn = indices.shape[-1]
        if qn > self.num_quantizers:
            raise ValueError(f"indices has {qn} stages but the module has {self.num_quantizers}")
        if qn < self.num_quantizers:
            if not self.quantize_dropout:
                raise ValueError(
                    "indices has fewer stages than num_quantizers: only allowed with quantize_dropout=True"
                )
            indices = F.pad(indices, (0, self.num_quantizers - qn), value=-1)
        lo, hi = int(indices.min()), int(indices.max())
        if lo < -1 or hi >= self.codebook_size:
            raise ValueError(f"indices out of range: expected -1 or [0, {self.codebook_size}), got [{lo}, {hi}]")
        idx = indices.long().movedim(-1, 0)  # (Q, ...)
        keep = (idx >= 0).unsqueeze(-1)
        cbs = self._group_codebooks(group)
        codes = torch.stack([cbs[q][idx[q].clamp(min=0)] for q in range(self.num_quantizers)])
        return codes * keep

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """Decoded output for indices (B, ..., Q): (B, ..., dim), channels first for image/channel-first layouts."""
        out = self.project_out(self.get_codes_from_indices(indices).sum(0))
        if self.accept_image_fmap or not self.channel_last:
            out = out.movedim(-1, 1)
        return out

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        indices: Tensor | list[Tensor] | None = None,
        return_all_codes: bool = False,
        sample_codebook_temp: float | None = None,
        freeze_codebook: bool | None = None,
    ):
        """Quantize ``x``; see the class docstring for shapes.

        With ``indices`` (B, N, Q) given, returns ``(quantized, cross_entropy)``: the output of
        those codes and the summed per-stage cross-entropy of the ``-distance`` logits of the
        residuals they leave (no codebook update).
        """
        xs, layout = to_sequence(x, self.dim, channel_last=self.channel_last, accept_image_fmap=self.accept_image_fmap, mask=mask)
        mask = check_mask(mask, xs.shape[0], xs.shape[1])
        h = self.project_in(xs)
        if indices is not None:
            out, ce = self._forward_ce(h, indices, mask, 0, self.project_out)
            return from_sequence(out, layout), ce
        saved = self.set_forward_options(sample_codebook_temp, freeze_codebook)
        try:
            out, idx, losses = self._quantize_group(h, mask, self.last_stage(xs.device), 0)
        finally:
            self.restore_forward_options(saved)
        q = output_layout(self.project_out(out), mask, self.has_projections, layout)
        idx = indices_layout(idx, layout)
        if not return_all_codes:
            return q, idx, losses
        return q, idx, losses, self.get_codes_from_indices(idx)

    def last_stage(self, device: torch.device) -> int:
        """The last stage this forward runs (random under quantize dropout in training)."""
        updates = self._updates_allowed()
        return self.dropout_cutoff(
            self.training and self.quantize_dropout,
            self.quantize_dropout_cutoff_index,
            updates and self._sync_now(),
            device,
            self.quantize_dropout_multiple_of,
        )

    def _quantize_group(self, h: Tensor, mask: Tensor | None, last: int, group: int) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, codebook_dim) -> quantized, indices (B, N, Q) (``-1`` past ``last``), losses (Q,)."""
        out, idx, losses = self.quantize_seq(h, mask, last, group)
        idx, losses = self._finish_group(idx, losses, group)
        return out, idx, losses

    def _finish_group(self, idx: Tensor, losses: Tensor, group: int) -> tuple[Tensor, Tensor]:
        """Add the orthogonal regularisation (training) and pad indices (``-1``) and losses (0)
        of stages past the dropout cutoff to ``num_quantizers``."""
        if self.training and self.orthogonal_reg_weight > 0:
            # Per stage, on that stage's codebook (vector-quantize-pytorch: each layer's loss).
            extra = [
                orthogonal_reg(
                    self.embed[self._slot(q, group)][None], idx[..., q],
                    active_codes_only=self.orthogonal_reg_active_codes_only, max_codes=self.orthogonal_reg_max_codes,
                )
                for q in range(idx.shape[-1])
            ]
            losses = losses + self.orthogonal_reg_weight * torch.stack(extra)
        pad = self.num_quantizers - idx.shape[-1]
        if pad:
            idx = F.pad(idx, (0, pad), value=-1)
            losses = F.pad(losses, (0, pad), value=0.0)
        return idx, losses

    def _forward_ce(self, h: Tensor, indices, mask: Tensor | None, group: int, project_out) -> tuple[Tensor, Tensor]:
        if isinstance(indices, list):
            indices = torch.stack(indices, -1)
        b, n, _ = h.shape
        if not isinstance(indices, Tensor) or tuple(indices.shape[:2]) != (b, n) or indices.dim() != 3:
            raise ValueError(f"indices must be an integer tensor of shape ({b}, {n}, Q)")
        if bool((indices == -1).any()):
            raise ValueError("indices contain -1 (dropped stages): use indices produced in eval mode")
        r = h.float()
        ce = h.new_zeros((), dtype=torch.float32)
        cbs = self._group_codebooks(group)
        for q in range(indices.shape[-1]):
            cb = cbs[q].float()
            z = self._transform(r)
            logits = code_logits(z, cb, self.use_cosine_sim)
            tgt = indices[..., q].long()
            if mask is not None:
                tgt = tgt.masked_fill(~mask, -1)
            ce = ce + F.cross_entropy(logits.reshape(b * n, -1), tgt.reshape(-1), ignore_index=-1)
            r = r - cb[indices[..., q].long()]
        out = project_out(self._codes_from_indices(indices, group).sum(0).to(h.dtype))
        return out, ce
