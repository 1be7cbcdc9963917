"""Run exported graphs from Python with onnxruntime, with the tokenizer's input checks.

The graphs cannot raise readable errors (they flag bad input in their ``valid`` output instead),
so :class:`OnnxMotionTokenizer` validates shapes, dtypes and ranges first (e.g. ``T`` must be a multiple of 4 for ``encode``, exactly as
:meth:`MotionTokenizer.encode` requires) and then feeds the graph.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .exporter import MANIFEST_FORMAT
from .graphs import FEATURE_LIMIT


def make_session(path: str | Path, *, threads: int | None = None, providers: list[str] | None = None):
    """An onnxruntime session; ``threads`` sets intra-op threads (1 = single core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


class OnnxMotionTokenizer:
    """encode/decode through ``encoder.onnx`` / ``decoder.onnx`` in an export folder."""

    def __init__(self, export_dir: str | Path, *, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        self.dir = Path(export_dir)
        mpath = self.dir / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"export_dir: {mpath} not found; expected a folder written by "
                                    "`python -m rvqfast.export RUN --out DIR`")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"export_dir: {mpath} is not valid JSON ({e})") from e
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"export_dir: {mpath} is not an rvqfast export manifest")
        self.manifest: dict[str, Any] = manifest
        try:
            motion = manifest["motion"]
            self.unit = int(motion["frames_per_token"])
            self.num_quantizers = int(motion["num_quantizers"])
            self.codebook_size = int(motion["codebook_size"])
            self.slot_sizes = np.asarray(motion["posecode_slot_sizes"], dtype=np.int64).reshape(-1)
            self.uses_posecodes = motion["model"] in ("posecode", "posecode_rvq")
            self.uses_rvq = motion["model"] in ("posecode_rvq", "rvq")
            self.index_dtype = np.int32 if manifest["int32_indices"] else np.int64
            graphs = manifest["graphs"]
            if not isinstance(graphs, dict) or not all(
                    isinstance(g, dict) and isinstance(g.get("file"), str) and "/" not in g["file"]
                    and "\\" not in g["file"] and g["file"] not in (".", "..") for g in graphs.values()):
                raise ValueError("'graphs' must map names to entries with a plain 'file' name")
            if self.unit < 1 or self.num_quantizers < 0 or self.codebook_size < 1:
                raise ValueError("frames_per_token, num_quantizers, codebook_size out of range")
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise ValueError(f"export_dir: {mpath} is damaged ({type(e).__name__}: {e})") from None
        self._sessions: dict[str, Any] = {}
        self._threads, self._providers = threads, providers

    def session(self, graph: str):
        if graph not in self.manifest["graphs"]:
            raise ValueError(f"graph {graph!r} was not exported to {self.dir} "
                             f"(exported: {sorted(self.manifest['graphs'])})")
        if graph not in self._sessions:
            from rvqfast.models.persist import verify_sha256

            entry = self.manifest["graphs"][graph]
            path = self.dir / entry["file"]
            verify_sha256(path, entry.get("sha256"), self.dir / "manifest.json")  # a damaged graph is refused
            self._sessions[graph] = make_session(path, threads=self._threads, providers=self._providers)
        return self._sessions[graph]

    def encode(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        """RAW features (B, T, 263) -> (categories (B, T/4, 70)[, indices (B, T/4, Q)])."""
        x = np.asarray(features)
        if x.ndim != 3 or x.shape[-1] != 263:
            raise ValueError(f"features: expected shape (B, T, 263), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"features: expected a floating dtype, got {x.dtype}")
        t = x.shape[1]
        if t == 0 or t % self.unit:
            raise ValueError(f"features: T={t} frames, but T must be a positive multiple of {self.unit} "
                             f"(crop to {t - t % self.unit} frames)")
        if not np.isfinite(x).all():
            raise ValueError("features: contains NaN or Inf")
        if np.abs(x).max() > FEATURE_LIMIT:
            raise ValueError(f"features: values beyond +-{FEATURE_LIMIT:g}; expected RAW HumanML3D features "
                             "(the graph would flag these tokens invalid)")
        names = ["categories", "indices"] if self.uses_rvq else ["categories"]
        return tuple(self.session("encoder").run(names, {"features": x.astype(np.float32)}))

    def decode(self, categories: np.ndarray | None = None, indices: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(categories (B, N, 70), indices (B, N, Q), -1 = stage skipped) -> (features (B, 4N, 263),
        joints (B, 4N, 22, 3))."""
        feed = {}
        shape = None
        if self.uses_posecodes:
            c = np.asarray(categories) if categories is not None else None
            if c is None or c.ndim != 3 or c.shape[-1] != len(self.slot_sizes) or not np.issubdtype(c.dtype, np.integer):
                raise ValueError(f"categories: expected a (B, N, {len(self.slot_sizes)}) integer array, got "
                                 f"{None if c is None else (c.shape, c.dtype)}")
            if ((c < 0) | (c >= self.slot_sizes)).any():
                raise ValueError("categories: each entry must lie in [0, SLOT_SIZES[slot])")
            feed["categories"] = c.astype(self.index_dtype)
            shape = c.shape[:2]
        if self.uses_rvq:
            i = np.asarray(indices) if indices is not None else None
            if i is None or i.ndim != 3 or i.shape[-1] != self.num_quantizers or not np.issubdtype(i.dtype, np.integer):
                raise ValueError(f"indices: expected a (B, N, {self.num_quantizers}) integer array (-1 = stage "
                                 f"skipped), got {None if i is None else (i.shape, i.dtype)}")
            if shape is not None and i.shape[:2] != shape:
                raise ValueError(f"indices: (B, N) = {i.shape[:2]} does not match categories {shape}")
            if ((i < -1) | (i >= self.codebook_size)).any():
                raise ValueError(f"indices: entries must lie in [-1, {self.codebook_size})")
            feed["indices"] = i.astype(self.index_dtype)
            shape = i.shape[:2]
        if shape[1] == 0:
            raise ValueError("categories/indices: N must be >= 1 token")
        features, joints = self.session("decoder").run(["features", "joints"], feed)
        return features, joints


__all__ = ["OnnxMotionTokenizer", "make_session"]
