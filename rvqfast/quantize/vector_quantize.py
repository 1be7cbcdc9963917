"""Single-codebook vector quantization, a drop-in for ``vector_quantize_pytorch.VectorQuantize``."""
from __future__ import annotations

from collections import namedtuple
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .compat import reject_kwargs
from .core import QuantizerCore
from .regularizers import check_orthogonal, orthogonal_reg
from .frontend import check_mask, code_logits, core_options, indices_layout, output_layout, projections, to_sequence


# vector-quantize-pytorch's loss breakdown (field names and order).
LossBreakdown = namedtuple("LossBreakdown", ["commitment", "codebook_diversity", "orthogonal_reg", "inplace_optimize"])


class VectorQuantize(QuantizerCore):
    """VQ with an EMA codebook (van den Oord et al. 2017), on rvqfast's kernels.

    Takes the keyword arguments of ``vector_quantize_pytorch.VectorQuantize`` (1.32) for the
    supported features, with the same defaults (see :class:`rvqfast.quantize.ResidualVQ` for
    their meaning); any other keyword raises ``TypeError``. The rotation trick defaults on when
    ``dim > 1``, as there.

    Multi-head: ``heads`` splits the projected input (``codebook_dim * heads`` features;
    ``codebook_dim`` defaults to ``dim``) into heads quantized separately, all through one
    codebook, or through one codebook per head with ``separate_codebook_per_head`` (the heads'
    codebooks in one (H, K, codebook_dim) tensor). Indices gain a last axis of size H.

    ``orthogonal_reg_weight`` adds the orthogonality penalty on the codebook (which becomes a
    parameter that this loss trains, still EMA-updated), optionally over the codes used in the
    batch only (``orthogonal_reg_active_codes_only``) and at most ``orthogonal_reg_max_codes``.

    ``forward(x, indices=None, mask=None, lens=None, sample_codebook_temp=None,
    freeze_codebook=None)`` returns ``(quantized, indices, loss)``: x (B, N, D) gives indices
    (B, N) int64 ((B, N, H) with heads) and a scalar loss (0 in eval); x (B, D) gives indices
    (B,); ``channel_last=False`` takes (B, D, N); ``accept_image_fmap`` takes (B, C, H, W) and
    gives indices (B, H, W).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        heads: int = 1,
        separate_codebook_per_head: bool = False,
        decay: float = 0.8,
        eps: float = 1e-5,
        freeze_codebook: bool = False,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        use_cosine_sim: bool = False,
        threshold_ema_dead_code: float = 0,
        channel_last: bool = True,
        accept_image_fmap: bool = False,
        commitment_weight: float = 1.0,
        orthogonal_reg_weight: float = 0.0,
        orthogonal_reg_active_codes_only: bool = False,
        orthogonal_reg_max_codes: int | None = None,
        stochastic_sample_codes: bool = False,
        sample_codebook_temp: float = 1.0,
        straight_through: bool = False,
        rotation_trick: bool | None = None,
        sync_codebook: bool | None = None,
        ema_update: bool | None = None,
        learnable_codebook: bool | None = None,
        *,
        backend: str = "auto",
        precision: str = "auto",
        **kwargs: Any,
    ) -> None:
        reject_kwargs("VectorQuantize", kwargs)
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive int, got {heads!r}")
        check_orthogonal(orthogonal_reg_weight, orthogonal_reg_max_codes)
        separate = bool(separate_codebook_per_head) and heads > 1
        if orthogonal_reg_active_codes_only and orthogonal_reg_weight > 0 and separate:
            raise ValueError(
                "orthogonal_reg_active_codes_only is not compatible with separate_codebook_per_head "
                "(as in vector-quantize-pytorch)"
            )
        # The rotation-trick default looks at dim here (codebook_dim in ResidualVQ), as upstream.
        # Heads are handled here; the engine sees one head's codebook_dim.
        cdim, core = core_options(
            dim=dim, codebook_size=codebook_size, codebook_dim=codebook_dim, heads=1, decay=decay, eps=eps,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            commitment_weight=commitment_weight, ema_update=ema_update, learnable_codebook=learnable_codebook,
            use_cosine_sim=use_cosine_sim, sync_codebook=sync_codebook, rotation_trick=rotation_trick,
            stochastic_sample_codes=stochastic_sample_codes, sample_codebook_temp=sample_codebook_temp,
            straight_through=straight_through, backend=backend, precision=precision, rotation_dim=dim,
        )
        super().__init__(
            num_stages=1, shared_codebook=False, num_groups=heads if separate else 1,
            codebook_param=float(orthogonal_reg_weight) > 0, **core,
        )
        self.dim = dim
        self.codebook_dim = cdim
        self.heads = heads
        self.separate_codebook_per_head = separate
        self.channel_last = bool(channel_last)
        self.accept_image_fmap = bool(accept_image_fmap)
        self.orthogonal_reg_weight = float(orthogonal_reg_weight)
        self.orthogonal_reg_active_codes_only = bool(orthogonal_reg_active_codes_only)
        self.orthogonal_reg_max_codes = orthogonal_reg_max_codes
        self._frozen = bool(freeze_codebook)
        self.project_in, self.project_out = projections(dim, cdim * heads)
        self.has_projections = cdim * heads != dim

    @property
    def codebook(self) -> Tensor:
        """(K, codebook_dim) codes; (H, K, codebook_dim) with separate codebooks per head."""
        return self.embed if self.separate_codebook_per_head else self.embed[0]

    @codebook.setter
    def codebook(self, codes: Tensor) -> None:
        want = tuple(self.codebook.shape)
        if tuple(codes.shape) != want:
            raise ValueError(f"codebook must have shape {want}, got {tuple(codes.shape)}")
        with torch.no_grad():
            self.codebook.copy_(codes)

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Codes for indices; ``-1`` gives zeros. (..., codebook_dim) for one head; with separate
        codebooks per head indices (B, ..., H) give (B, ..., H * codebook_dim), with a shared
        one (B, ..., H, codebook_dim) (as vector-quantize-pytorch). Channels first for
        ``channel_last=False`` / ``accept_image_fmap``."""
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point:
            raise ValueError("indices must be an integer tensor")
        if self.separate_codebook_per_head and (indices.dim() < 2 or indices.shape[-1] != self.heads):
            raise ValueError(f"indices must end in the heads axis ({self.heads}), got shape {tuple(indices.shape)}")
        if indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < -1 or hi >= self.codebook_size:
                raise ValueError(f"indices out of range: expected -1 or [0, {self.codebook_size}), got [{lo}, {hi}]")
        idx = indices.long()
        keep = (idx >= 0).unsqueeze(-1)
        if self.separate_codebook_per_head:
            heads = torch.arange(self.heads, device=idx.device)
            codes = (self.embed[heads, idx.clamp(min=0)] * keep).flatten(-2)
        else:
            codes = self.embed[0][idx.clamp(min=0)] * keep
        if (not self.channel_last or self.accept_image_fmap) and codes.dim() > 2:
            codes = codes.movedim(-1, 1)
        return codes

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """Output (..., dim) for indices (channels first for channel-first layouts)."""
        codes = self.get_codes_from_indices(indices)
        chan_first = (not self.channel_last or self.accept_image_fmap) and codes.dim() > 2
        if chan_first:
            codes = codes.movedim(1, -1)
        if self.heads > 1 and not self.separate_codebook_per_head:
            codes = codes.flatten(-2)
        out = self.project_out(codes)
        return out.movedim(-1, 1) if chan_first else out

    def forward(
        self,
        x: Tensor,
        indices: Tensor | None = None,
        mask: Tensor | None = None,
        lens: Tensor | None = None,
        sample_codebook_temp: float | None = None,
        freeze_codebook: bool | None = None,
        return_loss_breakdown: bool = False,
    ):
        """Quantize ``x``. With ``indices`` given, returns ``(quantized, cross_entropy)`` of the
        ``-distance`` logits against those indices (``-1`` ignored), as vector-quantize-pytorch.
        ``return_loss_breakdown`` appends :data:`LossBreakdown` (commitment, codebook diversity
        (always 0 here), orthogonal regularisation, in-place optimisation (always 0 here))."""
        if lens is not None:
            if mask is not None:
                raise ValueError("pass mask or lens, not both")
            n = x.shape[-1] if (not self.channel_last and x.dim() == 3) else x.shape[1]
            mask = torch.arange(n, device=x.device) < lens.reshape(-1, 1)
        xs, layout = to_sequence(x, self.dim, channel_last=self.channel_last, accept_image_fmap=self.accept_image_fmap, mask=mask)
        mask = check_mask(mask, xs.shape[0], xs.shape[1])
        h = self.project_in(xs)
        saved = self.set_forward_options(sample_codebook_temp, freeze_codebook)
        try:
            out, idx, loss = self._quantize_heads(h, mask)
        finally:
            self.restore_forward_options(saved)
        q = output_layout(self.project_out(out), mask, self.has_projections, layout)
        idx = indices_layout(idx, layout)
        if indices is not None:
            return q, self._ce_loss(h, indices, mask)
        zero = torch.zeros((), device=x.device)
        commit = loss if self.training else zero
        ortho = zero
        if self.training and self.orthogonal_reg_weight > 0:
            ortho = orthogonal_reg(
                self.embed, idx, active_codes_only=self.orthogonal_reg_active_codes_only,
                max_codes=self.orthogonal_reg_max_codes,
            )
            loss = loss + self.orthogonal_reg_weight * ortho
        elif not self.training:
            loss = zero
        if not return_loss_breakdown:
            return q, idx, loss
        # Commitment unweighted, as upstream reports it.
        if self.training and self.commitment_weight > 0:
            commit = commit / self.commitment_weight
        return q, idx, loss, LossBreakdown(commit, zero, ortho, zero)

    def _quantize_heads(self, h: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, H*codebook_dim) -> quantized (same shape), indices (B, N) or (B, N, H), loss."""
        if self.heads == 1:
            out, idx, losses = self.quantize_seq(h, mask, 0)
            return out, idx[..., 0], losses[0]
        b, n, _ = h.shape
        if self.separate_codebook_per_head:
            parts = [self.quantize_seq(c, mask, 0, group=g) for g, c in enumerate(h.chunk(self.heads, -1))]
            out = torch.cat([p[0] for p in parts], -1)
            idx = torch.cat([p[1] for p in parts], -1)
            # vector-quantize-pytorch's loss is one mean over all heads' elements: equal counts,
            # so the mean of the heads' means.
            return out, idx, torch.stack([p[2][0] for p in parts]).mean()
        rows = h.reshape(b, n * self.heads, self.codebook_dim)
        m = mask.repeat_interleave(self.heads, 1) if mask is not None else None
        out, idx, losses = self.quantize_seq(rows, m, 0)
        return out.reshape(b, n, -1), idx.reshape(b, n, self.heads), losses[0]

    def _ce_loss(self, h: Tensor, indices: Tensor, mask: Tensor | None) -> Tensor:
        b, n, _ = h.shape
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point:
            raise ValueError("indices must be an integer tensor")
        heads = self.heads
        tgt = indices.long().reshape(b, n, heads)
        if mask is not None:
            tgt = tgt.masked_fill(~mask.unsqueeze(-1), -1)
        z = self._transform(h.float().reshape(b, n, heads, self.codebook_dim))
        logits = torch.stack(
            [code_logits(z[:, :, g].reshape(b * n, -1), self.embed[g if self.separate_codebook_per_head else 0].float(), self.use_cosine_sim) for g in range(heads)],
            1,
        )  # (B*N, H, K)
        return F.cross_entropy(logits.reshape(b * n * heads, -1), tgt.reshape(-1), ignore_index=-1)
