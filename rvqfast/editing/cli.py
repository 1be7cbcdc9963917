"""``python -m rvqfast.edit``: edit one motion, or run the fixed edit suite.

::

    python -m rvqfast.edit RUN --data default --index 3 --set angle:left_knee="bent 90-100 deg" \\
        --frames 40:80 --out DIR
    python -m rvqfast.edit RUN --input FEATURES.npy --set ... --residual keep --out DIR
    python -m rvqfast.edit RUN --suite --data default --evaluator EVAL_DIR --out DIR
"""
from __future__ import annotations

import argparse
import os

import sys
from pathlib import Path

import numpy as np

from rvqfast._cli import cli_entry
from rvqfast._io import atomic_write, atomic_write_json, atomic_write_text

from .apply import DEFAULT_BLEND_FRAMES, DEFAULT_FIT_ITERS, DEFAULT_FIT_SEARCH, RESIDUAL_POLICIES, edit
from .requests import FRAMES_PER_TOKEN, UnreachableEditError, parse_set


def _load_input(path: str) -> np.ndarray:
    p = Path(path)
    if p.suffix != ".npy":
        raise ValueError(f"--input: expected a .npy file of RAW features (T, 263), got {p.name}")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"--input: {p} is not a plain numeric .npy array ({e})") from e
    if arr.ndim != 2 or arr.shape[1] != 263 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"--input: expected float features of shape (T, 263), got {arr.shape} {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"--input: {p} contains NaN or infinite values")
    return arr.astype(np.float32)


def _dataset(data: str, split: str):
    from rvqfast.data import HumanML3D, resolve_dataset
    return HumanML3D(resolve_dataset(data), split)


def _run_suite(args, tok) -> int:
    from .suite import pick_motions, run_suite, suite_markdown

    ds = _dataset(args.data or "default", args.split)
    ids = pick_motions(ds.features, args.motions)
    if len(ids) < args.motions:
        print(f"note: only {len(ids)} {args.split} motions are long enough (>= 3 s)", file=sys.stderr)
    ev = None
    if args.evaluator:
        from rvqfast.eval.evaluator import load_evaluator
        ev = load_evaluator(args.evaluator)
    res = run_suite(tok, [ds.features[i] for i in ids], residual=args.residual, evaluator=ev,
                    fid_reference=list(ds.features) if ev is not None else None, blend=args.blend,
                    fit_iters=args.fit_iters, fit_search=args.fit_search, solve_on=args.solve_on)
    out = Path(args.out)
    # Paths relative to the report, so it reads the same on another machine.
    res.update({"run": os.path.relpath(Path(args.run).resolve(), out.resolve()), "data": args.data or "default",
                "split": args.split, "motion_names": [ds.names[i] for i in ids],
                "evaluator": os.path.relpath(Path(args.evaluator).resolve(), out.resolve()) if args.evaluator else None})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "suite.json", res)
    atomic_write_text(out / "suite.md", suite_markdown(res))
    for mode, s in res["summary"].items():
        print(f"{mode}: success {s['success']:.3f} (pre-edit {s['pre_edit_success']:.3f}), "
              f"unrelated preservation {s['unrelated_preservation']:.3f}, coupled change {s['coupled_change']:.3f}")
    if "fid" in res:
        print("FID: " + ", ".join(f"{k} {v:.3f}" for k, v in res["fid"].items() if isinstance(v, float)))
    print(f"wrote {out / 'suite.md'}")
    return 0


@cli_entry("rvqfast.edit")  # --debug: traceback instead of a one-line message
def main(argv: list[str] | None = None) -> int:
    """Entry of ``python -m rvqfast.edit``."""
    ap = argparse.ArgumentParser(prog="python -m rvqfast.edit",
                                 description="Edit pose codes of a motion through a trained tokenizer, "
                                             "or run the fixed edit suite (--suite).")
    ap.add_argument("run", help="tokenizer run folder (posecode or posecode_rvq)")
    ap.add_argument("--input", help="RAW features .npy (T, 263)")
    ap.add_argument("--data", help="dataset ('default' or a folder) to take a motion (or the suite's motions) from")
    ap.add_argument("--split", default="test")
    ap.add_argument("--index", type=int, default=0, help="motion index within --data's split")
    ap.add_argument("--set", action="append", metavar="SLOT=LABEL",
                    help="e.g. 'angle:left_knee=bent 90-100 deg' (repeatable: several slots at once)")
    ap.add_argument("--frames", default=None, help="start:stop motion frames (default: all)")
    ap.add_argument("--residual", choices=RESIDUAL_POLICIES, default="fit",
                    help="residual of edited frames: fit through the decoder so the decoded motion meets "
                         "the request (default), re-quantize against the new pose, keep, drop")
    ap.add_argument("--fit-iters", type=int, default=DEFAULT_FIT_ITERS,
                    help="gradient steps of the residual fit (--residual fit)")
    ap.add_argument("--fit-search", type=int, default=DEFAULT_FIT_SEARCH,
                    help="sweeps of the code search after the fit's gradient steps (0: off)")
    ap.add_argument("--solve-on", choices=("reconstruction", "input"), default="reconstruction",
                    help="pose the joint-space solver edits: the unedited reconstruction (default) or the input")
    ap.add_argument("--requantize", action="store_true", help=argparse.SUPPRESS)  # old spelling
    ap.add_argument("--blend", type=int, default=DEFAULT_BLEND_FRAMES, help="blend ramp (frames) at window borders")
    ap.add_argument("--allow-unseen", action="store_true",
                    help="warn instead of failing on a category never seen in training")
    ap.add_argument("--suite", action="store_true", help="run the fixed edit suite instead of one edit")
    ap.add_argument("--motions", type=int, default=30, help="suite: test motions per request")
    ap.add_argument("--evaluator", help="suite: evaluator folder for FID")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--no-gif", action="store_true")
    ap.add_argument("--gif-frames", type=int, default=200, help="at most this many GIF frames")
    args = ap.parse_args(argv)

    from rvqfast.models.tokenizer import MotionTokenizer
    if args.suite:
        if args.set or args.input:
            ap.error("--suite runs the fixed requests on --data; do not give --set or --input")
        return _run_suite(args, MotionTokenizer.load(args.run))
    if not args.set:
        ap.error("--set SLOT=LABEL is required (or --suite)")
    if bool(args.input) == bool(args.data):
        ap.error("give exactly one of --input or --data")
    try:
        requested = parse_set(args.set)
    except ValueError as e:
        ap.error(str(e))
    if args.input:
        feats = _load_input(args.input)
        source = str(args.input)
    else:
        ds = _dataset(args.data, args.split)
        if not 0 <= args.index < len(ds):
            raise SystemExit(f"--index: expected 0..{len(ds) - 1}, got {args.index}")
        feats = ds.features[args.index]
        source = f"{args.data}:{args.split}:{ds.names[args.index]}"
    if feats.shape[0] % FRAMES_PER_TOKEN:
        keep = feats.shape[0] // FRAMES_PER_TOKEN * FRAMES_PER_TOKEN
        print(f"note: cropping {feats.shape[0]} frames to {keep} (multiple of 4)")
        feats = feats[:keep]
    tok = MotionTokenizer.load(args.run)
    residual = "requantize" if args.requantize else args.residual
    try:
        res = edit(tok, feats, requested, args.frames, residual=residual, blend=args.blend,
                   strict=not args.allow_unseen, fit_iters=args.fit_iters, fit_search=args.fit_search, solve_on=args.solve_on)
    except UnreachableEditError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("edited.npy", res.features), ("reconstruction.npy", res.reconstruction),
                      ("categories.npy", res.categories.astype(np.int64)), ("indices.npy", res.indices.astype(np.int64))):
        atomic_write(out / name, lambda f, a=arr: np.save(f, a))
    summary = {"run": os.path.relpath(Path(args.run).resolve(), out.resolve()),
               "source": source if not args.input else Path(args.input).name, **res.summary()}
    atomic_write_json(out / "edit.json", summary)
    label = ", ".join(f"{k}={v}" for k, v in requested.items())
    if not args.no_gif:
        from rvqfast.motion.features import features_to_joints
        from rvqfast.viz import render_motion
        render_motion([np.asarray(features_to_joints(res.reconstruction)), np.asarray(features_to_joints(res.features))],
                      out / "before_after.gif", titles=["before (reconstruction)", "after edit"],
                      caption=f"{label} on frames {res.frames.start}:{res.frames.stop}", max_frames=args.gif_frames)
    m = res.metrics
    print(f"edited {source}: {label} on frames {res.frames.start}:{res.frames.stop} "
          f"(latent frames {res.latent_frames[0]}..{res.latent_frames[-1]}, residual {res.residual})")
    print(f"success rate        {m['success']:.3f}  (unedited reconstruction: {m['pre_edit_success']:.3f}; "
          f"solved pose: {m['solved_success']:.3f})")
    print(f"unrelated slots     {m['unrelated_preservation']:.3f} kept; coupled slots {m['coupled_change']:.3f} changed")
    if m.get("outside_preservation") is not None:
        print(f"outside the window  {m['outside_preservation']:.3f} of all slots kept")
    print(f"wrote {out}")
    return 0


__all__ = ["main"]
