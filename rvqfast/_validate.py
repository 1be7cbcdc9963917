"""Input checks shared by the public ops and modules.

Shapes, dtypes and devices are checked once, at the public boundary, with messages that name the
argument; kernels and backends assume validated input.
"""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PRECISIONS = ("exact", "certified", "certified-bf16", "certified-int8", "bf16", "auto")


def check_float(name: str, t: object, ndim: int | None = None, shape_hint: str = "") -> torch.Tensor:
    """Check that ``t`` is a floating tensor of ``ndim`` dims holding no NaN/Inf."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor{shape_hint}, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims{shape_hint}, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    return t


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise if ``t`` holds NaN or Inf (one reduction; cheap next to a search)."""
    if not t.numel():
        return
    # One reduction answers the common case: a finite sum implies every element is finite (a NaN
    # or Inf anywhere poisons it). Only a non-finite sum (which overflow can also cause) pays for
    # the elementwise pass.
    if bool(torch.isfinite(t.sum(dtype=torch.float32))):
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    devices = {k: v.device for k, v in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        desc = ", ".join(f"{k} on {d}" for k, d in devices.items())
        raise ValueError(f"all inputs must be on the same device, got {desc}")
    return first


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def check_indices(name: str, idx: object, num_codes: int, ndim: int, shape_hint: str = "") -> torch.Tensor:
    """Check integer code indices; ``-1`` marks a dropped stage or masked row and is allowed."""
    if not isinstance(idx, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor{shape_hint}, got {type(idx).__name__}")
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"{name} must be an integer tensor, got {idx.dtype}")
    if idx.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims{shape_hint}, got shape {tuple(idx.shape)}")
    if idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -1 or hi >= num_codes:
            raise ValueError(
                f"{name} out of range: values must be in [0, {num_codes}) (or -1 for 'none'), "
                f"got min {lo}, max {hi}"
            )
    return idx
