"""rvqfast: fast residual vector quantization, with a pose-code motion tokenizer built on it.

Drop-in for vector-quantize-pytorch — change the import line only::

    from rvqfast import ResidualVQ, VectorQuantize, GroupedResidualVQ, FSQ, LFQ, SimVQ  # ...

(the full list, and the vector-quantize-pytorch names not provided, are in
:mod:`rvqfast.quantize.compat`).

Kernels live behind the ops in :mod:`rvqfast.ops` (one ``torch.library`` schema each, see
``rvqfast/_ops.py``); :func:`available_backends` tells which are built here.
"""
from __future__ import annotations

from typing import Any

from . import ops
from .backends import available_backends

__version__ = "0.1.0"

# Heavier submodules load on first use, so `import rvqfast` stays quick and the ops work even
# where optional pieces (plotting, ONNX) are not installed.
_LAZY = {
    "VectorQuantize": ("rvqfast.quantize", "VectorQuantize"),
    "ResidualVQ": ("rvqfast.quantize", "ResidualVQ"),
    "GroupedResidualVQ": ("rvqfast.quantize", "GroupedResidualVQ"),
    "FSQ": ("rvqfast.quantize", "FSQ"),
    "SimVQ": ("rvqfast.quantize", "SimVQ"),
    "LFQ": ("rvqfast.quantize", "LFQ"),
    "ResidualLFQ": ("rvqfast.quantize", "ResidualLFQ"),
    "GroupedResidualLFQ": ("rvqfast.quantize", "GroupedResidualLFQ"),
    "ResidualSimVQ": ("rvqfast.quantize", "ResidualSimVQ"),
    "ResidualFSQ": ("rvqfast.quantize", "ResidualFSQ"),
    "GroupedResidualFSQ": ("rvqfast.quantize", "GroupedResidualFSQ"),
    "MotionTokenizer": ("rvqfast.models", "MotionTokenizer"),
}

__all__ = ["ops", "available_backends", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    from .quantize.compat import missing_name_error

    raise missing_name_error("rvqfast", name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
