"""Argument checks and input/output reshaping shared by the public quantizer modules."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._validate import FLOAT_DTYPES, check_precision, check_search_input
from ..backends import BACKENDS


def _pos_int(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def check_common(
    *,
    dim: int,
    codebook_size: int,
    codebook_dim: int | None,
    heads: int,
    decay: float,
    eps: float,
    kmeans_iters: int,
    threshold_ema_dead_code: float,
    commitment_weight: float,
    sample_codebook_temp: float,
    backend: str,
    precision: str,
) -> int:
    """Validate the options both modules share; returns the resolved codebook_dim."""
    _pos_int("dim", dim)
    _pos_int("codebook_size", codebook_size)
    if codebook_dim is not None:
        _pos_int("codebook_dim", codebook_dim)
    if heads != 1:
        raise ValueError(f"heads must be 1 (multi-head codebooks are not supported by rvqfast), got {heads!r}")
    if not 0.0 <= float(decay) <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay!r}")
    if not float(eps) > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if isinstance(kmeans_iters, bool) or not isinstance(kmeans_iters, int) or kmeans_iters < 0:
        raise ValueError(f"kmeans_iters must be an int >= 0, got {kmeans_iters!r}")
    if float(threshold_ema_dead_code) < 0:
        raise ValueError(f"threshold_ema_dead_code must be >= 0, got {threshold_ema_dead_code!r}")
    if float(commitment_weight) < 0:
        raise ValueError(f"commitment_weight must be >= 0, got {commitment_weight!r}")
    if float(sample_codebook_temp) < 0:
        raise ValueError(f"sample_codebook_temp must be >= 0, got {sample_codebook_temp!r}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    check_precision(precision)
    return codebook_dim if codebook_dim is not None else dim


def resolve_flags(
    *,
    dim_for_rotation: int,
    ema_update: bool | None,
    learnable_codebook: bool | None,
    rotation_trick: bool | None,
    straight_through: bool,
    use_cosine_sim: bool,
) -> tuple[bool, bool, bool]:
    """Defaults and exclusions as in vector-quantize-pytorch -> (ema_update, learnable, rotation).

    One deliberate difference: ``straight_through=True`` with ``rotation_trick`` left at
    ``None`` turns the rotation trick off instead of failing an assertion.
    """
    ema_update = True if ema_update is None else bool(ema_update)
    learnable = False if learnable_codebook is None else bool(learnable_codebook)
    if rotation_trick is None:
        rotation_trick = dim_for_rotation > 1 and not straight_through
    rotation_trick = bool(rotation_trick)
    if straight_through and rotation_trick:
        raise ValueError("straight_through=True and rotation_trick=True are exclusive: pick one")
    if ema_update and learnable:
        raise ValueError("learnable_codebook=True needs ema_update=False (an EMA codebook is not learned by gradients)")
    if use_cosine_sim and learnable:
        raise ValueError("use_cosine_sim=True is not compatible with learnable_codebook=True")
    if straight_through and learnable:
        raise ValueError("straight_through=True is not compatible with learnable_codebook=True")
    return ema_update, learnable, rotation_trick


def core_options(
    *,
    dim: int,
    codebook_size: int,
    codebook_dim: int | None,
    heads: int,
    decay: float,
    eps: float,
    kmeans_init: bool,
    kmeans_iters: int,
    threshold_ema_dead_code: float,
    commitment_weight: float,
    ema_update: bool | None,
    learnable_codebook: bool | None,
    use_cosine_sim: bool,
    sync_codebook: bool | None,
    rotation_trick: bool | None,
    stochastic_sample_codes: bool,
    sample_codebook_temp: float,
    straight_through: bool,
    backend: str,
    precision: str,
    rotation_dim: int | None = None,
) -> tuple[int, dict]:
    """Check the options both modules share and resolve their defaults.

    ``rotation_dim`` is the size the rotation-trick default looks at (``None``: the resolved
    codebook_dim). Returns ``(codebook_dim, kwargs)``; the kwargs, plus ``num_stages`` and
    ``shared_codebook``, are those of ``QuantizerCore.__init__``.
    """
    cdim = check_common(
        dim=dim, codebook_size=codebook_size, codebook_dim=codebook_dim, heads=heads, decay=decay, eps=eps,
        kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
        commitment_weight=commitment_weight, sample_codebook_temp=sample_codebook_temp,
        backend=backend, precision=precision,
    )
    ema_update, learnable, rotation = resolve_flags(
        dim_for_rotation=cdim if rotation_dim is None else rotation_dim, ema_update=ema_update,
        learnable_codebook=learnable_codebook, rotation_trick=rotation_trick,
        straight_through=straight_through, use_cosine_sim=use_cosine_sim,
    )
    return cdim, dict(
        codebook_dim=cdim, codebook_size=codebook_size,
        decay=decay, eps=eps, kmeans_init=bool(kmeans_init), kmeans_iters=kmeans_iters,
        threshold_ema_dead_code=threshold_ema_dead_code, commitment_weight=commitment_weight,
        ema_update=ema_update, learnable_codebook=learnable, use_cosine_sim=bool(use_cosine_sim),
        sync_codebook=sync_codebook, rotation_trick=rotation, stochastic_sample_codes=bool(stochastic_sample_codes),
        sample_codebook_temp=sample_codebook_temp, straight_through=bool(straight_through),
        backend=backend, precision=precision,
    )


def code_logits(z: Tensor, codebook: Tensor, cosine: bool) -> Tensor:
    """Logits of each row of ``z`` (M, D) over the codes (K, D): the dot product for cosine
    codebooks, else minus the Euclidean distance (as vector-quantize-pytorch)."""
    if cosine:
        return z @ codebook.t()
    d2 = (z * z).sum(-1, keepdim=True) + (codebook * codebook).sum(-1) - 2 * z @ codebook.t()
    return -d2.clamp(min=1e-8).sqrt()


def output_layout(q: Tensor, mask: Tensor | None, has_projections: bool, layout: Layout) -> Tensor:
    """Projected-out quantized output (B, N, dim) back to the input's layout; masked positions
    are zeroed when a projection may have moved them off zero."""
    if mask is not None and has_projections:
        q = q * mask.unsqueeze(-1)
    return from_sequence(q, layout)


def projections(dim: int, codebook_dim: int) -> tuple[nn.Module, nn.Module]:
    if codebook_dim == dim:
        return nn.Identity(), nn.Identity()
    return nn.Linear(dim, codebook_dim), nn.Linear(codebook_dim, dim)


@dataclass
class Layout:
    """How the input was laid out, to undo it on the way out."""

    kind: str  # "seq" (B, N, D), "one" (B, D), "chan_first" (B, D, N), "image" (B, C, H, W)
    shape: tuple[int, ...]


def to_sequence(x: object, dim: int, *, channel_last: bool, accept_image_fmap: bool, mask: object) -> tuple[Tensor, Layout]:
    """Bring ``x`` to (B, N, dim) channel-last; check dtype, rank, feature size, and that it is
    non-empty and finite with |values| <= 1e15 (an overflowing distance would pick wrong codes
    and drag the codebooks along)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}): expected at least one vector")
    check_search_input("x", x)
    if accept_image_fmap:
        if x.dim() != 4:
            raise ValueError(f"x must be (B, C, H, W) with accept_image_fmap=True, got shape {tuple(x.shape)}")
        if mask is not None:
            raise ValueError("mask is not supported with accept_image_fmap=True")
        if x.shape[1] != dim:
            raise ValueError(f"x has {x.shape[1]} channels but dim={dim}")
        b, c, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(b, h * w, c), Layout("image", tuple(x.shape))
    if x.dim() == 2:
        if mask is not None:
            raise ValueError("mask is not supported for a single token per batch item (x of shape (B, D))")
        if x.shape[1] != dim:
            raise ValueError(f"x has last dim {x.shape[1]} but dim={dim}")
        return x.unsqueeze(1), Layout("one", tuple(x.shape))
    if x.dim() != 3:
        want = "(B, N, D)" if channel_last else "(B, D, N)"
        raise ValueError(f"x must be {want} or (B, D), got shape {tuple(x.shape)}")
    if not channel_last:
        if x.shape[1] != dim:
            raise ValueError(f"x has {x.shape[1]} channels (dim 1, channel_last=False) but dim={dim}")
        return x.transpose(1, 2), Layout("chan_first", tuple(x.shape))
    if x.shape[2] != dim:
        raise ValueError(f"x has last dim {x.shape[2]} but dim={dim}")
    return x, Layout("seq", tuple(x.shape))


def check_mask(mask: object, b: int, n: int) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (b, n):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor of shape ({b}, {n}), got {got}")
    return mask


def from_sequence(q: Tensor, layout: Layout) -> Tensor:
    """Undo :func:`to_sequence` on quantized output (B, N, dim)."""
    if layout.kind == "image":
        b, c, h, w = layout.shape
        return q.reshape(b, h, w, q.shape[-1]).permute(0, 3, 1, 2)
    if layout.kind == "one":
        return q[:, 0]
    if layout.kind == "chan_first":
        return q.transpose(1, 2)
    return q


def indices_layout(idx: Tensor, layout: Layout) -> Tensor:
    """Indices (B, N, ...) -> (B, H, W, ...) for images, (B, ...) for single tokens."""
    if layout.kind == "image":
        b, c, h, w = layout.shape
        return idx.reshape(b, h, w, *idx.shape[2:])
    if layout.kind == "one":
        return idx[:, 0]
    return idx
