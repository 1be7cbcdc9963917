"""rvqfast: fast residual vector quantization, with a motion tokenizer built on it.

Drop-in for vector-quantize-pytorch: ``from rvqfast import ResidualVQ, VectorQuantize``.
"""
from __future__ import annotations

from . import ops
from .backends import available_backends

__version__ = "0.1.0"
__all__ = ["ops", "available_backends", "__version__"]
