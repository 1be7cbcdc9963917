"""Atomic, pickle-free persistence: tensors in safetensors, everything else in JSON.

A training checkpoint is ONE safetensors file (so writing it is atomic): model tensors under
``model.``, optimizer tensors under ``optim.<param>.<name>``, RNG states as uint8 tensors under
``rng.``; the JSON metadata (step, config, optimizer scalars and param groups) is stored as the
file's safetensors metadata string. Loading checks names, shapes and dtypes against the model
and optimizer being restored and raises :class:`CheckpointError` with the file name otherwise.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rvqfast.models.persist import (
    CheckpointError, atomic_save_tensors, atomic_write_json, check_finite_tensors, check_tensors,
    load_tensors, read_json, read_safetensors, tensors_digest,
)

CHECKPOINT_FORMAT = "rvqfast.train-checkpoint/1"
_CKPT_RE = re.compile(r"^step_(\d{9,12})\.safetensors$")
MAX_STEP = 10**12 - 1  # file names hold the step in 9-12 digits
_OPTIM_TENSORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")


# ---------------------------------------------------------------------------- optimizer


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{pid}.{name}"] = v
            else:
                scalars.setdefault(str(pid), {})[name] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def _unflatten_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: dict[str, Any], source: str) -> None:
    try:
        _restore_optimizer(opt, tensors, meta, source)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{source}: optimizer state cannot be restored ({type(e).__name__}: {e})") from None


def _check_optimizer_tensor(key: str, v: Tensor, params: dict[int, Tensor], source: str) -> tuple[int, str]:
    parts = key.split(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in _OPTIM_TENSORS:
        raise CheckpointError(f"{source}: unknown optimizer tensor {key!r}; expected optim.<param>.<"
                              f"{'|'.join(_OPTIM_TENSORS)}>")
    pid, name = int(parts[1]), parts[2]
    if pid not in params:
        raise CheckpointError(f"{source}: optimizer state for unknown parameter {pid}")
    p = params[pid]
    if name == "step":
        ok = v.dim() == 0 and v.is_floating_point() and bool(torch.isfinite(v)) and 0 <= float(v) <= MAX_STEP \
            and float(v) == int(float(v))
        if not ok:
            raise CheckpointError(f"{source}: optimizer step of parameter {pid} must be a whole number in "
                                  f"[0, {MAX_STEP}] stored as a float scalar, got {tuple(v.shape)} {v.dtype}")
    elif v.shape != p.shape or v.dtype != p.dtype:
        raise CheckpointError(f"{source}: optimizer {name} of parameter {pid} has shape {tuple(v.shape)} "
                              f"{v.dtype}, parameter is {tuple(p.shape)} {p.dtype}")
    return pid, name


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: dict[str, Any], source: str) -> None:
    current = opt.state_dict()
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: optimizer metadata must be a JSON object")
    groups = meta.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(current["param_groups"]):
        raise CheckpointError(f"{source}: optimizer param groups do not match")
    for g_saved, g_now in zip(groups, current["param_groups"]):
        if g_saved.get("params") != g_now["params"]:
            raise CheckpointError(f"{source}: optimizer parameters do not match the model")
        for k, v in g_now.items():
            if isinstance(v, tuple) and k in g_saved:
                g_saved[k] = tuple(g_saved[k])
    params = {pid: p for g_now, g in zip(current["param_groups"], opt.param_groups) for pid, p in zip(g_now["params"], g["params"])}
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid_i, name = _check_optimizer_tensor(key, v, params, source)
        state.setdefault(pid_i, {})[name] = v
    scalars = meta.get("scalars", {})
    if not isinstance(scalars, dict):
        raise CheckpointError(f"{source}: optimizer scalars must be a JSON object")
    for pid, sc in scalars.items():
        if not str(pid).isdigit() or int(pid) not in params or not isinstance(sc, dict):
            raise CheckpointError(f"{source}: optimizer scalars for unknown parameter {pid!r}")
        state.setdefault(int(pid), {}).update(sc)
    for pid, st in state.items():
        missing = {"exp_avg", "exp_avg_sq", "step"} - set(st)
        if missing:
            raise CheckpointError(f"{source}: optimizer state of parameter {pid} lacks {sorted(missing)}")
    for g_saved, g_now in zip(groups, current["param_groups"]):
        for k, v in g_saved.items():
            if k != "params" and k in g_now and isinstance(g_now[k], (int, float)) and not isinstance(g_now[k], bool) \
                    and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise CheckpointError(f"{source}: optimizer setting {k!r} must be a finite number, got {v!r}")
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------------- RNG


def rng_tensors() -> dict[str, Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def check_rng(tensors: Mapping[str, Tensor], source: str) -> None:
    """The saved CPU RNG state must have the shape and dtype torch uses; else CheckpointError."""
    now = torch.get_rng_state()
    v = tensors.get("rng.torch")
    if v is None or v.dtype != torch.uint8 or tuple(v.shape) != tuple(now.shape):
        got = "missing" if v is None else f"{tuple(v.shape)} {v.dtype}"
        raise CheckpointError(f"{source}: RNG state 'rng.torch' must be {tuple(now.shape)} uint8, got {got}")
    probe = torch.Generator()
    try:  # torch also checks the Mersenne-Twister state's internal fields
        probe.set_state(v)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: RNG state 'rng.torch' is invalid ({e})") from None


def restore_rng(tensors: Mapping[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{step:09d}.safetensors"


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in a folder, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), d / n) for n in os.listdir(d) if (m := _CKPT_RE.match(n))]
    return sorted(found)


def save_checkpoint(ckpt_dir: str | Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    meta: dict[str, Any], keep: int = 3) -> Path:
    """Write ``ckpt_dir/step_<step>.safetensors`` atomically; keep the newest ``keep``."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    otensors, ometa = _flatten_optimizer(opt)
    tensors.update(otensors)
    tensors.update(rng_tensors())
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise ValueError(f"step: expected an integer in [0, {MAX_STEP}], got {step!r}")
    full = {"format": CHECKPOINT_FORMAT, "step": step, "optimizer": ometa, **meta,
            "tensors_sha256": tensors_digest(tensors)}
    path = checkpoint_path(d, step)
    atomic_save_tensors(tensors, path, metadata={"rvqfast": json.dumps(full)})
    for _, old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (validated format)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: not a regular file; expected a training checkpoint")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("rvqfast")
    except Exception as e:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({type(e).__name__}: {e})") from e
    try:
        meta = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an rvqfast training checkpoint")
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise CheckpointError(f"{path}: step must be an integer in [0, {MAX_STEP}], got {step!r}")
    m = _CKPT_RE.match(Path(path).name)
    if m and int(m.group(1)) != step:
        raise CheckpointError(f"{path}: holds step {step} but its name says step {int(m.group(1))}")
    return meta


def load_checkpoint(path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG state in place; returns the JSON metadata."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    tensors, _ = read_safetensors(path)
    # Everything is checked before the model, optimizer or RNG is touched.
    if "tensors_sha256" in meta and tensors_digest(tensors) != meta["tensors_sha256"]:
        raise CheckpointError(f"{path}: tensor data does not match the checksum in its metadata; "
                              "the file is damaged")
    unknown = sorted(k for k in tensors if not k.startswith(("model.", "optim.", "rng.")))
    if unknown:
        raise CheckpointError(f"{path}: unexpected tensors {unknown[:5]}")
    model_t = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_tensors(model_t, model.state_dict(), str(path))
    check_finite_tensors(tensors, str(path))
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    check_rng(rng, str(path))
    optim_t = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(model_t)
    try:
        _unflatten_optimizer(opt, optim_t, meta.get("optimizer", {}), str(path))
    except CheckpointError:
        model.load_state_dict(saved_model)
        raise
    restore_rng(rng)
    return meta


__all__ = [
    "CheckpointError", "atomic_write_json", "atomic_save_tensors", "read_json", "load_tensors",
    "check_tensors", "save_checkpoint", "load_checkpoint", "list_checkpoints", "read_checkpoint_meta",
    "checkpoint_path",
]
