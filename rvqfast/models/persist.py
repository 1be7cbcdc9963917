"""Atomic, pickle-free file helpers shared by saved models and training checkpoints.

Tensors go to safetensors, everything else to JSON; writes go through a temp file in the same
folder and ``os.replace``; reads validate names, shapes and dtypes.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._io import atomic_write_bytes, atomic_write_text


class CheckpointError(RuntimeError):
    """A checkpoint or saved model that is corrupt or does not match the model being loaded."""


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_tensors(tensors: Mapping[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; returns the sha256 (hex) of the bytes written."""
    from safetensors.torch import save

    # safetensors refuses shared storage and needs contiguous CPU tensors.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    data = save(flat, metadata=metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: not a regular file")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: object, recorded_in: str | Path) -> None:
    """Raise CheckpointError unless ``path``'s sha256 is ``expected`` (as recorded in ``recorded_in``)."""
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(f"{recorded_in}: invalid sha256 entry for {Path(path).name}: {expected!r}")
    got = file_sha256(path)
    if got != expected:
        raise CheckpointError(f"{path}: sha256 {got[:12]}... does not match {expected[:12]}... recorded in "
                              f"{recorded_in}; the file is damaged or was replaced")


def tensors_digest(tensors: Mapping[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``tensors`` (order-independent): stored in a
    checkpoint's metadata, it catches any byte flip in the tensor data."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def check_finite_tensors(tensors: Mapping[str, Tensor], source: str) -> None:
    """CheckpointError naming the first floating tensor that holds NaN or Inf."""
    for k in sorted(tensors):
        v = tensors[k]
        if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{source}: tensor {k} holds NaN or Inf values; the file is damaged "
                                  "(or was saved from a diverged model)")


def read_json(path: str | Path) -> dict[str, Any]:
    try:
        if not Path(path).is_file():
            raise OSError("not a regular file")  # a FIFO or device would block the read
        if Path(path).stat().st_size > 50_000_000:
            raise OSError("larger than 50 MB; not a config file")
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: cannot read JSON ({e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return obj


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: not a regular file; expected a safetensors file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several error types for damaged files
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({type(e).__name__}: {e})") from e
    return tensors, meta


def check_tensors(got: Mapping[str, Tensor], expected: Mapping[str, Tensor], source: str) -> None:
    """Same names, shapes and dtypes, or a CheckpointError listing the differences."""
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for k in sorted(set(got) & set(expected)):
        g, e = got[k], expected[k]
        if tuple(g.shape) != tuple(e.shape) or g.dtype != e.dtype:
            problems.append(f"{k}: saved {tuple(g.shape)} {g.dtype}, model needs {tuple(e.shape)} {e.dtype}")
            if len(problems) > 8:
                break
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def load_tensors(path: str | Path, expected: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Read a safetensors file; with ``expected`` (e.g. a state_dict) validate it first."""
    tensors, _ = read_safetensors(Path(path))
    if expected is not None:
        check_tensors(tensors, expected, str(path))
    return tensors


__all__ = ["CheckpointError", "atomic_write_json", "atomic_save_tensors", "read_json", "load_tensors",
           "check_tensors", "read_safetensors", "file_sha256", "verify_sha256", "tensors_digest",
           "check_finite_tensors"]
