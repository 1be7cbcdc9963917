"""Atomic, pickle-free persistence: tensors in safetensors, everything else in JSON.

A training checkpoint is ONE safetensors file (so writing it is atomic): model tensors under
``model.``, optimizer tensors under ``optim.<param>.<name>``, RNG states as uint8 tensors under
``rng.``; the JSON metadata (step, config, optimizer scalars and param groups) is stored as the
file's safetensors metadata string. Loading checks names, shapes and dtypes against the model
and optimizer being restored and raises :class:`CheckpointError` with the file name otherwise.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rvqfast.models.persist import (
    CheckpointError, atomic_save_tensors, atomic_write_json, check_tensors, load_tensors, read_json,
    read_safetensors,
)

CHECKPOINT_FORMAT = "rvqfast.train-checkpoint/1"
_CKPT_RE = re.compile(r"^step_(\d{9})\.safetensors$")


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
    current = opt.state_dict()
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
        _, pid, name = key.split(".", 2)
        pid_i = int(pid)
        if pid_i not in params:
            raise CheckpointError(f"{source}: optimizer state for unknown parameter {pid}")
        if name in ("exp_avg", "exp_avg_sq") and (v.shape != params[pid_i].shape or v.dtype != params[pid_i].dtype):
            raise CheckpointError(f"{source}: optimizer {name} of parameter {pid} has shape {tuple(v.shape)} "
                                  f"{v.dtype}, parameter is {tuple(params[pid_i].shape)} {params[pid_i].dtype}")
        state.setdefault(pid_i, {})[name] = v
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------------- RNG


def rng_tensors() -> dict[str, Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


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
    full = {"format": CHECKPOINT_FORMAT, "step": step, "optimizer": ometa, **meta}
    path = checkpoint_path(d, step)
    atomic_save_tensors(tensors, path, metadata={"rvqfast": json.dumps(full)})
    for _, old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (validated format)."""
    from safetensors import safe_open

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
    return meta


def load_checkpoint(path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG state in place; returns the JSON metadata."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    tensors, _ = read_safetensors(path)
    model_t = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_tensors(model_t, model.state_dict(), str(path))
    rng = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    if "rng.torch" not in rng or rng["rng.torch"].dtype != torch.uint8:
        raise CheckpointError(f"{path}: missing or invalid RNG state 'rng.torch'")
    optim_t = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    model.load_state_dict(model_t)
    _unflatten_optimizer(opt, optim_t, meta.get("optimizer", {}), str(path))
    restore_rng(rng)
    return meta


__all__ = [
    "CheckpointError", "atomic_write_json", "atomic_save_tensors", "read_json", "load_tensors",
    "check_tensors", "save_checkpoint", "load_checkpoint", "list_checkpoints", "read_checkpoint_meta",
    "checkpoint_path",
]
