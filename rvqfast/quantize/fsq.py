"""Finite scalar quantization: drop-ins for ``vector_quantize_pytorch``'s ``FSQ``, ``ResidualFSQ``
and ``GroupedResidualFSQ``.

FSQ (Mentzer et al. 2023, arXiv:2309.15505) rounds each bounded coordinate to one of ``L_i``
levels; the code index is the mixed-radix number of the per-coordinate levels. No nearest-code
search is involved, so this is plain elementwise PyTorch (and traces under torch.compile).
Module and buffer names follow vector-quantize-pytorch, so its checkpoints load unchanged.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Sequence

import torch
from torch import Tensor, nn

from .stages import GroupedStages, last_active_stage, stage_codes


def _ste(z: Tensor, zq: Tensor) -> Tensor:
    """Value of ``zq``, gradient of the identity (straight-through)."""
    return z + (zq - z).detach()


def _check_levels(levels: object) -> list[int]:
    if not isinstance(levels, (list, tuple)) or not levels or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in levels
    ):
        raise ValueError(f"levels must be a non-empty list of ints >= 2, got {levels!r}")
    return list(levels)


def _channels_last(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """(B, D, ...) -> (B, prod(...), D) and the spatial shape to undo it."""
    spatial = tuple(x.shape[2:])
    return x.flatten(2).transpose(1, 2), spatial


def _channels_first(x: Tensor, spatial: tuple[int, ...]) -> Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], *spatial)


class FSQ(nn.Module):
    """Finite scalar quantization with vector-quantize-pytorch's signature, defaults and returns.

    ``forward(z)`` takes (B, N, dim), or channel-first (B, dim, ...) for images/video or with
    ``channel_first``, and returns ``(quantized, indices)``; indices are int32, (B, N) with one
    codebook, (B, N, num_codebooks) otherwise (or whenever ``keep_num_codebooks_dim``).
    """

    def __init__(
        self,
        levels: Sequence[int],
        dim: int | None = None,
        num_codebooks: int = 1,
        keep_num_codebooks_dim: bool | None = None,
        scale: float | None = None,
        allowed_dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64),
        channel_first: bool = False,
        projection_has_bias: bool = True,
        return_indices: bool = True,
        force_quantization_f32: bool = True,
        preserve_symmetry: bool = False,
        noise_dropout: float = 0.0,
        bound_hard_clamp: bool = False,
        orthogonal_rotation: bool = False,
    ) -> None:
        super().__init__()
        levels = _check_levels(levels)
        if 2 in levels and not preserve_symmetry:
            raise ValueError("levels of 2 need preserve_symmetry=True (or use more levels)")
        if noise_dropout > 0 and not preserve_symmetry:
            raise ValueError("noise_dropout > 0 needs preserve_symmetry=True")
        if isinstance(num_codebooks, bool) or not isinstance(num_codebooks, int) or num_codebooks < 1:
            raise ValueError(f"num_codebooks must be a positive int, got {num_codebooks!r}")
        if keep_num_codebooks_dim is None:
            keep_num_codebooks_dim = num_codebooks > 1
        if num_codebooks > 1 and not keep_num_codebooks_dim:
            raise ValueError("keep_num_codebooks_dim must be True with several codebooks")
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        basis = [1]
        for lv in levels[:-1]:
            basis.append(basis[-1] * lv)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.int32), persistent=False)
        self.levels = levels
        self.scale = scale
        self.preserve_symmetry = bool(preserve_symmetry)
        self.noise_dropout = float(noise_dropout)
        self.codebook_dim = len(levels)
        self.num_codebooks = num_codebooks
        self.effective_codebook_dim = self.codebook_dim * num_codebooks
        self.keep_num_codebooks_dim = bool(keep_num_codebooks_dim)
        self.dim = dim if dim is not None else self.effective_codebook_dim
        self.channel_first = bool(channel_first)
        self.has_projections = self.dim != self.effective_codebook_dim
        if self.has_projections:
            self.project_in = nn.Linear(self.dim, self.effective_codebook_dim, bias=projection_has_bias)
            self.project_out = nn.Linear(self.effective_codebook_dim, self.dim, bias=projection_has_bias)
        else:
            self.project_in, self.project_out = nn.Identity(), nn.Identity()
        self.return_indices = bool(return_indices)
        self.codebook_size = math.prod(levels)
        if self.return_indices:
            self.register_buffer("implicit_codebook", self._indices_to_codes(torch.arange(self.codebook_size)), persistent=False)
        self.allowed_dtypes = tuple(allowed_dtypes)
        self.force_quantization_f32 = bool(force_quantization_f32)
        self.bound_hard_clamp = bool(bound_hard_clamp)
        self.orthogonal_rotation = bool(orthogonal_rotation)
        if self.orthogonal_rotation:
            rot = torch.empty(self.codebook_dim, self.codebook_dim)
            nn.init.orthogonal_(rot)
            self.register_buffer("orthogonal_rot", rot)

    # --------------------------------------------------------------------- quantization
    def _squash(self, z: Tensor) -> Tensor:
        return z.clamp(-1.0, 1.0) if self.bound_hard_clamp else torch.tanh(z)

    def quantize(self, z: Tensor) -> Tensor:
        """Bounded, rounded coordinates in [-1, 1] (same shape as ``z``), straight-through."""
        lv = self._levels
        if self.preserve_symmetry:
            # Symmetric levels (arXiv:2411.19842, sec. 3.2): L cells of equal width over [-1, 1].
            cells = (lv - 1) * (self._squash(z) + 1) / 2 + 0.5
            return (2.0 / (lv - 1)) * _ste(cells, cells.floor()) - 1.0
        half = (lv - 1) * (1 + 1e-3) / 2
        # Even L: shift by half a level so rounding gives L values, symmetric about -0.5.
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        shift = offset / half
        if not self.bound_hard_clamp:
            shift = torch.atanh(shift)
        bounded = self._squash(z + shift) * half - offset
        return _ste(bounded, bounded.round()) / (lv // 2)

    def _to_level(self, codes: Tensor) -> Tensor:
        lv = self._levels
        if self.preserve_symmetry:
            return (codes + 1.0) * ((lv - 1) / 2.0)
        return codes * (lv // 2) + lv // 2

    def _from_level(self, level: Tensor) -> Tensor:
        lv = self._levels
        if self.preserve_symmetry:
            return level * (2.0 / (lv - 1)) - 1.0
        return (level - lv // 2) / (lv // 2)

    def indices_to_level_indices(self, indices: Tensor) -> Tensor:
        """Per-coordinate level (..., codebook_dim) of each index."""
        return (indices[..., None] // self._basis) % self._levels

    def _indices_to_codes(self, indices: Tensor) -> Tensor:
        return self._from_level(self.indices_to_level_indices(indices))

    def codes_to_indices(self, zhat: Tensor) -> Tensor:
        """Index (int32) of each code (..., codebook_dim)."""
        if zhat.shape[-1] != self.codebook_dim:
            raise ValueError(f"codes must end in codebook_dim={self.codebook_dim}, got shape {tuple(zhat.shape)}")
        return (self._to_level(zhat) * self._basis).sum(-1).round().to(torch.int32)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Output (..., dim) of indices (channels first for images/video or ``channel_first``)."""
        spatial = indices.dim() >= 3 + int(self.keep_num_codebooks_dim)
        codes = self._indices_to_codes(indices)
        if self.orthogonal_rotation:
            codes = codes @ self.orthogonal_rot.t()
        if self.keep_num_codebooks_dim:
            codes = codes.flatten(-2)
        codes = self.project_out(codes)
        if spatial or self.channel_first:
            codes = codes.movedim(-1, 1)
        return codes

    def _noise(self, codes: Tensor) -> Tensor:
        if not self.training or self.noise_dropout == 0:
            return codes
        # Same RNG draws in the same order as vector-quantize-pytorch (mask, then offsets).
        hit = torch.full_like(codes, self.noise_dropout).bernoulli_().bool()
        jitter = torch.rand_like(codes) - 0.5
        return torch.where(hit, codes + jitter, codes).clamp(-1.0, 1.0)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise ValueError(f"z must be a floating tensor, got {type(z).__name__ if not isinstance(z, Tensor) else z.dtype}")
        if z.dim() < 3:
            raise ValueError(f"z must be (B, N, dim) or channel-first (B, dim, ...), got shape {tuple(z.shape)}")
        move = z.dim() >= 4 or self.channel_first
        spatial: tuple[int, ...] = ()
        if move:
            z, spatial = _channels_last(z)
        if z.shape[-1] != self.dim:
            raise ValueError(f"z has {z.shape[-1]} features but dim={self.dim}")
        z = self.project_in(z)
        b, n = z.shape[:2]
        z = z.reshape(b, n, self.num_codebooks, self.codebook_dim)
        if self.orthogonal_rotation:
            z = z @ self.orthogonal_rot
        dtype = z.dtype
        if self.force_quantization_f32 and dtype not in self.allowed_dtypes:
            z = z.float()
        with torch.autocast("cuda", enabled=False) if self.force_quantization_f32 and z.is_cuda else nullcontext():
            codes = self.quantize(z)
            indices = self.codes_to_indices(codes) if self.return_indices else None
            codes = self._noise(codes)
            if self.orthogonal_rotation:
                codes = codes @ self.orthogonal_rot.t()
            codes = codes.reshape(b, n, -1).to(dtype)
        out = self.project_out(codes)
        if move:
            out = _channels_first(out, spatial)
            if indices is not None:
                indices = indices.reshape(b, *spatial, self.num_codebooks)
        if indices is not None and not self.keep_num_codebooks_dim:
            indices = indices[..., 0]
        return out, indices


class ResidualFSQ(nn.Module):
    """Residual FSQ (Algorithm 1 of arXiv:2107.03312 with FSQ stages at shrinking scales
    ``levels ** -q``), with vector-quantize-pytorch's signature; extra keywords go to each FSQ.

    ``forward(x, return_all_codes=False, rand_quantize_dropout_fixed_seed=None)`` returns
    ``(quantized, indices (B, N, Q))`` (plus all codes (Q, B, N, codebook_dim)).
    """

    def __init__(
        self,
        *,
        levels: Sequence[int],
        num_quantizers: int,
        dim: int | None = None,
        is_channel_first: bool = False,
        quantize_dropout: bool = False,
        quantize_dropout_cutoff_index: int = 0,
        quantize_dropout_multiple_of: int = 1,
        soft_clamp_input_value: float | list[float] | Tensor | None = None,
        bound_hard_clamp: bool = True,
        **kwargs,
    ) -> None:
        super().__init__()
        levels = _check_levels(levels)
        if isinstance(num_quantizers, bool) or not isinstance(num_quantizers, int) or num_quantizers < 1:
            raise ValueError(f"num_quantizers must be a positive int, got {num_quantizers!r}")
        if not isinstance(quantize_dropout_cutoff_index, int) or quantize_dropout_cutoff_index < 0:
            raise ValueError(f"quantize_dropout_cutoff_index must be an int >= 0, got {quantize_dropout_cutoff_index!r}")
        codebook_dim = len(levels)
        dim = dim if dim is not None else codebook_dim
        self.has_projections = dim != codebook_dim
        self.project_in = nn.Linear(dim, codebook_dim) if self.has_projections else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if self.has_projections else nn.Identity()
        self.is_channel_first = bool(is_channel_first)
        self.num_quantizers = num_quantizers
        self.levels = levels
        self.layers = nn.ModuleList(
            FSQ(levels=levels, dim=codebook_dim, preserve_symmetry=True, bound_hard_clamp=bound_hard_clamp, **kwargs)
            for _ in range(num_quantizers)
        )
        self.codebook_size = self.layers[0].codebook_size
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("scales", torch.stack([lv ** -q for q in range(num_quantizers)]), persistent=False)
        self.quantize_dropout = bool(quantize_dropout) and num_quantizers > 1
        self.quantize_dropout_cutoff_index = quantize_dropout_cutoff_index
        self.quantize_dropout_multiple_of = quantize_dropout_multiple_of
        if bound_hard_clamp:
            if soft_clamp_input_value is not None:
                raise ValueError("soft_clamp_input_value cannot be set with bound_hard_clamp=True")
            # Softly bound inputs just past the first stage's outermost levels.
            soft_clamp_input_value = 1 + 1 / (lv - 1)
        if isinstance(soft_clamp_input_value, (list, float, int)):
            soft_clamp_input_value = torch.tensor(soft_clamp_input_value, dtype=torch.float32)
        self.register_buffer("soft_clamp_input_value", soft_clamp_input_value, persistent=False)

    @property
    def codebooks(self) -> Tensor:
        """(Q, codebook_size, codebook_dim) implicit codebooks (unscaled)."""
        return torch.stack([layer.implicit_codebook for layer in self.layers])

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Scaled codes (Q, B, ..., codebook_dim) of indices (B, ..., Q'); ``-1`` gives zeros."""
        codes = stage_codes(self.codebooks, indices, self.quantize_dropout)
        return codes * self.scales.reshape(self.num_quantizers, *([1] * (codes.dim() - 2)), -1)

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        return self.project_out(self.get_codes_from_indices(indices).sum(0))

    def forward(self, x: Tensor, return_all_codes: bool = False, rand_quantize_dropout_fixed_seed: int | None = None):
        spatial = None
        if self.is_channel_first:
            x, spatial = _channels_last(x)
        x = self.project_in(x)
        if self.soft_clamp_input_value is not None:
            c = self.soft_clamp_input_value
            x = torch.tanh(x / c) * c
        last = last_active_stage(self, x.device, rand_quantize_dropout_fixed_seed)
        residual, out, all_idx = x, 0.0, []
        for q, (layer, scale) in enumerate(zip(self.layers, self.scales)):
            if q > last:
                all_idx.append(torch.full(x.shape[:2], -1, dtype=torch.long, device=x.device))
                continue
            quantized, idx = layer(residual / scale)
            quantized = quantized * scale
            residual = residual - quantized.detach()
            out = out + quantized
            all_idx.append(idx)  # int32; stacking with a dropped stage's int64 -1s promotes
        out = self.project_out(out)
        indices = torch.stack(all_idx, -1)
        if spatial is not None:
            out = _channels_first(out, spatial)
            indices = _channels_first(indices, spatial)
        if not return_all_codes:
            return out, indices
        return out, indices, self.get_codes_from_indices(indices)


class GroupedResidualFSQ(GroupedStages):
    """The feature dimension split into ``groups``, each quantized by its own :class:`ResidualFSQ`
    (vector-quantize-pytorch's signature and ``rvqs.{g}`` layout).

    ``forward(x, return_all_codes=False)`` returns ``(quantized, indices (G, B, N, Q))`` (plus a
    tuple of each group's codes (Q, B, N, codebook_dim)).
    """

    def __init__(self, *, dim: int, groups: int = 1, accept_image_fmap: bool = False, **kwargs) -> None:
        super().__init__(lambda d: ResidualFSQ(dim=d, **kwargs), dim=dim, groups=groups, accept_image_fmap=accept_image_fmap)
        self.codebook_size = self.rvqs[0].codebook_size

    def forward(self, x: Tensor, return_all_codes: bool = False):
        return self._forward_groups(x, return_all_codes)
