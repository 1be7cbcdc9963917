"""Streaming decode with decoder.onnx: token windows arrive, frames come out without seams.

    python export/stream_demo.py --export DIR        # a folder from `python -m rvqfast.export`
    python export/stream_demo.py --random-init       # no training needed (random weights)

Tokens arrive ``--hop`` at a time (4 tokens = 16 frames = 0.8 s at 20 fps). Each step decodes one
window: ``--context`` already-emitted tokens on the left (so the convolutions see the past), the
new tokens, and the ``--lookahead`` tokens held back from the previous step. The last
``lookahead`` tokens of every window are not emitted yet (their frames lack right context); the
next window predicts them again and the two predictions are crossfaded linearly, so the
hand-over is smooth. Stitching happens on the 263-d features (velocities and root-relative
positions, no absolute root state); joints are then integrated incrementally, carrying the root
heading and position from chunk to chunk.

The demo prints decode speed and a seam measure: the largest joint jump across chunk boundaries
next to the largest and median frame-to-frame motion inside chunks, for this stitching and for a
naive one (independent windows, concatenated), plus the gap to decoding the whole sequence at once.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, str(ROOT))

from rvqfast.export.runtime import OnnxMotionTokenizer  # noqa: E402


class RootTracker:
    """Integrates root heading/position across chunks so per-chunk joints land in one world frame.

    Uses the same conventions as rvqfast.motion.features.features_to_joints: heading increments
    are 2 * ROOT_ROT_VEL, root steps ROOT_LIN_VEL are expressed in the next frame's heading frame.
    """

    def __init__(self) -> None:
        self.theta = 0.0
        self.pos = np.zeros(2)

    def joints(self, features: np.ndarray) -> np.ndarray:
        from rvqfast.motion.features import features_to_joints

        local = features_to_joints(features.astype(np.float32)).astype(np.float64)  # (T, 22, 3), chunk frame
        c, s = np.cos(self.theta), np.sin(self.theta)
        world = local.copy()
        world[..., 0] = c * local[..., 0] - s * local[..., 2] + self.pos[0]
        world[..., 2] = s * local[..., 0] + c * local[..., 2] + self.pos[1]
        rv = features[:, 0].astype(np.float64)
        theta_next = 2.0 * np.cumsum(rv)
        lx, lz = features[:, 1].astype(np.float64), features[:, 2].astype(np.float64)
        step = np.array([(lx * np.cos(theta_next) - lz * np.sin(theta_next)).sum(),
                         (lx * np.sin(theta_next) + lz * np.cos(theta_next)).sum()])
        self.pos = self.pos + np.array([c * step[0] - s * step[1], s * step[0] + c * step[1]])
        self.theta += 2.0 * rv.sum()
        return world


class StreamDecoder:
    """Feed token chunks with :meth:`push`; get newly final feature frames back."""

    def __init__(self, rt: OnnxMotionTokenizer, context: int, lookahead: int) -> None:
        self.rt, self.context, self.lookahead = rt, context, lookahead
        self.unit = rt.unit
        self.cats: list[np.ndarray] = []
        self.idx: list[np.ndarray] = []
        self.emitted = 0  # tokens whose frames are final
        self.pending: np.ndarray | None = None  # previous window's frames for held-back tokens
        self.decode_seconds = 0.0
        self.windows = 0

    def _decode(self, start: int, stop: int) -> np.ndarray:
        cats = np.stack(self.cats[start:stop])[None] if self.rt.uses_posecodes else None
        idx = np.stack(self.idx[start:stop])[None] if self.rt.uses_rvq else None
        t0 = time.perf_counter()
        features, _ = self.rt.decode(cats, idx)
        self.decode_seconds += time.perf_counter() - t0
        self.windows += 1
        return features[0]

    def push(self, cats: np.ndarray, idx: np.ndarray, final: bool = False) -> np.ndarray:
        self.cats.extend(cats)
        self.idx.extend(idx)
        end = len(self.cats)
        keep_until = end if final else max(self.emitted, end - self.lookahead)
        start = max(0, self.emitted - self.context)
        feats = self._decode(start, end)
        u = self.unit
        new = feats[(self.emitted - start) * u: (keep_until - start) * u].copy()
        if self.pending is not None and len(self.pending):
            n = min(len(self.pending), len(new))
            w = ((np.arange(n) + 1.0) / (n + 1.0))[:, None]  # 0 -> 1 across the overlap
            new[:n] = (1.0 - w) * self.pending[:n] + w * new[:n]
        self.pending = feats[(keep_until - start) * u:]
        self.emitted = keep_until
        return new


def _token_stream(rt: OnnxMotionTokenizer, seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of a synthetic motion (encoded by encoder.onnx when exported), else random tokens."""
    n_tok = int(seconds * 20) // rt.unit
    if "encoder" in rt.manifest["graphs"]:
        from rvqfast.data.synthetic import generate_motion
        from rvqfast.motion.features import joints_to_features

        clips, i = [], 0
        while sum(len(c) for c in clips) < n_tok * rt.unit + 1:
            clips.append(joints_to_features(generate_motion(seed, i).joints))
            i += 1
        feats = np.concatenate(clips)[: n_tok * rt.unit][None]
        out = rt.encode(feats)
        cats = out[0][0]
        idx = out[1][0] if rt.uses_rvq else np.zeros((n_tok, 0), np.int64)
        return cats, idx
    rng = np.random.default_rng(seed)
    cats = (rng.random((n_tok, len(rt.slot_sizes))) * rt.slot_sizes).astype(np.int64)
    idx = rng.integers(0, rt.codebook_size, (n_tok, rt.num_quantizers), dtype=np.int64)
    return cats, idx


def _jumps(joints: np.ndarray) -> np.ndarray:
    """Largest joint displacement (m) between consecutive frames: (T-1,)."""
    return np.linalg.norm(np.diff(joints, axis=0), axis=-1).max(axis=-1)


def _seam_report(name: str, joints: np.ndarray, boundaries: list[int]) -> None:
    jumps = _jumps(joints)
    at = np.array([b - 1 for b in boundaries if 0 < b < len(joints)], dtype=int)
    inside = np.delete(jumps, at)
    print(f"  {name:<22} boundary max {jumps[at].max() * 100:7.2f} cm | within-chunk max "
          f"{inside.max() * 100:7.2f} cm, median {np.median(inside) * 100:6.2f} cm")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--export", type=Path, help="folder written by `python -m rvqfast.export`")
    src.add_argument("--random-init", action="store_true", help="export a random-weight tokenizer to a temp folder")
    p.add_argument("--width", type=int, default=512, help="width of the --random-init tokenizer")
    p.add_argument("--hop", type=int, default=4, help="tokens arriving per step")
    p.add_argument("--context", type=int, default=8, help="left-context tokens re-decoded each step")
    p.add_argument("--lookahead", type=int, default=2, help="tokens held back and crossfaded")
    p.add_argument("--seconds", type=float, default=12.0, help="length of the token stream")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("hop", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.context < 0 or args.lookahead < 0:
        p.error("--context and --lookahead must be >= 0")

    tmp = None
    if args.random_init:
        import torch

        from rvqfast.export.exporter import export_tokenizer
        from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig

        torch.manual_seed(args.seed)
        tok = MotionTokenizer(TokenizerConfig(width=args.width, kmeans_init=False)).eval()
        tmp = tempfile.TemporaryDirectory(prefix="rvqfast_stream_")
        export_tokenizer(tok, tmp.name, graphs=["decoder", "encoder"])
        export_dir = Path(tmp.name)
        print(f"random-init tokenizer (width {args.width}) exported to {export_dir}")
    else:
        export_dir = args.export
    try:
        rt = OnnxMotionTokenizer(export_dir, threads=args.threads)
        cats, idx = _token_stream(rt, args.seconds, args.seed)
        n_tok = len(cats)
        u = rt.unit

        stream = StreamDecoder(rt, args.context, args.lookahead)
        tracker = RootTracker()
        chunks, boundaries, t = [], [], 0
        t0 = time.perf_counter()
        for s in range(0, n_tok, args.hop):
            final = s + args.hop >= n_tok
            feats = stream.push(cats[s:s + args.hop], idx[s:s + args.hop], final=final)
            if len(feats):
                chunks.append(tracker.joints(feats))
                t += len(feats)
                boundaries.append(t)
        wall = time.perf_counter() - t0
        joints = np.concatenate(chunks)
        frames = n_tok * u
        assert len(joints) == frames, (len(joints), frames)

        # Naive: each hop decoded alone, concatenated.
        naive_tracker, naive = RootTracker(), []
        for s in range(0, n_tok, args.hop):
            c = cats[None, s:s + args.hop] if rt.uses_posecodes else None
            i = idx[None, s:s + args.hop] if rt.uses_rvq else None
            naive.append(naive_tracker.joints(rt.decode(c, i)[0][0]))
        naive_j = np.concatenate(naive)
        naive_b = list(np.cumsum([len(n) for n in naive]))
        # Offline: the whole sequence in one window.
        full_j = rt.decode(cats[None] if rt.uses_posecodes else None, idx[None] if rt.uses_rvq else None)[1][0]

        print(f"{n_tok} tokens = {frames} frames ({frames / 20:.1f} s at 20 fps); hop {args.hop}, "
              f"context {args.context}, lookahead {args.lookahead} tokens; {args.threads} thread(s)")
        print(f"decode: {stream.windows} windows in {stream.decode_seconds * 1e3:.1f} ms -> "
              f"{frames / stream.decode_seconds:,.0f} frames/s ({frames / 20 / stream.decode_seconds:,.0f}x real time); "
              f"whole loop incl. stitching {frames / wall:,.0f} frames/s")
        print(f"latency: a token's frames are final {args.lookahead} token(s) "
              f"({args.lookahead * u / 20 * 1000:.0f} ms of motion) after it arrives")
        print("seams (largest joint jump between consecutive frames):")
        _seam_report("stitched (this demo)", joints, boundaries[:-1])
        _seam_report("naive concatenation", naive_j, naive_b[:-1])
        print(f"  vs one-shot decode of the whole sequence: max joint gap {np.abs(joints - full_j).max() * 100:.2f} cm "
              f"(stitched), {np.abs(naive_j - full_j).max() * 100:.2f} cm (naive)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
