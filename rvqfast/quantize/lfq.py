"""Lookup-free quantization: drop-ins for ``vector_quantize_pytorch``'s ``LFQ`` and ``ResidualLFQ``.

LFQ (Yu et al. 2023, arXiv:2310.05737) quantizes each coordinate to its sign (times a scale);
the index is the binary number of the signs. An entropy penalty over the soft assignment to
all ``2^d`` codes keeps the code usage spread. No nearest-code search: plain PyTorch.
Parameter and buffer names follow vector-quantize-pytorch, so its checkpoints load unchanged.
"""
from __future__ import annotations

import math
from collections import namedtuple
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import is_distributed
from .stages import GroupedStages, last_active_stage, stage_codes

Return = namedtuple("Return", ["quantized", "indices", "entropy_aux_loss"])
LossBreakdown = namedtuple("LossBreakdown", ["per_sample_entropy", "batch_entropy", "commitment"])


def _entropy(prob: Tensor) -> Tensor:
    return -(prob * prob.clamp(min=1e-5).log()).sum(-1)


def _mean_over_ranks(t: Tensor) -> Tensor:
    if not is_distributed():
        return t
    # Differentiable all-reduce: every rank's probabilities shape the codebook entropy.
    import torch.distributed.nn as dist_nn

    return dist_nn.all_reduce(t) / dist.get_world_size()


class CosineSimLinear(nn.Module):
    """Projection of l2-normalised inputs onto l2-normalised weight columns, times ``scale``."""

    def __init__(self, dim_in: int, dim_out: int, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.randn(dim_in, dim_out))

    def forward(self, x: Tensor) -> Tensor:
        return (F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=0)) * self.scale


class LFQ(nn.Module):
    """Lookup-free quantization with vector-quantize-pytorch's signature, defaults and returns.

    ``forward(x, inv_temperature=100., return_loss_breakdown=False, mask=None)`` returns the
    named tuple ``(quantized, indices, entropy_aux_loss)``: indices (B, N) int (or
    (B, N, num_codebooks)), the weighted entropy (+ commitment) loss, 0 in eval.
    """

    def __init__(
        self,
        *,
        dim: int | None = None,
        codebook_size: int | None = None,
        entropy_loss_weight: float = 0.1,
        commitment_loss_weight: float = 0.0,
        diversity_gamma: float = 1.0,
        straight_through_activation: nn.Module | None = None,
        num_codebooks: int = 1,
        keep_num_codebooks_dim: bool | None = None,
        codebook_scale: float = 1.0,
        frac_per_sample_entropy: float = 1.0,
        has_projections: bool | None = None,
        projection_has_bias: bool = True,
        soft_clamp_input_value: float | None = None,
        cosine_sim_project_in: bool = False,
        cosine_sim_project_in_scale: float | None = None,
        channel_first: bool | None = None,
        experimental_softplus_entropy_loss: bool = False,
        entropy_loss_offset: float = 5.0,
        spherical: bool = False,
        force_quantization_f32: bool = True,
        orthogonal_rotation: bool = False,
    ) -> None:
        super().__init__()
        if dim is None and codebook_size is None:
            raise ValueError("LFQ needs dim or codebook_size")
        if codebook_size is not None and (codebook_size < 2 or not math.log2(codebook_size).is_integer()):
            raise ValueError(f"codebook_size must be a power of 2 for lookup-free quantization, got {codebook_size!r}")
        if not 0 < frac_per_sample_entropy <= 1:
            raise ValueError(f"frac_per_sample_entropy must be in (0, 1], got {frac_per_sample_entropy!r}")
        if soft_clamp_input_value is not None and soft_clamp_input_value < codebook_scale:
            raise ValueError("soft_clamp_input_value must be >= codebook_scale")
        if keep_num_codebooks_dim is None:
            keep_num_codebooks_dim = num_codebooks > 1
        if num_codebooks > 1 and not keep_num_codebooks_dim:
            raise ValueError("keep_num_codebooks_dim must be True with several codebooks")
        codebook_size = codebook_size if codebook_size is not None else 2 ** dim
        self.codebook_size = codebook_size
        self.codebook_dim = int(math.log2(codebook_size))
        dims = self.codebook_dim * num_codebooks
        dim = dim if dim is not None else dims
        has_projections = dim != dims if has_projections is None else bool(has_projections)
        if not has_projections:
            self.project_in, self.project_out = nn.Identity(), nn.Identity()
        else:
            if cosine_sim_project_in:
                scale = cosine_sim_project_in_scale if cosine_sim_project_in_scale is not None else codebook_scale
                self.project_in = CosineSimLinear(dim, dims, scale=scale)
            else:
                self.project_in = nn.Linear(dim, dims, bias=projection_has_bias)
            self.project_out = nn.Linear(dims, dim, bias=projection_has_bias)
        self.has_projections = has_projections
        self.dim = dim
        self.num_codebooks = num_codebooks
        self.keep_num_codebooks_dim = bool(keep_num_codebooks_dim)
        self.channel_first = channel_first
        self.activation = straight_through_activation if straight_through_activation is not None else nn.Identity()
        self.spherical = bool(spherical)
        self.orthogonal_rotation = bool(orthogonal_rotation)
        if self.orthogonal_rotation:
            rot = torch.empty(self.codebook_dim, self.codebook_dim)
            nn.init.orthogonal_(rot)
            self.register_buffer("orthogonal_rot", rot)
        self.frac_per_sample_entropy = float(frac_per_sample_entropy)
        self.diversity_gamma = float(diversity_gamma)
        self.entropy_loss_weight = float(entropy_loss_weight)
        self.codebook_scale = codebook_scale
        self.commitment_loss_weight = float(commitment_loss_weight)
        self.soft_clamp_input_value = soft_clamp_input_value
        self.entropy_loss_offset = float(entropy_loss_offset)
        self.experimental_softplus_entropy_loss = bool(experimental_softplus_entropy_loss)
        # Bit weights, most significant first (a persistent buffer upstream: kept for checkpoints).
        self.register_buffer("mask", 2 ** torch.arange(self.codebook_dim - 1, -1, -1))
        self.register_buffer("zero", torch.tensor(0.0), persistent=False)
        self.force_quantization_f32 = bool(force_quantization_f32)
        self.register_buffer("codebook", self._bits_of(torch.arange(codebook_size)).float(), persistent=False)

    def _bits_of(self, indices: Tensor) -> Tensor:
        bits = ((indices[..., None].int() & self.mask) != 0).float()
        return self.bits_to_codes(bits)

    def bits_to_codes(self, bits: Tensor) -> Tensor:
        return bits * self.codebook_scale * 2 - self.codebook_scale

    def _sphere(self, t: Tensor) -> Tensor:
        return F.normalize(t, dim=-1) * self.codebook_scale if self.spherical else t

    @property
    def dtype(self) -> torch.dtype:
        return self.codebook.dtype

    def indices_to_codes(self, indices: Tensor, project_out: bool = True) -> Tensor:
        """Codes of indices (channels first for images/video or ``channel_first``)."""
        spatial = indices.dim() >= 3 + int(self.keep_num_codebooks_dim)
        transpose = self.channel_first if self.channel_first is not None else spatial
        if not self.keep_num_codebooks_dim:
            indices = indices[..., None]
        codes = self._sphere(self._bits_of(indices).to(self.dtype))
        if self.orthogonal_rotation:
            codes = codes @ self.orthogonal_rot.t()
        codes = codes.flatten(-2)
        if project_out:
            codes = self.project_out(codes)
        return codes.movedim(-1, 1) if transpose else codes

    def forward(self, x: Tensor, inv_temperature: float = 100.0, return_loss_breakdown: bool = False, mask: Tensor | None = None):
        transpose = self.channel_first if self.channel_first is not None else x.dim() >= 4
        spatial: tuple[int, ...] = ()
        if transpose:
            spatial = tuple(x.shape[2:])
            x = x.flatten(2).transpose(1, 2)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x has {x.shape[-1]} features but dim={self.dim}")
        x = self.project_in(x)
        if self.soft_clamp_input_value is not None:
            c = self.soft_clamp_input_value
            x = torch.tanh(x / c) * c
        b, n = x.shape[:2]
        x = x.reshape(b, n, self.num_codebooks, self.codebook_dim)
        if self.orthogonal_rotation:
            x = x @ self.orthogonal_rot
        x = self._sphere(x)
        f32 = self.force_quantization_f32
        orig_dtype = x.dtype
        with torch.autocast("cuda", enabled=False) if f32 and x.is_cuda else nullcontext():
            if f32:
                x = x.float()
            inp = x
            quantized = torch.where(x > 0, self.codebook_scale, -self.codebook_scale).to(x.dtype)
            indices = ((quantized > 0).int() * self.mask.int()).sum(-1)
            quantized = self._sphere(quantized)
            if self.training:
                act = self.activation(x)
                x = act + (quantized - act).detach()
            else:
                x = quantized
            if self.training:
                per_sample, batch_entropy, aux = self._entropy_loss(inp, mask, inv_temperature)
            else:
                per_sample = batch_entropy = aux = self.zero
            if self.training and self.experimental_softplus_entropy_loss:
                aux = F.softplus(aux + self.entropy_loss_offset)
            if self.training and self.commitment_loss_weight > 0:
                err = (inp - quantized.detach()).square()
                commit = (err[mask] if mask is not None else err).mean()
            else:
                commit = self.zero
            if f32:
                x = x.to(orig_dtype)
        if self.orthogonal_rotation:
            x = x @ self.orthogonal_rot.t()
        x = self.project_out(x.reshape(b, n, -1))
        if transpose:
            x = x.transpose(1, 2).reshape(b, x.shape[-1], *spatial)
            indices = indices.reshape(b, *spatial, self.num_codebooks)
        if not self.keep_num_codebooks_dim:
            indices = indices[..., 0]
        loss = aux * self.entropy_loss_weight + commit * self.commitment_loss_weight
        ret = Return(x, indices, loss)
        if not return_loss_breakdown:
            return ret
        return ret, LossBreakdown(per_sample, batch_entropy, commit)

    def _entropy_loss(self, inp: Tensor, mask: Tensor | None, inv_temperature: float) -> tuple[Tensor, Tensor, Tensor]:
        """Mean per-sample entropy of the soft code assignment, the entropy of its batch mean,
        and the penalty ``per_sample - diversity_gamma * batch``."""
        codebook = self._sphere(self.codebook.float() if self.force_quantization_f32 else self.codebook)
        rows = inp[mask] if mask is not None else inp
        rows = rows.reshape(-1, *rows.shape[-2:]) if mask is None else rows
        if self.frac_per_sample_entropy < 1:
            num = rows.shape[0]
            keep = torch.randn(num).argsort(dim=-1) < int(num * self.frac_per_sample_entropy)
            rows = rows[keep]
        # softmax of -distance: |x - c|^2 differs from -2 x.c by terms constant per row.
        prob = (2 * inv_temperature * torch.einsum("...id,jd->...ij", rows, codebook)).softmax(-1)
        per_sample = _entropy(prob).mean()
        avg = _mean_over_ranks(prob.reshape(-1, *prob.shape[-2:]).mean(0))
        batch_entropy = _entropy(avg).mean()
        return per_sample, batch_entropy, per_sample - self.diversity_gamma * batch_entropy


class ResidualLFQ(nn.Module):
    """Residual LFQ (stages at scales ``2^-q``), vector-quantize-pytorch's signature; extra
    keywords go to each :class:`LFQ`.

    ``forward(x, mask=None, return_all_codes=False, rand_quantize_dropout_fixed_seed=None)``
    returns ``(quantized, indices (B, N, Q), aux_losses (Q,))`` (plus all codes).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        quantize_dropout: bool = False,
        quantize_dropout_cutoff_index: int = 0,
        quantize_dropout_multiple_of: int = 1,
        soft_clamp_input_value: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if isinstance(num_quantizers, bool) or not isinstance(num_quantizers, int) or num_quantizers < 1:
            raise ValueError(f"num_quantizers must be a positive int, got {num_quantizers!r}")
        if codebook_size < 2 or not math.log2(codebook_size).is_integer():
            raise ValueError(f"codebook_size must be a power of 2, got {codebook_size!r}")
        codebook_dim = int(math.log2(codebook_size))
        self.has_projections = codebook_dim != dim
        self.project_in = nn.Linear(dim, codebook_dim) if self.has_projections else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if self.has_projections else nn.Identity()
        self.num_quantizers = num_quantizers
        layers = []
        for q in range(num_quantizers):
            layers.append(LFQ(dim=codebook_dim, codebook_scale=2.0 ** -q, soft_clamp_input_value=soft_clamp_input_value, **kwargs))
            if soft_clamp_input_value is not None:
                soft_clamp_input_value *= 0.5
        self.layers = nn.ModuleList(layers)
        self.quantize_dropout = bool(quantize_dropout) and num_quantizers > 1
        self.quantize_dropout_cutoff_index = quantize_dropout_cutoff_index
        self.quantize_dropout_multiple_of = quantize_dropout_multiple_of

    @property
    def codebooks(self) -> Tensor:
        return torch.stack([layer.codebook for layer in self.layers])

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Codes (Q, B, ..., codebook_dim) of indices (B, ..., Q') (``-1``/missing stages: 0)."""
        return stage_codes(self.codebooks, indices, self.quantize_dropout)

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        return self.project_out(self.get_codes_from_indices(indices).sum(0))

    def forward(self, x: Tensor, mask: Tensor | None = None, return_all_codes: bool = False,
                rand_quantize_dropout_fixed_seed: int | None = None):
        x = self.project_in(x)
        last = last_active_stage(self, x.device, rand_quantize_dropout_fixed_seed)
        residual, out, all_idx, losses = x, 0.0, [], []
        for q, layer in enumerate(self.layers):
            if q > last:
                all_idx.append(torch.full(x.shape[:2], -1, dtype=torch.long, device=x.device))
                losses.append(torch.zeros((), dtype=x.dtype, device=x.device))
                continue
            quantized, idx, loss = layer(residual, mask=mask)
            residual = residual - quantized.detach()
            out = out + quantized
            all_idx.append(idx)
            losses.append(loss)
        out = self.project_out(out)
        ret = (out, torch.stack(all_idx, -1), torch.stack(losses, -1))
        if not return_all_codes:
            return ret
        return ret + (self.get_codes_from_indices(ret[1]),)


class GroupedResidualLFQ(GroupedStages):
    """The feature dimension split into ``groups``, each quantized by its own :class:`ResidualLFQ`
    (vector-quantize-pytorch's signature and ``rvqs.{g}`` layout).

    ``forward(x, mask=None, return_all_codes=False)`` returns ``(quantized, indices (G, B, N, Q),
    aux_losses (G, Q))`` (plus a tuple of each group's codes).
    """

    def __init__(self, *, dim: int, groups: int = 1, accept_image_fmap: bool = False, **kwargs) -> None:
        super().__init__(lambda d: ResidualLFQ(dim=d, **kwargs), dim=dim, groups=groups, accept_image_fmap=accept_image_fmap)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_all_codes: bool = False):
        return self._forward_groups(x, return_all_codes, mask=mask)
