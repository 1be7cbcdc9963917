"""Command line: ``python -m rvqfast.data {prepare,check,import-bvh,export-bvh}``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .._cli import add_debug_flag, run_guarded


def _prepare(args) -> int:
    from . import write_dataset_atomically
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: --out {out} exists and is not an empty folder", file=sys.stderr)
        return 2
    if out.exists():
        out.rmdir()
    write_dataset_atomically(out, n_motions=args.n_motions, seed=args.seed,
                             progress=not args.quiet)
    print(f"wrote the default dataset ({args.n_motions} motions, seed {args.seed}) to {out}")
    return 0


def _check(args) -> int:
    from . import layout_problems
    from .humanml3d import SPLITS, DatasetError, HumanML3D, load_array
    root = Path(args.dir)
    probs = layout_problems(root)
    if probs:
        print(f"{root}: not a HumanML3D-layout folder; missing: {', '.join(probs)}")
        return 1
    bad = 0
    for split in SPLITS:
        try:
            ds = HumanML3D(root, split, skip_bad=True, min_length=args.min_length)
        except DatasetError as e:
            print(f"error: {e}")
            return 1
        s = ds.summary()
        print(s)
        for name, reason in s.bad.items():
            print(f"    bad {name}: {reason}")
        bad += len(s.bad)
        jdir = root / "new_joints"
        if jdir.is_dir():
            for name, feats in zip(ds.names, ds.features):
                p = jdir / f"{name}.npy"
                if p.exists():
                    try:
                        j = load_array(p, "(T, 22, 3) joints", (22, 3))
                        if j.shape[0] != feats.shape[0]:
                            raise DatasetError(f"{p}: {j.shape[0]} frames but features have {feats.shape[0]}")
                    except DatasetError as e:
                        print(f"    bad {name}: {e}")
                        bad += 1
        if split == "train" and not len(ds):
            print(f"  bad: {root / 'train.txt'} lists no usable motion; training needs at least one")
            bad += 1
        if split == "train" and len(ds):
            mean = np.concatenate(ds.features).astype(np.float64).mean(0)
            drift = float(np.abs((mean - ds.mean) / ds.std).max())
            print(f"  Mean.npy vs train mean: max |diff|/std = {drift:.3f}")
    print("OK" if bad == 0 else f"{bad} bad file(s)")
    return 0 if bad == 0 else 1


def _import_bvh(args) -> int:
    from .bvh import BVHError, import_bvh
    try:
        out = import_bvh(args.files, args.out, scale=args.scale, caption=args.caption,
                         keep_proportions=args.keep_proportions)
    except (BVHError, FileExistsError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"imported {len(args.files)} BVH file(s) into {out}")
    return 0


def _export_bvh(args) -> int:
    from .bvh_export import joints_to_bvh
    from .humanml3d import DatasetError, load_array
    from .._io import atomic_write_text
    from ..motion.features import features_to_joints
    src, out = Path(args.file), Path(args.out)
    if out.suffix.lower() != ".bvh":
        print(f"error: --out {out}: expected a file name ending in .bvh", file=sys.stderr)
        return 2
    try:
        # The shape says which layout the file holds; load_array then checks it fully.
        try:
            shape = np.load(src, mmap_mode="r", allow_pickle=False).shape
        except Exception:  # noqa: BLE001 - load_array below reports the unreadable file
            shape = ()
        if len(shape) == 2 and shape[1] == 263:
            joints = features_to_joints(load_array(src, "(T, 263) features", (263,)).astype(np.float64))
        else:
            joints = load_array(src, "(T, 22, 3) joints or (T, 263) features", (22, 3)).astype(np.float64)
        text, err = joints_to_bvh(joints, fps=args.fps, skeleton="motion" if args.keep_proportions else "canonical")
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    rig = "the motion's own proportions" if args.keep_proportions else "the canonical skeleton"
    print(f"wrote {out}: {joints.shape[0]} frames at {args.fps} fps, centimetres, Y up, {rig}; "
          f"largest joint deviation of the fitted skeleton {err * 1000:.3f} mm")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rvqfast.data", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="write the embedded default dataset")
    a.add_argument("--out", required=True)
    a.add_argument("--n-motions", type=int, default=None)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--quiet", action="store_true")
    c = sub.add_parser("check", help="validate a HumanML3D-layout folder and print a summary")
    c.add_argument("dir")
    c.add_argument("--min-length", type=int, default=40)
    b = sub.add_parser("import-bvh", help="convert BVH files to a HumanML3D-layout folder")
    b.add_argument("files", nargs="+")
    b.add_argument("--out", required=True)
    b.add_argument("--scale", default="auto", help="'auto' or metres per BVH unit")
    b.add_argument("--caption", default="a person moves")
    b.add_argument("--keep-proportions", action="store_true",
                   help="keep the capture's bone lengths instead of retargeting to the "
                        "canonical t2m skeleton (the default, as HumanML3D does)")
    e = sub.add_parser("export-bvh", help="write a BVH (22-joint skeleton, rotations solved from "
                       "positions) from a (T, 22, 3) joints or (T, 263) features .npy")
    e.add_argument("file")
    e.add_argument("--out", required=True, help="output .bvh file")
    e.add_argument("--fps", type=int, default=20)
    e.add_argument("--keep-proportions", action="store_true",
                   help="use the motion's own bone lengths instead of the canonical t2m skeleton")
    for sp in (a, c, b, e):
        add_debug_flag(sp)
    args = p.parse_args(argv)
    if args.cmd == "export-bvh":
        return run_guarded(lambda: _export_bvh(args), debug=args.debug, prog="rvqfast.data export-bvh")
    if args.cmd == "prepare":
        from .synthetic import DEFAULT_N_MOTIONS
        if args.n_motions is None:
            args.n_motions = DEFAULT_N_MOTIONS
        elif args.n_motions < 3:
            p.error(f"--n-motions: expected an integer >= 3, got {args.n_motions}")
        return run_guarded(lambda: _prepare(args), debug=args.debug, prog="rvqfast.data prepare")
    if args.cmd == "check":
        return run_guarded(lambda: _check(args), debug=args.debug, prog="rvqfast.data check")
    return run_guarded(lambda: _import_bvh(args), debug=args.debug, prog="rvqfast.data import-bvh")


if __name__ == "__main__":
    sys.exit(main())
