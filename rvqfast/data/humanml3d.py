"""Loader for folders in the published HumanML3D layout.

::

    ROOT/new_joint_vecs/NAME.npy   (T, 263) features
    ROOT/new_joints/NAME.npy       (T, 22, 3) joints (optional for training)
    ROOT/texts/NAME.txt            caption#tokens#start#end lines
    ROOT/Mean.npy, ROOT/Std.npy    (263,)
    ROOT/train.txt, val.txt, test.txt

Files are untrusted: arrays load with ``allow_pickle=False`` and are checked for shape, dtype
and finite values. Caption sub-segments (non-zero start/end) are kept as plain captions of the
whole motion.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..motion.skeleton import FEATURE_DIM

SPLITS = ("train", "val", "test")
MAX_LENGTH = 10_000  # frames; longer arrays are almost certainly not motions
MAX_ABS = 1e5        # |value| of features/joints (metres, per-frame velocities); beyond: not a motion
MAX_NORMALIZED = 1e6  # |(x - Mean) / Std|; beyond it the training loss overflows float32


class DatasetError(ValueError):
    """A file in a HumanML3D-layout folder is missing or malformed."""


def _not_regular(path: Path) -> bool:
    """True for an existing non-regular file (folder, FIFO, device): reading it could block."""
    return path.exists() and not path.is_file()


def load_array(path: Path, what: str, shape_tail: tuple[int, ...]) -> np.ndarray:
    """Load a float .npy without pickles and check its trailing shape and values."""
    if _not_regular(path):
        raise DatasetError(f"{path}: not a regular file; expected {what}")
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing ({what} expected)") from None
    except Exception as e:  # noqa: BLE001 - any parse failure means an unreadable file
        raise DatasetError(f"{path}: unreadable .npy ({_npy_reason(e)}); expected {what}") from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.floating):
        raise DatasetError(f"{path}: expected a float array ({what}), got dtype {getattr(arr, 'dtype', '?')}")
    if arr.ndim != 1 + len(shape_tail) or tuple(arr.shape[1:]) != shape_tail:
        raise DatasetError(f"{path}: expected {what}, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise DatasetError(f"{path}: empty array; expected {what} with at least one frame")
    if not np.isfinite(arr).all():
        raise DatasetError(f"{path}: contains NaN or infinite values; expected finite {what}")
    big = float(np.abs(arr).max())
    if big > MAX_ABS:
        raise DatasetError(f"{path}: implausibly large values (|v| up to {big:.3g} > {MAX_ABS:g}); "
                           f"expected {what} in metres")
    return arr.astype(np.float32, copy=False)


def _npy_reason(e: Exception) -> str:
    """Why np.load failed, without numpy's advice to load with allow_pickle (never done here)."""
    if "allow_pickle" in str(e) or "pickle" in str(e).lower():
        return "holds pickled Python objects, which are never loaded; expected a plain float array"
    return f"{type(e).__name__}: {e}"


def parse_captions(path: Path) -> list[str]:
    """Captions from a HumanML3D text file (``caption#tokens#start#end`` lines)."""
    if _not_regular(path):
        raise DatasetError(f"{path}: not a regular file; expected captions")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing caption file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable caption file ({e})") from None
    caps = [line.split("#")[0].strip() for line in text.splitlines() if line.strip()]
    caps = [c for c in caps if c]
    if not caps:
        raise DatasetError(f"{path}: no captions; expected lines 'caption#tokens#start#end'")
    return caps


def read_split(root: Path, split: str) -> list[str]:
    if split not in SPLITS and not (root / f"{split}.txt").is_file():
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    path = root / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: missing split file (or not a regular file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable split file ({e})") from None
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for n in names:
        # Names become file names: refuse anything that could escape the folder.
        if "/" in n or "\\" in n or n in (".", "..") or n.startswith("."):
            raise DatasetError(f"{path}: invalid motion name {n!r}")
    return names


def load_stats(root: Path) -> tuple[np.ndarray, np.ndarray]:
    mean = _load_vec(root / "Mean.npy", "mean")
    std = _load_vec(root / "Std.npy", "std")
    if (std < 1e-6).any():
        raise DatasetError(f"{root / 'Std.npy'}: expected std values >= 1e-6 (normalisation divides by "
                           f"them), got min {float(std.min()):.3g}")
    return mean, std


def _load_vec(path: Path, what: str) -> np.ndarray:
    if _not_regular(path):
        raise DatasetError(f"{path}: not a regular file; expected the ({FEATURE_DIM},) {what}")
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing ({FEATURE_DIM},) {what} file") from None
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"{path}: unreadable .npy ({_npy_reason(e)})") from None
    if arr.shape != (FEATURE_DIM,) or not np.issubdtype(arr.dtype, np.floating):
        raise DatasetError(f"{path}: expected a float ({FEATURE_DIM},) {what}, got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
        raise DatasetError(f"{path}: contains NaN or infinite values")
    if np.abs(arr).max() > MAX_ABS:
        raise DatasetError(f"{path}: implausibly large values (|v| > {MAX_ABS:g})")
    return arr.astype(np.float32)


@dataclass
class LoadSummary:
    split: str
    listed: int = 0
    loaded: int = 0
    frames: int = 0
    too_short: int = 0
    bad: dict[str, str] = field(default_factory=dict)  # name -> reason

    def __str__(self) -> str:
        lines = [f"split {self.split}: {self.listed} listed, {self.loaded} loaded "
                 f"({self.frames} frames, {self.frames / 20 / 60:.1f} min at 20 fps), "
                 f"{self.too_short} shorter than min_length, {len(self.bad)} bad"]
        reasons = Counter(r.split(": ", 1)[-1].split(";")[0].split(" (")[0] for r in self.bad.values())
        for reason, k in reasons.most_common():
            lines.append(f"  {k} x {reason}")
        return "\n".join(lines)


class HumanML3D:
    """One split of a HumanML3D-layout folder, loaded into memory.

    Motions shorter than ``min_length`` frames are left out and counted in :meth:`summary`.
    Malformed files raise :class:`DatasetError` naming the file unless ``skip_bad=True``,
    in which case they are skipped and counted with the reason.
    """

    def __init__(self, root: str | Path, split: str, *, skip_bad: bool = False,
                 min_length: int = 40) -> None:
        if not isinstance(min_length, int) or min_length < 1:
            raise ValueError(f"min_length: expected a positive integer, got {min_length!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: {self.root} is not a folder")
        self.split = split
        self.mean, self.std = load_stats(self.root)
        self._summary = LoadSummary(split)
        self.names: list[str] = []
        self.features: list[np.ndarray] = []
        self.captions: list[list[str]] = []
        listed = read_split(self.root, split)
        self._summary.listed = len(listed)
        for name in listed:
            try:
                feats = load_array(self.root / "new_joint_vecs" / f"{name}.npy",
                                   f"(T, {FEATURE_DIM}) features", (FEATURE_DIM,))
                if feats.shape[0] > MAX_LENGTH:
                    raise DatasetError(f"{self.root / 'new_joint_vecs' / name}.npy: "
                                       f"{feats.shape[0]} frames; expected at most {MAX_LENGTH}")
                caps = parse_captions(self.root / "texts" / f"{name}.txt")
            except DatasetError as e:
                if not skip_bad:
                    raise
                self._summary.bad[name] = str(e)
                continue
            if feats.shape[0] < min_length:
                self._summary.too_short += 1
                continue
            # Finite values can still overflow once normalised; name the file before training does.
            peak = float(np.abs((feats.astype(np.float64) - self.mean) / self.std).max())
            if peak > MAX_NORMALIZED:
                e = DatasetError(f"{self.root / 'new_joint_vecs' / name}.npy: normalised values reach {peak:.3g} "
                                 f"(> {MAX_NORMALIZED:g}) with this folder's Mean.npy/Std.npy")
                if not skip_bad:
                    raise e
                self._summary.bad[name] = str(e)
                continue
            self.names.append(name)
            self.features.append(feats)
            self.captions.append(caps)
            self._summary.frames += feats.shape[0]
        self._summary.loaded = len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def summary(self) -> LoadSummary:
        """Counts of listed, loaded, too-short and bad files (with reasons)."""
        return self._summary

    def normalize(self, x):
        """(x - mean) / std for numpy arrays or torch tensors (..., 263)."""
        if isinstance(x, torch.Tensor):
            return (x - torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)) / \
                torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        return ((np.asarray(x) - self.mean) / self.std).astype(np.float32)

    def denormalize(self, x):
        """Inverse of :meth:`normalize`."""
        if isinstance(x, torch.Tensor):
            return x * torch.as_tensor(self.std, dtype=x.dtype, device=x.device) + \
                torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        return (np.asarray(x) * self.std + self.mean).astype(np.float32)


class WindowDataset(torch.utils.data.Dataset):
    """Random fixed-length windows of normalised features, one per motion per epoch.

    Item ``i`` in epoch ``e`` is a crop of motion ``i`` at an offset drawn from a generator
    seeded with ``(seed, e, i)``, so results do not depend on worker count or order.
    Motions shorter than ``window`` are excluded (counted in ``excluded``).
    """

    def __init__(self, ds: HumanML3D, window: int = 64, *, seed: int = 0) -> None:
        if not isinstance(window, int) or window < 4 or window % 4:
            raise ValueError(f"window: expected a positive multiple of 4, got {window!r}")
        self.ds, self.window, self.seed, self.epoch = ds, window, seed, 0
        self.index = [i for i, f in enumerate(ds.features) if f.shape[0] >= window]
        self.excluded = len(ds) - len(self.index)
        if not self.index:
            raise ValueError(f"window: no motion in split {ds.split!r} has {window} frames")
        self._norm = [None] * len(ds)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        k = self.index[i]
        if self._norm[k] is None:
            self._norm[k] = self.ds.normalize(self.ds.features[k])
        feats = self._norm[k]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        start = int(rng.integers(0, feats.shape[0] - self.window + 1))
        return torch.from_numpy(np.ascontiguousarray(feats[start:start + self.window]))


def eval_batches(ds: HumanML3D, batch_size: int, unit: int = 4) -> Iterator[dict]:
    """Full-length normalised sequences, cropped to a multiple of ``unit`` frames, in dataset
    order. Yields dicts: ``features`` (B, Lmax, 263) zero-padded float32 tensor, ``lengths``
    (B,) int64, ``captions`` list[list[str]], ``names`` list[str]."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not isinstance(unit, int) or unit < 1:
        raise ValueError(f"unit: expected a positive integer, got {unit!r}")
    for b in range(0, len(ds), batch_size):
        idx = [i for i in range(b, min(b + batch_size, len(ds))) if ds.features[i].shape[0] >= unit]
        if not idx:
            continue
        lengths = [ds.features[i].shape[0] // unit * unit for i in idx]
        out = np.zeros((len(idx), max(lengths), FEATURE_DIM), dtype=np.float32)
        for r, (i, n) in enumerate(zip(idx, lengths)):
            out[r, :n] = ds.normalize(ds.features[i][:n])
        yield {"features": torch.from_numpy(out), "lengths": torch.tensor(lengths, dtype=torch.int64),
               "captions": [ds.captions[i] for i in idx], "names": [ds.names[i] for i in idx]}
