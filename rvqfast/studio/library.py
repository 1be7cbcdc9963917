"""The studio's motions: a dataset's motions with their captions, plus BVH uploads, encoded to
pose codes and residual indices by the run's tokenizer."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rvqfast.data.bvh import BVHError, bvh_to_joints, parse_bvh
from rvqfast.data.humanml3d import SPLITS, HumanML3D
from rvqfast.motion.features import features_to_joints, joints_to_features
from rvqfast.motion.retarget import retarget
from rvqfast.motion.skeleton import FPS

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
# Uploads longer than this are cropped (the browser decodes the whole motion at once).
MAX_UPLOAD_FRAMES = 60 * FPS
MAX_UPLOADS = 200  # per server run: bounds the memory uploads can take


class UploadError(ValueError):
    """An uploaded file could not be turned into a motion; the message is shown in the page."""


@dataclass
class Motion:
    id: str
    name: str
    captions: list[str]
    features: np.ndarray  # (T, 263), T a multiple of the token length
    source: str           # "dataset:<split>" or "upload"
    note: str = ""
    codes: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def summary(self) -> dict:
        return {"id": self.id, "name": self.name, "captions": self.captions, "frames": int(self.features.shape[0]),
                "source": self.source}


class Library:
    """Motions by id; encodes lazily (and once) with the tokenizer under a lock."""

    def __init__(self, tokenizer: torch.nn.Module, *, max_motions: int | None = None) -> None:
        self.tok = tokenizer
        self.unit = tokenizer.config.frames_per_token
        self.motions: dict[str, Motion] = {}
        self._lock = threading.Lock()
        self._uploads = 0
        self.max_motions = max_motions

    def _crop(self, features: np.ndarray) -> np.ndarray:
        return features[: features.shape[0] - features.shape[0] % self.unit]

    def add_dataset(self, root: str | Path) -> int:
        """Add every motion of every split of a HumanML3D-layout folder (bad files skipped)."""
        added = 0
        for split in SPLITS:
            try:
                ds = HumanML3D(root, split, skip_bad=True, min_length=self.unit)
            except (FileNotFoundError, ValueError):
                continue
            for name, feats, caps in zip(ds.names, ds.features, ds.captions):
                if self.max_motions is not None and len(self.motions) >= self.max_motions:
                    return added
                mid = f"{split}/{name}"
                self.motions[mid] = Motion(mid, name, list(caps), self._crop(np.asarray(feats, np.float32)),
                                           f"dataset:{split}")
                added += 1
        return added

    def add_upload(self, data: bytes, filename: str) -> Motion:
        """Parse an uploaded BVH with the library's BVH parser and retarget it to the canonical
        skeleton (as ``import-bvh`` does); raises :class:`UploadError`."""
        if self._uploads >= MAX_UPLOADS:
            raise UploadError(f"{filename}: this session already holds {MAX_UPLOADS} uploads; restart the studio")
        if len(data) > MAX_UPLOAD_BYTES:
            raise UploadError(f"{filename}: {len(data)} bytes; uploads are limited to {MAX_UPLOAD_BYTES} bytes")
        if not data.strip():
            raise UploadError(f"{filename}: the file is empty; expected a BVH file (HIERARCHY ... MOTION ...)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UploadError(f"{filename}: not a text file; expected a BVH file (HIERARCHY ... MOTION ...)") from None
        try:
            # As `import-bvh` does by default: the model was trained on the canonical skeleton.
            joints = retarget(bvh_to_joints(parse_bvh(text, filename)))
        except (BVHError, ValueError) as e:
            msg = str(e)
            raise UploadError(msg if msg.startswith(filename) else f"{filename}: {msg}") from None
        note = ""
        if joints.shape[0] > MAX_UPLOAD_FRAMES + 1:
            joints = joints[: MAX_UPLOAD_FRAMES + 1]
            note = f"cropped to the first {MAX_UPLOAD_FRAMES // FPS} s"
        if joints.shape[0] < self.unit + 1:
            raise UploadError(f"{filename}: {joints.shape[0]} frames at {FPS} fps; need at least {self.unit + 1}")
        try:
            feats = self._crop(joints_to_features(joints).astype(np.float32))
        except ValueError as e:
            raise UploadError(f"{filename}: {e}") from None
        with self._lock:
            self._uploads += 1
            mid = f"upload/{self._uploads}"
        stem = Path(filename).name.rsplit(".", 1)[0][:80] or "upload"
        m = Motion(mid, stem, [f"uploaded from {Path(filename).name[:80]}"], feats, "upload", note)
        self.motions[mid] = m
        return m

    def codes(self, motion: Motion) -> tuple[np.ndarray, np.ndarray]:
        """(categories (N, 70), indices (N, Q)) of a motion, computed once."""
        with self._lock:
            if motion.codes is None:
                with torch.no_grad():
                    c, i = self.tok.encode(torch.from_numpy(motion.features)[None])
                motion.codes = (c[0].numpy(), i[0].numpy())
        return motion.codes

    def detail(self, motion_id: str) -> dict:
        """Everything the page needs to show and edit one motion (flat lists, row-major)."""
        m = self.motions[motion_id]
        cats, idx = self.codes(m)
        joints = features_to_joints(m.features.astype(np.float64)).astype(np.float32)
        return {**m.summary(), "note": m.note, "tokens": int(cats.shape[0]),
                "num_quantizers": int(idx.shape[1]),
                "categories": cats.reshape(-1).tolist(), "indices": idx.reshape(-1).tolist(),
                "joints": np.round(joints.reshape(-1), 5).tolist()}


__all__ = ["Library", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_FRAMES", "MAX_UPLOADS", "Motion", "UploadError"]
