"""Pose-code editing of a motion through a trained tokenizer.

``edit(tokenizer, features, set={"angle:left_knee": "straight"}, frames=range(0, 40))``
encodes the motion, replaces the chosen pose-code categories on the latent frames covering
``frames`` (motion frame ``f`` maps to latent frame ``f // 4``), decodes, and measures the edit:

* success rate: over the edited motion frames and the requested slots, how often the pose
  codes re-extracted from the output show the requested category;
* preservation rate: over the edited frames and all *other* slots, how often the output's
  category equals that of the unedited reconstruction (so reconstruction error is not
  counted against the edit); ``outside_preservation_rate`` does the same for all slots on
  frames outside the edit window;
* baseline rate: the success rate the unedited reconstruction already has (how often the
  requested category held anyway).

Residual indices are kept by default. ``requantize=True`` adds one projection step: the
edited output is re-encoded and the residual of the edited latent frames is re-quantized
against the *new* pose latent, then decoded again, so the residual matches the edited pose.

Command line::

    python -m rvqfast.edit RUN --input FEATURES.npy --set angle:left_knee=straight \\
        --frames 0:40 --out DIR [--requantize]
    python -m rvqfast.edit RUN --data default --index 0 --set ... --out DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from ._cli import cli_entry

import numpy as np
import torch

from ._io import atomic_write
from .motion.features import features_to_joints
from .motion.posecodes import POSECODE_SLOTS, category_index, posecode_indices

__all__ = ["EditResult", "edit", "parse_frames", "parse_set", "main"]

_UNIT = 4


@dataclass
class EditResult:
    """Output of :func:`edit` (arrays for one motion, RAW features)."""

    features: np.ndarray           # (T, 263) edited motion
    reconstruction: np.ndarray     # (T, 263) unedited reconstruction
    frames: range                  # edited motion frames
    latent_frames: list[int]       # edited latent frames
    requested: dict[str, str]
    success_rate: float
    preservation_rate: float
    outside_preservation_rate: float | None
    baseline_rate: float

    def summary(self) -> dict:
        return {"requested": self.requested, "frames": [self.frames.start, self.frames.stop],
                "latent_frames": self.latent_frames, "success_rate": self.success_rate,
                "preservation_rate": self.preservation_rate,
                "outside_preservation_rate": self.outside_preservation_rate,
                "baseline_rate": self.baseline_rate}


def parse_set(items) -> dict[str, str]:
    """``["angle:left_knee=straight", ...]`` or a dict -> validated {slot: label}."""
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for it in items:
            if not isinstance(it, str) or "=" not in it:
                raise ValueError(f"set: expected 'slot=label' (e.g. angle:left_knee=straight), got {it!r}")
            slot, label = it.split("=", 1)
            pairs.append((slot.strip(), label.strip()))
    if not pairs:
        raise ValueError("set: give at least one slot=label to change")
    out = {}
    for slot, label in pairs:
        category_index(slot, label)  # raises ValueError naming slot / label
        if slot in out:
            raise ValueError(f"set: slot {slot!r} given twice")
        out[slot] = label
    return out


def parse_frames(frames, num_frames: int) -> range:
    """None (all), a range, a slice, (start, stop) or "start:stop" -> validated range."""
    if frames is None:
        r = range(0, num_frames)
    elif isinstance(frames, range):
        r = frames
    elif isinstance(frames, slice):
        r = range(num_frames)[frames]
    elif isinstance(frames, str):
        parts = frames.split(":")
        if len(parts) != 2:
            raise ValueError(f"frames: expected 'start:stop', got {frames!r}")
        lo = int(parts[0]) if parts[0] else 0
        hi = int(parts[1]) if parts[1] else num_frames
        r = range(lo, hi)
    elif isinstance(frames, (tuple, list)) and len(frames) == 2:
        r = range(int(frames[0]), int(frames[1]))
    else:
        raise ValueError(f"frames: expected None, a range, a slice or 'start:stop', got {frames!r}")
    if r.step != 1 or len(r) == 0 or r.start < 0 or r.stop > num_frames:
        raise ValueError(f"frames: expected a non-empty contiguous range within [0, {num_frames}), got {r}")
    return r


def _as_features(features) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[-1] != 263:
        raise ValueError(f"features: expected one motion of shape (T, 263), got {tuple(x.shape)}")
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise ValueError("features: expected finite floating-point values")
    if x.shape[1] == 0 or x.shape[1] % _UNIT:
        raise ValueError(f"features: T={x.shape[1]} must be a positive multiple of {_UNIT} "
                         f"(crop to {x.shape[1] - x.shape[1] % _UNIT} frames)")
    return x.to(torch.float32)


@torch.no_grad()
def _requantize(tok, x_edit: torch.Tensor, cats_new: torch.Tensor, idx: torch.Tensor,
                latent: list[int]) -> torch.Tensor:
    from . import ops
    z = tok.encoder(tok.normalize(x_edit.to(tok.mean.device)).transpose(1, 2)).transpose(1, 2)
    r = z - tok.pose_latent(cats_new.to(tok.mean.device))
    b, n, d = r.shape
    new_idx, _ = ops.rvq_encode(r.reshape(b * n, d).contiguous(), tok.rvq.codebooks.detach().contiguous())
    new_idx = new_idx.reshape(b, n, -1)[..., : idx.shape[-1]].to(idx.device)
    out = idx.clone()
    out[:, latent] = new_idx[:, latent]
    return out


@torch.no_grad()
def edit(tokenizer, features, set: dict[str, str] | list[str], frames=None, *,  # noqa: A002
         requantize: bool = False, n_quantizers: int | None = None) -> EditResult:
    """Edit pose codes of one motion (RAW features (T, 263), T a multiple of 4).

    ``set`` maps slot names (see ``rvqfast.motion.posecodes.POSECODE_SLOTS``) to category
    labels; ``frames`` selects motion frames (default: all). Returns an :class:`EditResult`
    with the edited features and the success / preservation rates.
    """
    tok = tokenizer
    if not getattr(tok.config, "uses_posecodes", False):
        raise ValueError(f"tokenizer: model {tok.config.model!r} has no pose codes to edit; "
                         "use a 'posecode' or 'posecode_rvq' run")
    requested = parse_set(set)
    x = _as_features(features)
    T = x.shape[1]
    fr = parse_frames(frames, T)
    latent = sorted({f // _UNIT for f in fr})
    cats, idx = tok.encode(x)
    cats_new = cats.clone()
    slot_ids = {}
    for slot, label in requested.items():
        s = POSECODE_SLOTS.index(slot)
        slot_ids[s] = category_index(slot, label)
        cats_new[:, latent, s] = slot_ids[s]
    recon = tok.decode(cats, idx, n_quantizers)
    edited = tok.decode(cats_new, idx, n_quantizers)
    if requantize and tok.num_quantizers > 0:
        idx2 = _requantize(tok, edited, cats_new, idx, latent)
        edited = tok.decode(cats_new, idx2, n_quantizers)
    codes_rec = posecode_indices(features_to_joints(recon.cpu()))[0].numpy()   # (T, 70)
    codes_out = posecode_indices(features_to_joints(edited.cpu()))[0].numpy()
    f_idx = np.arange(fr.start, fr.stop)
    req_slots = np.array(sorted(slot_ids))
    req_cats = np.array([slot_ids[s] for s in req_slots])
    success = float((codes_out[np.ix_(f_idx, req_slots)] == req_cats[None]).mean())
    baseline = float((codes_rec[np.ix_(f_idx, req_slots)] == req_cats[None]).mean())
    other = np.setdiff1d(np.arange(len(POSECODE_SLOTS)), req_slots)
    preserve = float((codes_out[np.ix_(f_idx, other)] == codes_rec[np.ix_(f_idx, other)]).mean())
    outside = np.setdiff1d(np.arange(T), f_idx)
    out_pres = float((codes_out[outside] == codes_rec[outside]).mean()) if outside.size else None
    return EditResult(features=edited[0].cpu().numpy(), reconstruction=recon[0].cpu().numpy(),
                      frames=fr, latent_frames=latent, requested=requested, success_rate=success,
                      preservation_rate=preserve, outside_preservation_rate=out_pres,
                      baseline_rate=baseline)


def _load_input(path: str) -> np.ndarray:
    p = Path(path)
    if p.suffix != ".npy":
        raise ValueError(f"input: expected a .npy file of RAW features (T, 263), got {p.name}")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"input: {p} is not a plain numeric .npy array ({e})") from e
    if arr.ndim != 2 or arr.shape[1] != 263 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"input: expected float features of shape (T, 263), got {arr.shape} {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"input: {p} contains NaN or infinite values")
    return arr.astype(np.float32)


@cli_entry("rvqfast.edit")  # --debug: traceback instead of a one-line message
def main(argv: list[str] | None = None) -> int:
    """Entry of ``python -m rvqfast.edit``."""
    ap = argparse.ArgumentParser(prog="python -m rvqfast.edit", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="tokenizer run folder (posecode or posecode_rvq)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="RAW features .npy (T, 263)")
    src.add_argument("--data", help="take a motion from this dataset ('default' or a folder) instead")
    ap.add_argument("--split", default="test")
    ap.add_argument("--index", type=int, default=0, help="motion index within --data's split")
    ap.add_argument("--set", action="append", required=True, metavar="SLOT=LABEL",
                    help="e.g. angle:left_knee=straight (repeatable)")
    ap.add_argument("--frames", default=None, help="start:stop motion frames (default: all)")
    ap.add_argument("--requantize", action="store_true", help="re-quantize the residual of edited frames")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--no-gif", action="store_true")
    ap.add_argument("--gif-frames", type=int, default=200, help="at most this many GIF frames")
    args = ap.parse_args(argv)

    from .models.tokenizer import MotionTokenizer
    requested = parse_set(args.set)
    if args.input:
        feats = _load_input(args.input)
        source = str(args.input)
    else:
        from .data import HumanML3D, resolve_dataset
        ds = HumanML3D(resolve_dataset(args.data), args.split)
        if not 0 <= args.index < len(ds):
            raise SystemExit(f"--index: expected 0..{len(ds) - 1}, got {args.index}")
        feats = ds.features[args.index]
        source = f"{args.data}:{args.split}:{ds.names[args.index]}"
    if feats.shape[0] % _UNIT:
        print(f"note: cropping {feats.shape[0]} frames to {feats.shape[0] // _UNIT * _UNIT} (multiple of 4)")
        feats = feats[: feats.shape[0] // _UNIT * _UNIT]
    tok = MotionTokenizer.load(args.run)
    res = edit(tok, feats, requested, args.frames, requantize=args.requantize)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("edited.npy", res.features), ("reconstruction.npy", res.reconstruction)):
        atomic_write(out / name, lambda f, a=arr: np.save(f, a.astype(np.float32)))
    summary = {"run": str(Path(args.run).resolve()), "source": source, "requantize": args.requantize,
               **res.summary()}
    (out / "edit.json").write_text(json.dumps(summary, indent=1) + "\n")
    label = ", ".join(f"{k}={v}" for k, v in requested.items())
    if not args.no_gif:
        from .viz import render_motion
        render_motion([np.asarray(features_to_joints(res.reconstruction)),
                       np.asarray(features_to_joints(res.features))], out / "before_after.gif",
                      titles=["before (reconstruction)", "after edit"],
                      caption=f"{label} on frames {res.frames.start}:{res.frames.stop}",
                      max_frames=args.gif_frames)
    print(f"edited {source}: {label} on frames "
          f"{res.frames.start}:{res.frames.stop} (latent frames {res.latent_frames[0]}..{res.latent_frames[-1]})")
    print(f"success rate      {res.success_rate:.3f}  (unedited reconstruction: {res.baseline_rate:.3f})")
    print(f"preservation rate {res.preservation_rate:.3f}  (other slots, edited frames)")
    if res.outside_preservation_rate is not None:
        print(f"outside frames    {res.outside_preservation_rate:.3f}  (all slots, frames outside the edit)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
