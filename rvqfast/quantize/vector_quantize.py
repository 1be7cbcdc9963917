"""Single-codebook vector quantization, a drop-in for ``vector_quantize_pytorch.VectorQuantize``."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .compat import reject_kwargs
from .core import QuantizerCore
from .frontend import check_mask, code_logits, core_options, indices_layout, output_layout, projections, to_sequence


class VectorQuantize(QuantizerCore):
    """VQ with an EMA codebook (van den Oord et al. 2017), on rvqfast's kernels.

    Takes the keyword arguments of ``vector_quantize_pytorch.VectorQuantize`` (1.32) for the
    supported features, with the same defaults (see :class:`rvqfast.quantize.ResidualVQ` for
    their meaning); any other keyword raises ``TypeError``. The rotation trick defaults on when
    ``dim > 1``, as there.

    ``forward(x, indices=None, mask=None)`` returns ``(quantized, indices, loss)``: x (B, N, D)
    gives indices (B, N) int64 and a scalar loss (0 in eval); x (B, D) gives indices (B,);
    ``channel_last=False`` takes (B, D, N); ``accept_image_fmap`` takes (B, C, H, W) and gives
    indices (B, H, W).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        heads: int = 1,
        decay: float = 0.8,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        use_cosine_sim: bool = False,
        threshold_ema_dead_code: float = 0,
        channel_last: bool = True,
        accept_image_fmap: bool = False,
        commitment_weight: float = 1.0,
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
        # The rotation-trick default looks at dim here (codebook_dim in ResidualVQ), as upstream.
        cdim, core = core_options(
            dim=dim, codebook_size=codebook_size, codebook_dim=codebook_dim, heads=heads, decay=decay, eps=eps,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            commitment_weight=commitment_weight, ema_update=ema_update, learnable_codebook=learnable_codebook,
            use_cosine_sim=use_cosine_sim, sync_codebook=sync_codebook, rotation_trick=rotation_trick,
            stochastic_sample_codes=stochastic_sample_codes, sample_codebook_temp=sample_codebook_temp,
            straight_through=straight_through, backend=backend, precision=precision, rotation_dim=dim,
        )
        super().__init__(num_stages=1, shared_codebook=False, **core)
        self.dim = dim
        self.codebook_dim = cdim
        self.heads = 1
        self.channel_last = bool(channel_last)
        self.accept_image_fmap = bool(accept_image_fmap)
        self.project_in, self.project_out = projections(dim, cdim)
        self.has_projections = cdim != dim

    @property
    def codebook(self) -> Tensor:
        """(K, codebook_dim) codes."""
        return self.embed[0]

    @codebook.setter
    def codebook(self, codes: Tensor) -> None:
        if tuple(codes.shape) != tuple(self.embed.shape[1:]):
            raise ValueError(f"codebook must have shape {tuple(self.embed.shape[1:])}, got {tuple(codes.shape)}")
        with torch.no_grad():
            self.embed[0].copy_(codes)

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Codes (..., codebook_dim) for indices (...); ``-1`` gives zeros. Channels first for
        ``channel_last=False`` / ``accept_image_fmap``."""
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point:
            raise ValueError("indices must be an integer tensor")
        if indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < -1 or hi >= self.codebook_size:
                raise ValueError(f"indices out of range: expected -1 or [0, {self.codebook_size}), got [{lo}, {hi}]")
        idx = indices.long()
        codes = self.codebook[idx.clamp(min=0)] * (idx >= 0).unsqueeze(-1)
        if (not self.channel_last or self.accept_image_fmap) and codes.dim() > 2:
            codes = codes.movedim(-1, 1)
        return codes

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """Output (..., dim) for indices (channels first for channel-first layouts)."""
        codes = self.get_codes_from_indices(indices)
        chan_first = (not self.channel_last or self.accept_image_fmap) and codes.dim() > 2
        if chan_first:
            codes = codes.movedim(1, -1)
        out = self.project_out(codes)
        return out.movedim(-1, 1) if chan_first else out

    def forward(self, x: Tensor, indices: Tensor | None = None, mask: Tensor | None = None):
        """Quantize ``x``. With ``indices`` given, returns ``(quantized, cross_entropy)`` of the
        ``-distance`` logits against those indices (``-1`` ignored), as vector-quantize-pytorch."""
        xs, layout = to_sequence(x, self.dim, channel_last=self.channel_last, accept_image_fmap=self.accept_image_fmap, mask=mask)
        mask = check_mask(mask, xs.shape[0], xs.shape[1])
        h = self.project_in(xs)
        out, idx, losses = self.quantize_seq(h, mask, 0)
        q = output_layout(self.project_out(out), mask, self.has_projections, layout)
        idx = indices_layout(idx[..., 0], layout)
        if indices is not None:
            return q, self._ce_loss(h, indices, mask)
        loss = losses[0] if self.training else torch.zeros((), device=x.device)
        return q, idx, loss

    def _ce_loss(self, h: Tensor, indices: Tensor, mask: Tensor | None) -> Tensor:
        b, n, _ = h.shape
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point:
            raise ValueError("indices must be an integer tensor")
        tgt = indices.long().reshape(b, n)
        if mask is not None:
            tgt = tgt.masked_fill(~mask, -1)
        z = self._transform(h.float())
        cb = self.codebook.float()
        logits = code_logits(z, cb, self.use_cosine_sim)
        return F.cross_entropy(logits.reshape(b * n, -1), tgt.reshape(-1), ignore_index=-1)
