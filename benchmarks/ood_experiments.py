"""Out-of-distribution experiments on the default data (not collected by pytest; run by hand).

    python benchmarks/ood_experiments.py lofo --family floor --steps 800 --out runs/ood/floor
    python benchmarks/ood_experiments.py lofo --family none --steps 800 --out runs/ood/all
    python benchmarks/ood_experiments.py run RUN_DIR --out runs/ood/default_model

``lofo`` trains a tokenizer without one action family (``none``: on everything) and writes
``result.json``: round-trip root-relative MPJPE, PA-MPJPE and pose-code agreement on the
family's test motions (``heldout``), the other test motions (``indist``) and the hand-written
BVH clips (``bvh``). ``run`` measures an existing run on the same sets of the full data.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from rvqfast._io import atomic_write_json
    from rvqfast.data import default_dataset
    from rvqfast.eval import ood

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("lofo")
    a.add_argument("--family", required=True)
    a.add_argument("--steps", type=int, required=True)
    a.add_argument("--model", default="posecode_rvq")
    a.add_argument("--augment", default="")
    a.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="extra training setting, e.g. --set splice_fraction=0")
    a.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("run")
    r.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = default_dataset(progress=True)
    out = Path(args.out)
    if args.cmd == "lofo":
        fam = None if args.family == "none" else args.family
        over = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        if args.augment:
            over["augment"] = args.augment
        res = ood.lofo_experiment(root, fam, out, steps=args.steps, model=args.model,
                                  overrides=over or None)
    else:
        from rvqfast.models.tokenizer import MotionTokenizer
        tok = MotionTokenizer.load(args.run).eval()
        res = {"run": Path(args.run).name, "bvh": ood.bvh_roundtrip(tok, out / "bvh"),
               "test": ood.split_roundtrip(tok, root, "test")}
    atomic_write_json(out / "result.json", res)
    print(json.dumps({k: v for k, v in res.items() if k != "bvh"} | {"bvh": {
        k: v for k, v in res["bvh"].items() if k != "per_clip"}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
