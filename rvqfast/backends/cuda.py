"""The ``cuda`` backend: registers the CUDA extension's kernels (``rvqfast._cuda``).

The extension is built by ``setup.py`` only when a CUDA build of torch and a CUDA toolkit are
present (sources: kernels/cuda/*.cu + kernels/binding/cuda_binding.cpp). Importing this module
raises ImportError when it is not built or no CUDA device is visible, so the registry records the
backend as unavailable with the reason.

Kernels: TF32 tensor-core (WMMA) screening keeps the best few candidates per row, an exact fp32
re-rank picks the winner, and rows the TF32 error bound cannot certify are rescanned exactly, so
``"exact"`` and ``"certified"`` give the reference's answer up to fp32 near-ties. ``"bf16"``
(approximate) skips that fallback scan; there is no BF16 tensor-core path yet.
Inputs of any float dtype are converted to fp32 before the kernels run.
"""
from __future__ import annotations

import torch
from torch import Tensor

try:
    from .. import _cuda
except ImportError as e:
    raise ImportError(
        f"rvqfast._cuda is not built ({e}); it needs a CUDA build of torch and a CUDA toolkit at "
        "install time: `pip install --no-build-isolation --no-deps -e .`"
    ) from e

if not torch.cuda.is_available():
    raise ImportError("rvqfast._cuda is built but no CUDA device is available")

from . import register  # noqa: E402

__all__ = ["nearest_code", "rvq_encode", "rvq_decode", "ema_stats"]


@register("cuda", "nearest_code")
def nearest_code(x: Tensor, codebook: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    """TF32 screening + exact fp32 re-rank (+ exact fallback unless ``precision == "bf16"``)."""
    return _cuda.nearest_code(x, codebook, precision)


nearest_code.precisions = ("exact", "certified", "bf16")


@register("cuda", "rvq_encode")
def rvq_encode(x: Tensor, codebooks: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    """All stages on the device: screen + re-rank + residual update per stage (2 launches each)."""
    return _cuda.rvq_encode(x, codebooks, precision)


rvq_encode.precisions = ("exact", "certified", "bf16")


@register("cuda", "rvq_decode")
def rvq_decode(indices: Tensor, codebooks: Tensor) -> Tensor:
    """Gather + stage-order sum (``-1`` skipped); bitwise equal to the reference."""
    return _cuda.rvq_decode(indices, codebooks)


@register("cuda", "ema_stats")
def ema_stats(x: Tensor, indices: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    """Per-code counts and sums with fp32 atomics (sums order-dependent in the last bits)."""
    return _cuda.ema_stats(x, indices, num_codes)
