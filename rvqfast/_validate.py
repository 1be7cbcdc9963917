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
    """Raise if ``t`` holds NaN or Inf (one reduction; cheap next to a search).

    Skipped while ``torch.compile`` traces: the answer depends on the data, and branching on it
    would break the graph (``fullgraph=True`` would fail); eager calls are always checked."""
    if not t.numel() or torch.compiler.is_compiling():
        return
    # One reduction answers the common case: a finite sum implies every element is finite (a NaN
    # or Inf anywhere poisons it). Only a non-finite sum (which overflow can also cause) pays for
    # the elementwise pass.
    if bool(torch.isfinite(t.sum(dtype=torch.float32))):
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


# Largest |value| a search input may hold: squared distances (|x - c|^2 summed over D) must stay
# finite in float32 (max 3.4e38) for every D the kernels take, and an overflow would silently
# turn every distance into inf and every index into a wrong one.
SEARCH_ABS_LIMIT = 1e15


def check_search_input(name: str, t: torch.Tensor) -> None:
    """Raise if ``t`` holds NaN/Inf or values beyond :data:`SEARCH_ABS_LIMIT` (one min/max pass).

    Skipped while ``torch.compile`` traces, as :func:`check_finite` is."""
    if not t.numel() or torch.compiler.is_compiling():
        return
    lo, hi = torch.aminmax(t.detach())  # NaN propagates into both
    lo, hi = float(lo), float(hi)
    if not (lo == lo and hi == hi) or abs(lo) == float("inf") or abs(hi) == float("inf"):
        raise ValueError(f"{name} contains NaN or Inf values")
    big = max(-lo, hi)
    if big > SEARCH_ABS_LIMIT:
        raise ValueError(f"{name} holds values up to {big:.3g}; squared distances would overflow float32 "
                         f"beyond |value| {SEARCH_ABS_LIMIT:g}: rescale the data (e.g. normalise it)")


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
    # The range check reads the data: skipped while torch.compile traces (see check_finite).
    if idx.numel() and not torch.compiler.is_compiling():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -1 or hi >= num_codes:
            raise ValueError(
                f"{name} out of range: values must be in [0, {num_codes}) (or -1 for 'none'), "
                f"got min {lo}, max {hi}"
            )
    return idx
