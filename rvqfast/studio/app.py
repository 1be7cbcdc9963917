"""Put the studio together: load a run, export its decoder for the browser, fill the library."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from rvqfast.motion.skeleton import FPS, JOINT_NAMES, PARENTS

from .library import MAX_UPLOAD_BYTES, Library
from .server import StudioState
from .vocabulary import vocabulary

CACHE_DIRNAME = "studio_export"
BANK_FILE = "posecode_bank.npy"  # written by training runs that support consistent edits
_STAMP = "studio_stamp.json"


def _weights_sha(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "config.json").read_text())["weights"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _bank_sha(run_dir: Path) -> str:
    try:
        return hashlib.sha256((run_dir / BANK_FILE).read_bytes()).hexdigest()
    except OSError:
        return ""


def _export_edit_graph(tokenizer: torch.nn.Module, run_dir: Path, folder: Path) -> bool:
    """``edit.onnx`` (consistent token-level edits, from the editing work) when this rvqfast can
    build it and the run has a pose-code bank; the studio works without it."""
    try:
        from rvqfast.editing.bank import load_bank
        from rvqfast.export.exporter import GRAPH_NAMES, export_graph
    except ImportError:
        return False
    if "edit" not in GRAPH_NAMES:
        return False
    try:
        bank = load_bank(run_dir)
        if bank is None:
            return False
        tokenizer.posecode_bank = bank
        export_graph("edit", tokenizer, folder / "edit.onnx")
        return True
    except (ValueError, RuntimeError, OSError) as e:
        print(f"rvqfast studio: no edit.onnx ({e}); edits change the chosen slot only", file=sys.stderr)
        (folder / "edit.onnx").unlink(missing_ok=True)
        return False


def export_for_browser(tokenizer: torch.nn.Module, run_dir: Path, cache_dir: Path | None = None) -> Path:
    """``decoder.onnx`` + ``manifest.json`` (+ ``edit.onnx`` when available) of the run, in
    ``cache_dir`` (default RUN/studio_export, or a temporary folder when the run is read-only).
    Reused while the run's weights (and pose-code bank) are the same."""
    from rvqfast.export import export_tokenizer

    sha = _weights_sha(run_dir) + _bank_sha(run_dir)
    folder = Path(cache_dir) if cache_dir is not None else run_dir / CACHE_DIRNAME
    if not _writable(folder):
        folder = Path(tempfile.mkdtemp(prefix="rvqfast-studio-"))
    stamp = folder / _STAMP
    try:
        fresh = sha and json.loads(stamp.read_text()).get("weights_sha256") == sha \
            and (folder / "decoder.onnx").is_file() and (folder / "manifest.json").is_file()
    except (OSError, ValueError, AttributeError):
        fresh = False
    if not fresh:
        export_tokenizer(tokenizer, folder, graphs=["decoder"], source=str(run_dir))
        (folder / "edit.onnx").unlink(missing_ok=True)
        _export_edit_graph(tokenizer, run_dir, folder)
        from rvqfast._io import atomic_write_json
        atomic_write_json(stamp, {"weights_sha256": sha})
    return folder


def build_state(run: str | os.PathLike, data: str | os.PathLike | None = "default", *,
                cache_dir: str | os.PathLike | None = None, max_motions: int | None = None) -> StudioState:
    """Everything the server needs for run folder ``run`` and dataset ``data`` ("default", a
    HumanML3D-layout folder, or None for uploads only)."""
    from rvqfast.data import resolve_dataset
    from rvqfast.models.tokenizer import MotionTokenizer

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run: {run_dir} is not a folder; expected a run written by "
                                f"`python -m rvqfast.train --out RUN` (config.json + model.safetensors)")
    tok = MotionTokenizer.load(run_dir, device="cpu").eval()
    export_dir = export_for_browser(tok, run_dir, Path(cache_dir) if cache_dir is not None else None)
    library = Library(tok, max_motions=max_motions)
    if data is not None:
        library.add_dataset(resolve_dataset(data))
    cfg = tok.config
    info: dict[str, Any] = {
        "run": run_dir.name, "model": cfg.model, "fps": FPS, "frames_per_token": cfg.frames_per_token,
        "num_quantizers": tok.num_quantizers, "codebook_size": cfg.codebook_size,
        "uses_posecodes": cfg.uses_posecodes, "uses_rvq": cfg.uses_rvq,
        "joint_names": list(JOINT_NAMES), "parents": list(PARENTS), "max_upload_bytes": MAX_UPLOAD_BYTES,
        "decoder": "/export/decoder.onnx",
        "edit_graph": "/export/edit.onnx" if (export_dir / "edit.onnx").is_file() else None,
        **vocabulary(),
    }
    return StudioState(library, export_dir, info)


__all__ = ["CACHE_DIRNAME", "build_state", "export_for_browser"]
