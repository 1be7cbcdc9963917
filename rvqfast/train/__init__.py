"""Training of the motion tokenizer: ``python -m rvqfast.train`` or :func:`train` from Python."""
from __future__ import annotations

from .checkpoint import CheckpointError
from .config import TrainConfig, build_config
from .loop import TrainingError, TrainResult, train

__all__ = ["TrainConfig", "build_config", "train", "TrainResult", "TrainingError", "CheckpointError"]
