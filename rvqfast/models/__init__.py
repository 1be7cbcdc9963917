"""Motion models built on rvqfast's quantizers."""
from __future__ import annotations

from .tokenizer import MODELS, MotionTokenizer, TokenizerConfig

__all__ = ["MotionTokenizer", "TokenizerConfig", "MODELS"]
