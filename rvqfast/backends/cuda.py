"""The ``cuda`` backend: registers the CUDA extension's kernels (``rvqfast._cuda``).

The extension is built by ``setup.py`` only when a CUDA build of torch and a CUDA toolkit are
present (sources: kernels/cuda/*.cu + kernels/binding/cuda_binding.cpp). Importing this module
raises ImportError when it is not built or no CUDA device is visible, so the registry records the
backend as unavailable with the reason.

Kernels: tensor-core (WMMA) screening keeps the best few candidates per row, an exact fp32
re-rank picks the winner, and rows the screen's error bound cannot certify are rescanned exactly.
``"exact"`` screens in TF32 and ``"certified"`` in BF16 (candidates ranked by a rigorous per-code
lower bound of the distance, docs/gpu.md); both give the reference's answer up to fp32
near-ties. ``"bf16"`` (approximate) screens in BF16 and skips the rescan.
Inputs of any float dtype are converted to fp32 before the kernels run.
"""
from __future__ import annotations

import torch

try:
    from .. import _cuda
except ImportError as e:
    raise ImportError(
        f"rvqfast._cuda is not built ({e}); it needs a CUDA build of torch and a CUDA toolkit at "
        "install time: `pip install --no-build-isolation --no-deps -e .`"
    ) from e

if not torch.cuda.is_available():
    raise ImportError("rvqfast._cuda is built but no CUDA device is available")

from . import register_extension  # noqa: E402

__all__ = ["nearest_code", "rvq_encode", "rvq_decode", "ema_stats"]

nearest_code, rvq_encode, rvq_decode, ema_stats = register_extension(
    "cuda",
    _cuda,
    ("exact", "certified", "bf16"),
    docs={
        "nearest_code": "TF32 (``exact``) or BF16 (``certified``, ``bf16``) screening + exact fp32 re-rank "
                        "(+ exact fallback unless ``precision == \"bf16\"``).",
        "rvq_encode": "All stages on the device: screen + re-rank + residual update per stage (2 launches each), "
                      "then a stage-order decode of the sum.",
        "rvq_decode": "Gather + stage-order sum (``-1`` skipped); bitwise equal to the reference.",
        "ema_stats": "Per-code counts and sums with fp32 atomics (sums order-dependent in the last bits).",
    },
)

# No grouped CUDA kernel yet: the grouped ops loop over groups, one rvq_encode (all stages on the
# device) / nearest_code launch sequence per group.
from .grouped import register_per_group  # noqa: E402

grouped_nearest_code, grouped_rvq_encode = register_per_group(
    "cuda", nearest_code, rvq_encode, "one CUDA nearest_code / rvq_encode call per group (no grouped kernel)."
)
