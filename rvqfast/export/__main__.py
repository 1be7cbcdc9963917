"""``python -m rvqfast.export RUN --out DIR``: write engine-ready ONNX graphs of a trained run."""
from __future__ import annotations

import argparse
import sys

from rvqfast._cli import add_debug_flag, run_guarded

from .allowlist import DEFAULT_OPSET, GraphCompatibilityError
from .exporter import GRAPH_NAMES, MAX_OPSET, MIN_OPSET, export_run


def _graph_list(text: str) -> list[str]:
    names = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in names if g not in GRAPH_NAMES]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected a comma list from {','.join(GRAPH_NAMES)}, got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rvqfast.export",
        description="Export a trained motion tokenizer to ONNX (decoder.onnx, encoder.onnx, rvq.onnx, "
                    "manifest.json) for Unity Sentis / Unreal NNE. Writes only inside --out.",
    )
    p.add_argument("run", help="training run folder (config.json + model.safetensors)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}-{MAX_OPSET} (default {DEFAULT_OPSET}, the Sentis range)")
    p.add_argument("--fp16", action="store_true", help="store weights as fp16 (math and I/O stay fp32)")
    p.add_argument("--int32-indices", action="store_true", help="int32 index inputs/outputs (Sentis)")
    p.add_argument("--graphs", type=_graph_list, default=None,
                   help="comma list of graphs (default: all the model has): " + ",".join(GRAPH_NAMES))
    add_debug_flag(p)
    args = p.parse_args(argv)
    return run_guarded(lambda: _run(args), debug=args.debug, prog="rvqfast.export")


def _run(args: argparse.Namespace) -> int:
    try:
        manifest = export_run(args.run, args.out, graphs=args.graphs, opset=args.opset, fp16=args.fp16,
                              int32_indices=args.int32_indices)
    except (OSError, ValueError, RuntimeError, GraphCompatibilityError) as e:
        # CheckpointError (corrupt run) is a RuntimeError; all carry a message naming the problem.
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, g in manifest["graphs"].items():
        ins = ", ".join(f"{i['name']} {i['dtype']}{i['shape']}" for i in g["inputs"])
        outs = ", ".join(f"{o['name']} {o['dtype']}{o['shape']}" for o in g["outputs"])
        print(f"{args.out}/{g['file']}: ({ins}) -> ({outs}), {g['bytes'] / 1e6:.2f} MB")
    print(f"{args.out}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
