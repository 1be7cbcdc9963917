"""``python -m rvqfast.train``: train a motion tokenizer.

Examples::

    python -m rvqfast.train --out runs/demo                       # default preset, embedded data
    python -m rvqfast.train --preset paper --data /data/HumanML3D --out runs/paper --device cuda
    torchrun --nproc_per_node 2 -m rvqfast.train --out runs/ddp --steps 200
    python -m rvqfast.train --out runs/demo --resume --steps 3000  # continue (more steps)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rvqfast._cli import add_debug_flag, run_guarded

from .checkpoint import CheckpointError
from .config import build_config, load_config_file
from .loop import TrainingError, resume_config, train
from .presets import PRESETS

# flag dest -> config key (only flags the user actually gives override the config)
_FLAG_KEYS = {
    "data": "data", "model": "model", "steps": "steps", "batch_size": "batch_size", "seed": "seed",
    "device": "device", "val_every": "val_every", "ckpt_every": "ckpt_every", "num_threads": "num_threads",
    "lr": "lr", "window": "window", "log_every": "log_every",
    "augment": "augment", "augment_fraction": "augment_fraction",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rvqfast.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="run folder to create (e.g. runs/NAME); nothing is written outside it")
    p.add_argument("--data", help="'default' (embedded synthetic dataset) or a HumanML3D-layout folder")
    p.add_argument("--model", choices=["posecode", "posecode_rvq", "rvq"], help="tokenizer variant")
    p.add_argument("--preset", default="default", help=f"starting settings: {', '.join(sorted(PRESETS))} (default: default)")
    p.add_argument("--config", help="JSON file of settings (flat keys; see --print-config); flags override it")
    p.add_argument("--steps", type=int, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, help="global batch size (split across processes)")
    p.add_argument("--window", type=int, help="training crop length in frames (multiple of 4)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--val-every", type=int, help="validation every N steps (0 = only at the end)")
    p.add_argument("--ckpt-every", type=int, help="checkpoint every N steps (0 = only at the end / on a signal)")
    p.add_argument("--log-every", type=int, help="log line every N steps")
    p.add_argument("--num-threads", type=int, help="torch CPU threads per process (0 = torch default)")
    p.add_argument("--augment", help="augmented copies added to the training data: a comma-separated "
                   "subset of mirror,speed,noise ('' = none, the default preset's choice)")
    p.add_argument("--augment-fraction", type=float, help="augmented copies per training motion (0, 10]")
    p.add_argument("--no-gif", action="store_true", help="skip the reconstruction GIF at the end")
    p.add_argument("--no-skeleton", action="store_true",
                   help="decode without setting bone lengths to the training data's shared skeleton")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings as JSON and exit")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_guarded(lambda: _run(args), debug=args.debug, prog="rvqfast.train")


def _run(args: argparse.Namespace) -> int:
    flags: dict[str, Any] = {key: getattr(args, dest) for dest, key in _FLAG_KEYS.items()
                             if getattr(args, dest) is not None}
    if args.no_gif:
        flags["gif"] = False
    if args.no_skeleton:
        flags["skeleton"] = False
    try:
        if args.resume:
            if not args.out:
                raise ValueError("--out: required with --resume (the run folder to continue)")
            overrides = dict(load_config_file(args.config)) if args.config else {}
            overrides.update(flags)
            cfg = resume_config(Path(args.out), overrides)
        else:
            if args.out is not None:
                flags["out"] = args.out
            elif args.print_config:
                flags["out"] = "runs/NAME"
            cfg = build_config(args.preset, args.config, flags)
        if args.print_config:
            print(json.dumps(cfg.to_flat_dict(), indent=2))
            return 0
        result = train(cfg, resume=args.resume, progress=not args.no_progress)
    except (ValueError, TrainingError, CheckpointError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.interrupted:
        return 128 + result.signal  # shell convention: 130 for SIGINT, 143 for SIGTERM
    if result.val:
        print(f"done: {result.step} steps in {result.seconds:.0f} s, val_loss {result.val['val_loss']:.4f}; "
              f"model in {result.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
