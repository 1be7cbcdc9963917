"""SimVQ (Zhu et al. 2024, arXiv:2411.02038): drop-ins for ``vector_quantize_pytorch``'s ``SimVQ``
and ``ResidualSimVQ``.

The codebook is implicit: a frozen random basis through a learned map (``code_transform``,
a bias-free ``Linear`` by default). The map is applied once per forward; the nearest-code
search then runs on the transformed, detached codebook through rvqfast's kernels (one
``nearest_code`` call for SimVQ, one fused all-stages ``rvq_encode`` call for ResidualSimVQ),
and only the chosen codes are gathered from the differentiable codebook, so the map learns
through the commitment loss. Names of modules and buffers follow vector-quantize-pytorch
(``frozen_codebook``, ``code_transform``, ``layers.{q}``), so its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _ops
from .stages import last_active_stage, stage_codes
from .grad import rotate_to
from .kmeans import resolve_backend


def _to_rows(x: Tensor, channel_first: bool) -> tuple[Tensor, tuple[int, ...]]:
    """(B, ..., D) (or (B, D, ...) when channel first) -> (B, M, D) and the middle shape."""
    if channel_first:
        x = x.movedim(1, -1)
    mid = tuple(x.shape[1:-1])
    return x.reshape(x.shape[0], -1, x.shape[-1]), mid


def _from_rows(t: Tensor, mid: tuple[int, ...], channel_first: bool) -> Tensor:
    t = t.reshape(t.shape[0], *mid, t.shape[-1])
    return t.movedim(-1, 1) if channel_first else t


def _commit_and_route(x: Tensor, code: Tensor, *, rotation: bool, in_weight: float, weight: float) -> tuple[Tensor, Tensor]:
    """SimVQ's two-sided commitment loss and the gradient route from the code back to ``x``."""
    loss = F.mse_loss(x.detach(), code) + F.mse_loss(x, code.detach()) * in_weight
    out = rotate_to(x, code) if rotation else x + (code - x).detach()
    return out, loss * weight


class SimVQ(nn.Module):
    """SimVQ with vector-quantize-pytorch's signature, defaults and returns.

    ``forward(x)`` takes (B, ..., dim) (channel first with ``channel_first``) and returns
    ``(quantized, indices (B, ...), commit_loss)``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_transform: nn.Module | None = None,
        init_fn: Callable[[Tensor], Tensor] = lambda t: t,
        channel_first: bool = False,
        rotation_trick: bool = True,
        input_to_quantize_commit_loss_weight: float = 0.25,
        commitment_weight: float = 1.0,
        frozen_codebook_dim: int | None = None,
        *,
        backend: str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("codebook_size", codebook_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.channel_first = bool(channel_first)
        fdim = frozen_codebook_dim if frozen_codebook_dim is not None else dim
        # Gaussian basis of unit expected norm, as upstream.
        self.register_buffer("frozen_codebook", init_fn(torch.randn(codebook_size, fdim) * fdim ** -0.5))
        self.code_transform = codebook_transform if codebook_transform is not None else nn.Linear(fdim, dim, bias=False)
        self.rotation_trick = bool(rotation_trick)
        self.input_to_quantize_commit_loss_weight = float(input_to_quantize_commit_loss_weight)
        self.commitment_weight = float(commitment_weight)
        self.backend = backend
        self.precision = precision

    @property
    def codebook(self) -> Tensor:
        """(K, dim) implicit codebook (differentiable in ``code_transform``)."""
        return self.code_transform(self.frozen_codebook)

    @property
    def codebook_dim(self) -> int:
        return self.dim

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Codes (B, ..., dim) of indices (B, ...), channel first with ``channel_first``."""
        codes = self.code_transform(self.frozen_codebook[indices.long()])
        return codes.movedim(-1, 1) if self.channel_first else codes

    def _nearest(self, rows: Tensor, codebook: Tensor) -> Tensor:
        flat = rows.detach().reshape(-1, rows.shape[-1]).float().contiguous()
        b, p = resolve_backend(self.backend, self.precision, flat.device, flat.shape[-1])
        idx, _ = _ops.nearest_code(flat, codebook.detach().float().contiguous(), b, p)
        return idx.reshape(rows.shape[:-1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError("x must be a floating tensor (B, ..., dim)")
        rows, mid = _to_rows(x, self.channel_first)
        if rows.shape[-1] != self.dim:
            raise ValueError(f"x has {rows.shape[-1]} features but dim={self.dim}")
        codebook = self.codebook
        idx = self._nearest(rows, codebook)
        code = codebook[idx]
        out, loss = _commit_and_route(
            rows, code, rotation=self.rotation_trick,
            in_weight=self.input_to_quantize_commit_loss_weight, weight=self.commitment_weight,
        )
        return _from_rows(out, mid, self.channel_first), idx.reshape(idx.shape[0], *mid), loss


class ResidualSimVQ(nn.Module):
    """Residual SimVQ (one SimVQ per stage, residuals as Algorithm 1 of arXiv:2107.03312), with
    vector-quantize-pytorch's signature; extra keywords go to each stage's :class:`SimVQ`.

    ``forward(x, return_all_codes=False, rand_quantize_dropout_fixed_seed=None)`` returns
    ``(quantized, indices (B, ..., Q), commit_losses (Q,))`` (plus all codes (Q, B, ..., dim)).
    All stages' searches run in one fused ``rvq_encode`` call on the transformed codebooks.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        heads: int = 1,
        quantize_dropout: bool = False,
        quantize_dropout_cutoff_index: int = 0,
        quantize_dropout_multiple_of: int = 1,
        channel_first: bool = False,
        rotation_trick: bool = True,
        backend: str = "auto",
        precision: str = "auto",
        **sim_vq_kwargs,
    ) -> None:
        super().__init__()
        if heads != 1:
            raise ValueError(f"heads must be 1 (residual VQ is not compatible with multi-headed codes), got {heads!r}")
        if isinstance(num_quantizers, bool) or not isinstance(num_quantizers, int) or num_quantizers < 1:
            raise ValueError(f"num_quantizers must be a positive int, got {num_quantizers!r}")
        self.channel_first = bool(channel_first)
        self.num_quantizers = num_quantizers
        self.layers = nn.ModuleList(
            SimVQ(dim=dim, codebook_size=codebook_size, rotation_trick=rotation_trick, channel_first=channel_first,
                  backend=backend, precision=precision, **sim_vq_kwargs)
            for _ in range(num_quantizers)
        )
        self.quantize_dropout = bool(quantize_dropout) and num_quantizers > 1
        self.quantize_dropout_cutoff_index = quantize_dropout_cutoff_index
        self.quantize_dropout_multiple_of = quantize_dropout_multiple_of
        self.backend = backend
        self.precision = precision

    @property
    def codebook_size(self) -> int:
        return self.layers[0].codebook_size

    @property
    def codebook_dim(self) -> int:
        return self.layers[0].codebook_dim

    @property
    def codebooks(self) -> Tensor:
        """(Q, K, dim) implicit codebooks."""
        return torch.stack([layer.codebook for layer in self.layers])

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Codes (Q, B, ..., dim) of indices (B, ..., Q') (``-1`` and missing stages give 0);
        channels after the batch axis with ``channel_first``."""
        codes = stage_codes(self.codebooks, indices, self.quantize_dropout)
        return codes.movedim(-1, 2) if self.channel_first else codes

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        return self.get_codes_from_indices(indices).sum(0)

    def forward(self, x: Tensor, return_all_codes: bool = False, rand_quantize_dropout_fixed_seed: int | None = None):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError("x must be a floating tensor (B, ..., dim)")
        rows, mid = _to_rows(x, self.channel_first)
        if rows.shape[-1] != self.codebook_dim:
            raise ValueError(f"x has {rows.shape[-1]} features but dim={self.codebook_dim}")
        # vector-quantize-pytorch's ResidualSimVQ drops stages under no_grad too.
        n_active = last_active_stage(self, x.device, rand_quantize_dropout_fixed_seed, needs_grad=False) + 1
        cbs = torch.stack([layer.codebook for layer in self.layers[:n_active]])  # (A, K, D), differentiable
        flat = rows.detach().reshape(-1, rows.shape[-1]).float().contiguous()
        b, p = resolve_backend(self.backend, self.precision, flat.device, flat.shape[-1])
        idx, _ = _ops.rvq_encode(flat, cbs.detach().float().contiguous(), b, p)
        idx = idx.reshape(*rows.shape[:-1], n_active)
        first = self.layers[0]
        residual, out, losses = rows, 0.0, []
        for q in range(n_active):
            code = cbs[q][idx[..., q]]
            quantized, loss = _commit_and_route(
                residual, code, rotation=first.rotation_trick,
                in_weight=first.input_to_quantize_commit_loss_weight, weight=first.commitment_weight,
            )
            residual = residual - quantized.detach()
            out = out + quantized
            losses.append(loss)
        pad = self.num_quantizers - n_active
        losses = torch.stack(losses)
        if pad:
            idx = F.pad(idx, (0, pad), value=-1)
            losses = F.pad(losses, (0, pad), value=0.0)
        out = _from_rows(out, mid, self.channel_first)
        idx = idx.reshape(idx.shape[0], *mid, self.num_quantizers)
        if not return_all_codes:
            return out, idx, losses
        return out, idx, losses, self.get_codes_from_indices(idx)
