"""Command lines of ``python -m rvqfast.evaluator`` and ``python -m rvqfast.evaluate``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from .._cli import cli_entry


@cli_entry("rvqfast.evaluator")  # --debug: traceback instead of a one-line message
def evaluator_main(argv: list[str] | None = None) -> int:
    """Entry of ``python -m rvqfast.evaluator``."""
    from . import evaluator as E

    ap = argparse.ArgumentParser(prog="python -m rvqfast.evaluator",
                                 description="Train or inspect a T2M-architecture text/motion evaluator.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train contrastively on a HumanML3D-layout dataset")
    tr.add_argument("--data", default="default", help="'default' (embedded synthetic data) or a folder")
    tr.add_argument("--out", required=True, help="output folder (evaluator.safetensors + evaluator.json)")
    d = E.TrainConfig()
    tr.add_argument("--epochs", type=int, default=d.epochs)
    tr.add_argument("--batch-size", type=int, default=d.batch_size)
    tr.add_argument("--lr", type=float, default=d.lr)
    tr.add_argument("--seed", type=int, default=d.seed)
    tr.add_argument("--preset", choices=sorted(E.PRESETS), default=d.preset,
                    help="layer sizes: t2m = the official evaluator's (default)")
    tr.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    tr.add_argument("--no-progress", action="store_true")
    info = sub.add_parser("info", help="print an evaluator folder's config and provenance")
    info.add_argument("path")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        cfg = E.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, preset=args.preset, threads=args.threads)
        import torch
        torch.manual_seed(args.seed)
        ev = E.train_evaluator(args.data, args.out, cfg, progress=not args.no_progress)
        print(json.dumps(ev.provenance, indent=1))
        print(f"saved to {Path(args.out) / E.WEIGHTS_FILE}")
        return 0
    ev = E.load_evaluator(args.path)
    print(json.dumps({"config": ev.config.__dict__, "vocabulary": len(ev.words.words),
                      "provenance": ev.provenance}, indent=1))
    return 0


@cli_entry("rvqfast.evaluate")  # --debug: traceback instead of a one-line message
def evaluate_main(argv: list[str] | None = None) -> int:
    """Entry of ``python -m rvqfast.evaluate``."""
    from .report import evaluate_runs

    ap = argparse.ArgumentParser(prog="python -m rvqfast.evaluate",
                                 description="Evaluate tokenizer runs on the test split and write a report.")
    ap.add_argument("runs", nargs="+", help="run folders written by `python -m rvqfast.train`")
    ap.add_argument("--evaluator", help="folder written by `python -m rvqfast.evaluator train` "
                    "(default with --data default: the cached default evaluator, trained on first use)")
    ap.add_argument("--official-checkpoint", help="official T2M checkpoints/t2m folder (instead of --evaluator)")
    ap.add_argument("--glove", help="folder with our_vab_data.npy + our_vab_words.txt (with --official-checkpoint)")
    ap.add_argument("--out", required=True, help="report folder to write")
    ap.add_argument("--data", default="default")
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N test motions (quick checks)")
    ap.add_argument("--no-gif", action="store_true")
    ap.add_argument("--gif-frames", type=int, default=120, help="at most this many GIF frames")
    ap.add_argument("--no-stage-sweep", action="store_true",
                    help="skip the FID/MPJPE-vs-stages sweep for posecode_rvq runs")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.evaluator and args.official_checkpoint:
        ap.error("give only one of --evaluator or --official-checkpoint (+ --glove)")
    if not args.evaluator and not args.official_checkpoint and args.data != "default":
        ap.error("--data other than 'default' needs --evaluator DIR (python -m rvqfast.evaluator "
                 "train --data ... --out DIR) or --official-checkpoint + --glove")
    if args.official_checkpoint and not args.glove:
        ap.error("--official-checkpoint needs --glove")
    from . import evaluator as E
    if args.evaluator:
        ev = E.load_evaluator(args.evaluator, args.device)
    elif args.official_checkpoint:
        ev = E.load_official(args.official_checkpoint, args.glove, args.device)
    else:  # --data default: the cached default evaluator, trained on first use
        ev = E.default_evaluator(args.device)
    report = evaluate_runs(args.runs, ev, args.out, data=args.data, split=args.split,
                           repeats=args.repeats, seed=args.seed, limit=args.limit,
                           gif=not args.no_gif, stage_sweep=not args.no_stage_sweep, device=args.device,
                           gif_frames=args.gif_frames)
    print((Path(args.out) / "report.md").read_text())
    return 0 if report else 1


if __name__ == "__main__":
    sys.exit(evaluator_main())
