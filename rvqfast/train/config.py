"""Training configuration: presets < config file (JSON) < command-line flags.

A config file is one flat JSON object whose keys are :class:`TrainConfig` fields and/or
:class:`~rvqfast.models.tokenizer.TokenizerConfig` fields (``python -m rvqfast.train
--print-config`` prints a complete one to start from).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rvqfast.models.tokenizer import TokenizerConfig

from .presets import PRESETS


@dataclass
class TrainConfig:
    """Optimisation, data and bookkeeping settings (the model's are in ``tokenizer``)."""

    data: str = "default"
    out: str = ""
    steps: int = 3000
    batch_size: int = 64          # global: split evenly across data-parallel ranks
    window: int = 64              # frames per training crop (multiple of 4)
    seed: int = 0
    device: str = "cpu"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    lr_milestones: tuple[int, ...] = (200_000,)
    lr_gamma: float = 0.05
    grad_clip: float = 0.0        # 0 = off
    val_every: int = 500
    ckpt_every: int = 1000
    log_every: int = 10
    val_max_windows: int = 256
    num_threads: int = 0          # 0 = leave torch's default
    gif: bool = True
    # Decode onto the training data's skeleton when all training motions share one
    # (rvqfast.motion.shared_skeleton): decoded poses keep their bone directions and get its lengths.
    skeleton: bool = True
    # Weight of the soft pose-code consistency loss on the decoded joints (rvqfast.train.losses).
    posecode_loss_weight: float = 0.0
    # Weight of the bone-length loss on the decoded joints, metres (rvqfast.train.losses); pose-code
    # models only, like the consistency loss: it is there for edits, and on `rvq` it cost FID.
    bone_loss_weight: float = 0.0
    # Weight of the heading-drift loss (rvqfast.train.losses): |accumulated heading error|, radians,
    # over each training window. Root-relative joints turn with the integrated heading, so a small
    # bias in the decoded rotation velocity becomes most of their error on long motions.
    heading_loss_weight: float = 0.0
    # Limb-spliced motions added to the training set, as a share of its motions (rvqfast.train.splice).
    splice_fraction: float = 0.0
    # Augmented copies added to the training pool (rvqfast.train.augment): a comma-separated
    # subset of "mirror,speed,noise", and how many copies as a share of the training motions.
    augment: str = ""
    augment_fraction: float = 1.0
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if isinstance(self.tokenizer, dict):
            self.tokenizer = TokenizerConfig.from_dict(self.tokenizer)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting (as the flag a user would type)."""
        def pos_int(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            lo = 0 if allow_zero else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= {lo}, got {v!r}")
        for n in ("lr", "lr_gamma", "weight_decay", "grad_clip"):  # type first: no TypeError below
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{n}: expected a finite number, got {v!r}")
        if not isinstance(self.skeleton, bool):
            raise ValueError(f"skeleton: expected true or false, got {self.skeleton!r}")
        for n in ("device", "data", "out"):
            if not isinstance(getattr(self, n), str):
                raise ValueError(f"{n}: expected a string, got {getattr(self, n)!r}")
        for n in ("steps", "batch_size", "window", "log_every", "val_max_windows"):
            pos_int(n)
        for n in ("val_every", "ckpt_every", "warmup_steps", "num_threads", "seed"):
            pos_int(n, allow_zero=True)
        if self.window % self.tokenizer.frames_per_token:
            raise ValueError(f"--window: expected a multiple of {self.tokenizer.frames_per_token}, got {self.window}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr: expected a positive number, got {self.lr!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma: expected a number in (0, 1], got {self.lr_gamma!r}")
        if not (isinstance(self.posecode_loss_weight, (int, float)) and math.isfinite(self.posecode_loss_weight)
                and self.posecode_loss_weight >= 0):
            raise ValueError(f"posecode_loss_weight: expected a finite number >= 0, got {self.posecode_loss_weight!r}")
        if not (isinstance(self.bone_loss_weight, (int, float)) and math.isfinite(self.bone_loss_weight)
                and self.bone_loss_weight >= 0):
            raise ValueError(f"bone_loss_weight: expected a finite number >= 0, got {self.bone_loss_weight!r}")
        if not (isinstance(self.heading_loss_weight, (int, float)) and math.isfinite(self.heading_loss_weight)
                and self.heading_loss_weight >= 0):
            raise ValueError(f"heading_loss_weight: expected a finite number >= 0, got {self.heading_loss_weight!r}")
        if not (isinstance(self.splice_fraction, (int, float)) and 0 <= self.splice_fraction <= 4):
            raise ValueError(f"splice_fraction: expected a number in [0, 4], got {self.splice_fraction!r}")
        from .augment import parse_augment
        parse_augment(self.augment)
        if not (isinstance(self.augment_fraction, (int, float)) and 0 < self.augment_fraction <= 10):
            raise ValueError(f"augment_fraction: expected a number in (0, 10], got {self.augment_fraction!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay/grad_clip: expected numbers >= 0")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device: expected 'cpu' or 'cuda', got {self.device!r}")
        if not self.out:
            raise ValueError("--out: required (the run folder, e.g. runs/my_run)")
        self.tokenizer.validate()

    def lr_at(self, step: int) -> float:
        """Learning rate for optimisation step ``step`` (0-based): linear warm-up, then steps."""
        lr = self.lr
        if self.warmup_steps and step < self.warmup_steps:
            lr *= (step + 1) / self.warmup_steps
        for m in self.lr_milestones:
            if step >= m:
                lr *= self.lr_gamma
        return lr

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["lr_milestones"] = list(self.lr_milestones)
        d["tokenizer"] = self.tokenizer.to_dict()
        return d

    def to_flat_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        tok = d.pop("tokenizer")
        d.pop("out")
        return {**d, **tok}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        tok = d.pop("tokenizer", {})
        return cls(**d, tokenizer=TokenizerConfig.from_dict(tok))


TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"tokenizer"}
TOKENIZER_KEYS = {f.name for f in dataclasses.fields(TokenizerConfig)}


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], source: str) -> TrainConfig:
    """New config with flat ``overrides`` (train and tokenizer keys mixed) applied."""
    unknown = sorted(set(overrides) - TRAIN_KEYS - TOKENIZER_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; valid keys: {sorted(TRAIN_KEYS | TOKENIZER_KEYS)}")
    train = {k: v for k, v in overrides.items() if k in TRAIN_KEYS}
    tok = {k: v for k, v in overrides.items() if k in TOKENIZER_KEYS}
    try:
        new_tok = dataclasses.replace(cfg.tokenizer, **tok)
        return dataclasses.replace(cfg, **train, tokenizer=new_tok)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from e


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        if p.exists() and (not p.is_file() or p.stat().st_size > 10_000_000):
            raise OSError("not a regular file of at most 10 MB")  # e.g. a FIFO or /dev/zero
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"--config: {p} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--config: {p} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"--config: {p} must hold a JSON object of settings")
    if "tokenizer" in obj:  # also accept the nested form written into run folders
        tok = obj.pop("tokenizer")
        if not isinstance(tok, dict):
            raise ValueError(f"--config: {p}: 'tokenizer' must be an object")
        obj = {**obj, **tok}
    return obj


def build_config(preset: str, config_file: str | None, flags: dict[str, Any]) -> TrainConfig:
    """Preset, then the config file, then explicit flags; validated."""
    if preset not in PRESETS:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    cfg = apply_overrides(TrainConfig(), PRESETS[preset], f"preset {preset!r}")
    if config_file:
        cfg = apply_overrides(cfg, load_config_file(config_file), f"--config {config_file}")
    cfg = apply_overrides(cfg, flags, "flags")
    cfg.validate()
    return cfg


__all__ = ["TrainConfig", "build_config", "apply_overrides", "load_config_file", "PRESETS"]
