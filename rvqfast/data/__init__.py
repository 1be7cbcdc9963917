"""Motion datasets in the HumanML3D layout: loader, embedded default dataset, BVH import."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .humanml3d import (
    DatasetError, HumanML3D, LoadSummary, WindowDataset, eval_batches,
)
from .synthetic import DEFAULT_N_MOTIONS, GENERATOR_VERSION, MANIFEST, generate_dataset
from .bvh_export import export_bvh

__all__ = [
    "DatasetError", "HumanML3D", "LoadSummary", "WindowDataset", "eval_batches",
    "default_dataset", "resolve_dataset", "layout_problems", "write_dataset_atomically",
    "generate_dataset", "export_bvh",
]

DEFAULT_DIRNAME = f"default_v{GENERATOR_VERSION}"


def default_root() -> Path:
    """$RVQFAST_DATA, else ~/.cache/rvqfast/default_v{GENERATOR_VERSION} (one folder per generator version)."""
    env = os.environ.get("RVQFAST_DATA")
    return Path(env) if env else Path.home() / ".cache" / "rvqfast" / DEFAULT_DIRNAME


def layout_problems(root: Path) -> list[str]:
    """Quick check of a HumanML3D-layout folder: what is missing (empty list when fine)."""
    root = Path(root)
    if not root.is_dir():
        return [f"{root} is not a folder"]
    probs = []
    for d in ("new_joint_vecs", "texts"):
        if not (root / d).is_dir():
            probs.append(f"folder {d}/")
    for f in ("Mean.npy", "Std.npy", "train.txt", "val.txt", "test.txt"):
        if not (root / f).is_file():
            probs.append(f"file {f}")
    return probs


def _generated_complete(root: Path, n_motions: int, seed: int) -> bool:
    try:
        man = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if man.get("version") != GENERATOR_VERSION or man.get("n_motions") != n_motions \
            or man.get("seed") != seed or layout_problems(root):
        return False
    for sub in ("new_joint_vecs", "new_joints", "texts"):
        if sum(1 for _ in (root / sub).iterdir()) != n_motions:
            return False
    return True


def write_dataset_atomically(out: Path, *, n_motions: int, seed: int, progress: bool) -> Path:
    """Generate into a temporary sibling folder and rename it to ``out`` when complete, so an
    interrupted run never leaves a folder that looks complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        generate_dataset(tmp, n_motions=n_motions, seed=seed, progress=progress)
        try:
            os.rename(tmp, out)
        except OSError:
            if _generated_complete(out, n_motions, seed):  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return out
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def default_dataset(root: str | Path | None = None, *, progress: bool = True,
                    n_motions: int = DEFAULT_N_MOTIONS, seed: int = 0) -> Path:
    """Folder of the embedded default dataset, generated deterministically on first use.

    An existing folder is reused when its manifest and file counts match; an incomplete
    generated folder is regenerated. A non-empty folder that this generator did not write is
    never touched (error instead).
    """
    root = Path(root) if root is not None else default_root()
    if _generated_complete(root, n_motions, seed):
        return root
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"root: {root} exists and is not a folder")
        if any(root.iterdir()):
            if not (root / MANIFEST).is_file():
                raise FileExistsError(
                    f"root: {root} is not empty and was not written by rvqfast's generator; "
                    "remove it or choose another folder (RVQFAST_DATA)")
            foreign = _foreign_files(root)
            if foreign:
                # Only a folder holding nothing but generator files may be replaced.
                raise FileExistsError(
                    f"root: {root} holds an incomplete or different generated dataset AND files "
                    f"rvqfast did not write ({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); "
                    "nothing was changed: move those files away or choose another folder (RVQFAST_DATA)")
            # Regenerate next to it, then swap, so the old folder stays intact until the new is complete.
            fresh = root.with_name(f".{root.name}.fresh-{os.getpid()}")
            write_dataset_atomically(fresh, n_motions=n_motions, seed=seed, progress=progress)
            stale = root.with_name(f".{root.name}.stale-{os.getpid()}")
            os.rename(root, stale)
            os.rename(fresh, root)
            shutil.rmtree(stale, ignore_errors=True)
            return root
        root.rmdir()
    return write_dataset_atomically(root, n_motions=n_motions, seed=seed, progress=progress)


_GENERATED_TOP = {MANIFEST, "Mean.npy", "Std.npy", "train.txt", "val.txt", "test.txt", "all.txt",
                  "new_joint_vecs", "new_joints", "texts"}
_GENERATED_SUB = {"new_joint_vecs": ".npy", "new_joints": ".npy", "texts": ".txt"}


def _foreign_files(root: Path) -> list[str]:
    """Entries of ``root`` that the synthetic generator never writes (relative paths): anything
    but its fixed top-level files and, in the three sub-folders, the motions listed in all.txt."""
    try:
        names = set((root / "all.txt").read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError):
        names = set()
    out = []
    for p in sorted(root.iterdir()):
        if p.name not in _GENERATED_TOP or (p.name in _GENERATED_SUB) != p.is_dir():
            out.append(p.name)
        elif p.is_dir():
            ext = _GENERATED_SUB[p.name]
            out += [f"{p.name}/{q.name}" for q in sorted(p.iterdir())
                    if not (q.is_file() and q.suffix == ext and q.stem in names)]
    return out


def resolve_dataset(data: str | Path) -> Path:
    """``"default"`` -> :func:`default_dataset`; otherwise an existing HumanML3D-layout folder."""
    if str(data) == "default":
        return default_dataset()
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"data: {root} does not exist (use 'default' for the embedded dataset)")
    probs = layout_problems(root)
    if probs:
        raise DatasetError(f"data: {root} is not a HumanML3D-layout folder; missing: "
                           f"{', '.join(probs)}. Run `python -m rvqfast.data check {root}` for details")
    return root
