"""Pose-code coverage of a dataset: which of the 392 categories occur in a split, and which
no pose of the canonical skeleton can produce at all.

    python -m rvqfast.data.synthetic.coverage DATASET_FOLDER [--split train]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ...motion.posecodes import (
    DISTANCE_EDGES_M, HAND_EXTENSION_M, POSECODE_CATEGORIES, POSECODE_SLOTS, SLOT_OFFSETS,
    posecode_indices,
)
from ...motion.retarget import REFERENCE_BONE_LENGTHS
from ...motion.skeleton import JOINT_INDEX, PARENTS


def _path_length(a: str, b: str) -> float:
    """Longest possible distance between two (possibly virtual hand) joints of the canonical
    skeleton: the bone lengths along the tree path between them."""
    extra = 0.0
    names = []
    for n in (a, b):
        if n.endswith("_hand"):
            extra += HAND_EXTENSION_M
            n = n.replace("_hand", "_wrist")
        names.append(JOINT_INDEX[n])

    def chain(j: int) -> list[int]:
        out = [j]
        while PARENTS[out[-1]] >= 0:
            out.append(PARENTS[out[-1]])
        return out

    ca, cb = chain(names[0]), chain(names[1])
    common = next(j for j in ca if j in cb)
    length = sum(REFERENCE_BONE_LENGTHS[j] for j in ca[:ca.index(common)])
    length += sum(REFERENCE_BONE_LENGTHS[j] for j in cb[:cb.index(common)])
    return float(length + extra)


def unreachable_categories() -> list[tuple[str, str]]:
    """Distance categories whose lower edge exceeds the longest possible distance between
    their two joints on the canonical skeleton (e.g. a hand 0.7 m from its own shoulder)."""
    out = []
    for slot, label in POSECODE_CATEGORIES:
        if not slot.startswith("distance:"):
            continue
        a, b = slot.split(":", 1)[1].split("-")
        k = [lab for s, lab in POSECODE_CATEGORIES if s == slot].index(label)
        lower = 0.0 if k == 0 else DISTANCE_EDGES_M[k - 1]
        if lower > _path_length(a, b) + 1e-6:  # a fully straight arm reaches its length exactly
            out.append((slot, label))
    return out


def category_counts(root: str | Path, split: str = "train") -> np.ndarray:
    """Frames (392,) showing each category over the motions of ``root/split.txt``
    (joints from ``new_joints``)."""
    root = Path(root)
    counts = np.zeros(len(POSECODE_CATEGORIES), dtype=np.int64)
    offsets = np.asarray(SLOT_OFFSETS)
    for name in (root / f"{split}.txt").read_text().split():
        j = np.load(root / "new_joints" / f"{name}.npy").astype(np.float64)
        idx = posecode_indices(j) + offsets
        counts += np.bincount(idx.reshape(-1), minlength=counts.size)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--split", default="train")
    args = ap.parse_args(argv)
    counts = category_counts(args.root, args.split)
    impossible = set(unreachable_categories())
    missing = [c for c, n in zip(POSECODE_CATEGORIES, counts) if n == 0 and c not in impossible]
    print(f"{int((counts > 0).sum())} of {len(counts)} categories occur in {args.split} "
          f"({len(POSECODE_SLOTS)} slots); {len(impossible)} are unreachable on the canonical "
          f"skeleton; {len(missing)} reachable ones missing")
    for slot, label in missing:
        print(f"  missing: {slot} = {label}")
    rare = [(c, int(n)) for c, n in zip(POSECODE_CATEGORIES, counts) if 0 < n < 50]
    for (slot, label), n in rare:
        print(f"  rare ({n} frames): {slot} = {label}")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
