"""Out-of-distribution checks of a tokenizer: round trips of motions it never saw.

* :func:`roundtrip_metrics`: raw joints (any body) -> :func:`rvqfast.motion.retarget` ->
  features -> ``encode`` -> ``decode`` -> joints, scored against the retargeted input with
  root-relative MPJPE, PA-MPJPE (mm) and pose-code agreement (share of the 70 pose-code slots
  whose category is the same in input and reconstruction, over all frames).
* :func:`write_test_bvh` / :data:`BVH_CLIPS`: hand-written BVH motion programs on a skeleton
  unlike the canonical one (Mixamo-style names, two spine joints, T-pose rest, other
  proportions, centimetres, 30 fps), for the import + retarget + round-trip path.
* :func:`family_split`: a dataset folder (links to the generated files) whose training split
  leaves out every motion containing one action family, and whose ``heldout`` / ``indist``
  splits hold that family's and the other families' test motions: the leave-one-family-out
  check.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..motion.features import features_to_joints, joints_to_features
from ..motion.posecodes import posecode_indices
from ..motion.retarget import retarget
from . import metrics as M

__all__ = ["roundtrip_metrics", "features_roundtrip_metrics", "write_test_bvh", "BVH_CLIPS",
           "family_split", "clip_metrics", "split_roundtrip", "bvh_roundtrip", "lofo_experiment"]


def clip_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Root-relative MPJPE, PA-MPJPE (mm) and pose-code agreement of (T, 22, 3) joints."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    agree = float((posecode_indices(pred) == posecode_indices(gt)).mean())
    return {"mpjpe_root_rel_mm": M.mpjpe(pred - pred[:, :1], gt - gt[:, :1]),
            "pa_mpjpe_mm": M.pa_mpjpe(pred, gt), "posecode_agreement": agree,
            "frames": int(gt.shape[0])}


def _weighted(per_clip: list[dict]) -> dict[str, float]:
    frames = sum(c["frames"] for c in per_clip)
    if not frames:
        return {"mpjpe_root_rel_mm": float("nan"), "pa_mpjpe_mm": float("nan"),
                "posecode_agreement": float("nan"), "frames": 0, "clips": 0}
    out = {k: sum(c[k] * c["frames"] for c in per_clip) / frames
           for k in ("mpjpe_root_rel_mm", "pa_mpjpe_mm", "posecode_agreement")}
    out["frames"] = frames
    out["clips"] = len(per_clip)
    return out


@torch.no_grad()
def features_roundtrip_metrics(tokenizer, features: list[np.ndarray]) -> dict:
    """Encode/decode RAW features (each (T, 263)); metrics frame-weighted over all clips and
    per clip (``per_clip``, in input order). Clips are cropped to a multiple of 4 frames."""
    per = []
    dev = tokenizer.mean.device
    for f in features:
        n = f.shape[0] // 4 * 4
        if n < 4:
            raise ValueError(f"features: a clip of {f.shape[0]} frames is shorter than 4")
        x = torch.from_numpy(np.ascontiguousarray(f[:n], dtype=np.float32))[None].to(dev)
        cats, idx = tokenizer.encode(x)
        y = tokenizer.decode(cats, idx)[0].cpu().numpy()
        per.append(clip_metrics(features_to_joints(y), features_to_joints(x[0].cpu().numpy())))
    return {**_weighted(per), "per_clip": per}


def roundtrip_metrics(tokenizer, joints: list[np.ndarray], *, retarget_first: bool = True) -> dict:
    """Raw joint sequences (T, 22, 3) -> canonical skeleton -> tokenizer round trip -> metrics
    (see :func:`features_roundtrip_metrics`)."""
    feats = [joints_to_features(retarget(j) if retarget_first else j) for j in joints]
    return features_roundtrip_metrics(tokenizer, feats)


# --- hand-written BVH test clips -----------------------------------------------------------
# A T-pose skeleton (arms along +-X) with Mixamo names, two spine joints, in centimetres;
# proportions differ from the canonical skeleton (long legs, short trunk, broad shoulders).
_BVH_JOINTS = [  # name, parent, offset (cm)
    ("Hips", None, (0, 0, 0)),
    ("Spine", "Hips", (0, 12, -1)), ("Spine1", "Spine", (0, 20, 0)),
    ("Neck", "Spine1", (0, 17, 0)), ("Head", "Neck", (0, 11, 3)),
    ("LeftShoulder", "Spine1", (4, 14, 0)), ("LeftArm", "LeftShoulder", (15, 0, 0)),
    ("LeftForeArm", "LeftArm", (29, 0, 0)), ("LeftHand", "LeftForeArm", (26, 0, 0)),
    ("RightShoulder", "Spine1", (-4, 14, 0)), ("RightArm", "RightShoulder", (-15, 0, 0)),
    ("RightForeArm", "RightArm", (-29, 0, 0)), ("RightHand", "RightForeArm", (-26, 0, 0)),
    ("LeftUpLeg", "Hips", (10, -7, 0)), ("LeftLeg", "LeftUpLeg", (0, -47, 0)),
    ("LeftFoot", "LeftLeg", (0, -45, 0)), ("LeftToeBase", "LeftFoot", (0, -7, 14)),
    ("RightUpLeg", "Hips", (-10, -7, 0)), ("RightLeg", "RightUpLeg", (0, -47, 0)),
    ("RightFoot", "RightLeg", (0, -45, 0)), ("RightToeBase", "RightFoot", (0, -7, 14)),
]
_BVH_HIP_HEIGHT = 106.0  # cm, standing
BVH_FPS = 30


def _prog(name: str, t: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-joint (Z, X, Y) rotations in degrees (F, 3) and the root position (F, 3) in cm.
    Conventions of this T-pose skeleton: a thigh flexes forward with negative X; an arm hangs
    down with Z = -80 (left) / +80 (right)."""
    f = len(t)
    rot: dict[str, np.ndarray] = {n: np.zeros((f, 3)) for n, _, _ in _BVH_JOINTS}
    root = np.zeros((f, 3))
    root[:, 1] = _BVH_HIP_HEIGHT
    rot["LeftArm"][:, 0], rot["RightArm"][:, 0] = -80.0, 80.0   # arms down
    s = np.sin(2 * np.pi * 0.9 * t)
    if name in ("walk", "run"):
        fast = name == "run"
        ph = 2 * np.pi * (1.4 if fast else 0.9) * t
        amp = 35 if fast else 25
        rot["LeftUpLeg"][:, 1] = -amp * np.sin(ph)
        rot["RightUpLeg"][:, 1] = amp * np.sin(ph)
        rot["LeftLeg"][:, 1] = (80 if fast else 40) * np.clip(np.sin(ph + 1.2), 0, None)
        rot["RightLeg"][:, 1] = (80 if fast else 40) * np.clip(-np.sin(ph + 1.2), 0, None)
        rot["LeftArm"][:, 1] = 25 * np.sin(ph)
        rot["RightArm"][:, 1] = -25 * np.sin(ph)
        rot["LeftForeArm"][:, 2] = rot["RightForeArm"][:, 2] = 0.0
        rot["LeftForeArm"][:, 1] = rot["RightForeArm"][:, 1] = -(70 if fast else 15)
        root[:, 2] = (300 if fast else 130) * t
        root[:, 1] += (4 * np.abs(np.sin(ph)) if fast else -2 * np.abs(np.cos(ph)))
    elif name == "wave":
        e = np.clip(t / 0.6, 0, 1) * np.clip((t[-1] - t) / 0.6, 0, 1)
        rot["RightArm"][:, 0] = 80 - 150 * e
        rot["RightForeArm"][:, 0] = e * (20 + 25 * np.sin(2 * np.pi * 2 * t))
    elif name == "squat":
        d = 0.5 - 0.5 * np.cos(2 * np.pi * 0.4 * t)
        rot["LeftUpLeg"][:, 1] = rot["RightUpLeg"][:, 1] = -95 * d
        rot["LeftLeg"][:, 1] = rot["RightLeg"][:, 1] = 115 * d
        rot["LeftFoot"][:, 1] = rot["RightFoot"][:, 1] = -20 * d
        rot["Spine"][:, 1] = 25 * d
        rot["LeftArm"][:, 1] = rot["RightArm"][:, 1] = -80 * d
        root[:, 1] -= 42 * d
    elif name == "jumping_jacks":
        d = 0.5 - 0.5 * np.cos(2 * np.pi * 1.0 * t)
        rot["LeftArm"][:, 0] = -80 + 160 * d
        rot["RightArm"][:, 0] = 80 - 160 * d
        rot["LeftUpLeg"][:, 0] = 20 * d
        rot["RightUpLeg"][:, 0] = -20 * d
        root[:, 1] += 8 * np.clip(np.sin(4 * np.pi * t), 0, None)
    elif name == "kick":
        k = np.exp(-0.5 * ((t - t[-1] / 2) / 0.2) ** 2)
        rot["RightUpLeg"][:, 1] = -90 * k
        rot["RightLeg"][:, 1] = 60 * np.exp(-0.5 * ((t - t[-1] / 2 + 0.25) / 0.15) ** 2)
        rot["LeftArm"][:, 0] = -80 + 40 * k
        rot["RightArm"][:, 0] = 80 - 40 * k
    elif name == "bow":
        d = np.clip(np.sin(np.pi * t / t[-1]) * 1.4, 0, 1)
        rot["Hips"][:, 1] = 70 * d
        rot["LeftUpLeg"][:, 1] = rot["RightUpLeg"][:, 1] = -70 * d
    elif name == "arm_circles":
        ph = 2 * np.pi * 0.8 * t
        rot["LeftArm"][:, 0] = -10 + 20 * np.sin(ph)
        rot["RightArm"][:, 0] = 10 - 20 * np.sin(ph)
        rot["LeftArm"][:, 2] = rot["RightArm"][:, 2] = 30 * np.cos(ph)
    elif name == "spin":
        rot["Hips"][:, 2] = 360 * t / t[-1]
        rot["LeftArm"][:, 0], rot["RightArm"][:, 0] = -20.0, 20.0
        rot["LeftUpLeg"][:, 1] = -10 * np.clip(s, 0, None)
        rot["RightUpLeg"][:, 1] = -10 * np.clip(-s, 0, None)
    elif name == "reach_up":
        d = np.clip(np.sin(np.pi * t / t[-1]) * 1.3, 0, 1)
        rot["LeftArm"][:, 0] = -80 + 170 * d
        rot["RightArm"][:, 0] = 80 - 170 * d
        rot["Spine1"][:, 1] = -10 * d
    else:
        raise ValueError(f"name: unknown test clip {name!r}; expected one of {BVH_CLIPS}")
    return rot, root


BVH_CLIPS: tuple[str, ...] = ("walk", "run", "wave", "squat", "jumping_jacks", "kick", "bow",
                              "arm_circles", "spin", "reach_up")


def write_test_bvh(path: str | Path, name: str, seconds: float = 4.0) -> Path:
    """Write the hand-written test clip ``name`` (one of :data:`BVH_CLIPS`) as a BVH file."""
    t = np.arange(int(seconds * BVH_FPS)) / BVH_FPS
    rot, root = _prog(name, t)
    text = _bvh_text(rot, root)
    # Second pass: lift or lower the root so the lowest joint of every frame is on the floor
    # except while jumping (the programs' own vertical offsets above standing are kept).
    from ..data.bvh import bvh_positions, parse_bvh
    pos = bvh_positions(parse_bvh(text))
    lowest = pos[..., 1].min(1)
    airborne = np.maximum(root[:, 1] - _BVH_HIP_HEIGHT, 0.0)
    root[:, 1] += airborne - lowest
    path = Path(path)
    path.write_text(_bvh_text(rot, root))
    return path


def _bvh_text(rot: dict[str, np.ndarray], root: np.ndarray) -> str:
    children: dict[str | None, list[str]] = {}
    for n, p, _ in _BVH_JOINTS:
        children.setdefault(p, []).append(n)
    offsets = {n: o for n, _, o in _BVH_JOINTS}
    lines = ["HIERARCHY"]
    order: list[str] = []

    def emit(n: str, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if depth == 0 else 'JOINT'} mixamorig:{n}")
        lines.append(pad + "{")
        o = offsets[n]
        lines.append(f"{pad}  OFFSET {o[0]:.4f} {o[1]:.4f} {o[2]:.4f}")
        lines.append(f"{pad}  CHANNELS {6 if depth == 0 else 3} "
                     + ("Xposition Yposition Zposition " if depth == 0 else "")
                     + "Zrotation Xrotation Yrotation")
        order.append(n)
        for c in children.get(n, []):
            emit(c, depth + 1)
        if n not in children:
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET 0 -3 5", pad + "  }"])
        lines.append(pad + "}")

    emit("Hips", 0)
    lines += ["MOTION", f"Frames: {len(root)}", f"Frame Time: {1 / BVH_FPS:.8f}"]
    for i in range(len(root)):
        vals = list(root[i])
        for n in order:
            vals += list(rot[n][i])
        lines.append(" ".join(f"{v:.4f}" for v in vals))
    return "\n".join(lines) + "\n"


# --- leave one family out -------------------------------------------------------------------
def family_split(root: str | Path, family: str, out: str | Path) -> dict[str, int]:
    """Write into ``out`` a dataset folder over the generated dataset ``root`` (its motion
    folders linked, not copied) that leaves out ``family``: ``train.txt`` / ``val.txt`` without
    any motion that contains one of the family's actions, ``heldout.txt`` = the family's test
    motions, ``indist.txt`` = the other test motions; Mean/Std recomputed over the new train
    split. Returns the split sizes."""
    from ..data.synthetic import FAMILIES, MANIFEST, write_stats
    root, out = Path(root), Path(out)
    man = json.loads((root / MANIFEST).read_text())
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {sorted(FAMILIES)}, got {family!r}")
    if "motions" not in man:
        raise ValueError(f"root: {root} was written by a generator without per-motion actions "
                         "(version < 3); regenerate it")
    acts = set(FAMILIES[family])
    has = {n: bool(acts & set(a)) for n, a in man["motions"].items()}
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("new_joint_vecs", "new_joints", "texts"):
        if not (out / sub).exists():
            os.symlink((root / sub).resolve(), out / sub)
    splits = {s: (root / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    lists = {"train": [n for n in splits["train"] if not has[n]],
             "val": [n for n in splits["val"] if not has[n]],
             "test": splits["test"],
             "heldout": [n for n in splits["test"] if has[n]],
             "indist": [n for n in splits["test"] if not has[n]]}
    for s, lst in lists.items():
        (out / f"{s}.txt").write_text("".join(n + "\n" for n in lst))
    write_stats(out, [np.load(root / "new_joint_vecs" / f"{n}.npy") for n in lists["train"]])
    return {s: len(v) for s, v in lists.items()}


def split_roundtrip(tokenizer, root: str | Path, split: str) -> dict:
    """Round-trip metrics of every motion listed in ``root/split.txt`` (RAW features)."""
    root = Path(root)
    names = (root / f"{split}.txt").read_text().split()
    feats = [np.load(root / "new_joint_vecs" / f"{n}.npy") for n in names]
    res = features_roundtrip_metrics(tokenizer, [f for f in feats if f.shape[0] >= 4])
    res.pop("per_clip")
    return res


def bvh_roundtrip(tokenizer, folder: str | Path, clips: tuple[str, ...] = BVH_CLIPS) -> dict:
    """Write the hand-written BVH clips into ``folder``, import them (``load_bvh``, then
    :func:`rvqfast.motion.retarget`, as ``import-bvh`` does) and round-trip them."""
    from ..data.bvh import load_bvh
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    joints = [load_bvh(write_test_bvh(folder / f"{c}.bvh", c)) for c in clips]
    res = roundtrip_metrics(tokenizer, joints)
    res["per_clip"] = {c: m for c, m in zip(clips, res["per_clip"])}
    return res


def lofo_experiment(data_root: str | Path, family: str | None, out: str | Path, *,
                    steps: int, model: str = "posecode_rvq", preset: str = "default", seed: int = 0,
                    num_threads: int = 1, overrides: dict | None = None) -> dict:
    """Train ``model`` (``preset``, ``steps``) without ``family`` (None: on everything) into
    ``out/run`` and measure round trips on the family's test motions (``heldout``), the
    other test motions (``indist``) and the hand-written BVH clips (``bvh``)."""
    from ..models.tokenizer import MotionTokenizer
    from ..train import build_config, train
    out = Path(out)
    split_dir = out / "data"
    sizes = family_split(data_root, family or "sweeps", split_dir)
    if family is None:  # train on everything: restore the full train/val lists and stats
        from ..data.synthetic import write_stats
        for s in ("train", "val"):
            (split_dir / f"{s}.txt").write_text((Path(data_root) / f"{s}.txt").read_text())
        names = (split_dir / "train.txt").read_text().split()
        write_stats(split_dir, [np.load(Path(data_root) / "new_joint_vecs" / f"{n}.npy") for n in names])
        sizes["train"] = len(names)
        sizes["val"] = len((split_dir / "val.txt").read_text().split())
    run = out / "run"
    if not (run / "model.safetensors").is_file():
        cfg = build_config(preset, None, {"data": str(split_dir), "out": str(run), "steps": steps,
                                          "model": model, "seed": seed, "num_threads": num_threads,
                                          "gif": False, **(overrides or {})})
        train(cfg, progress=False)
    tok = MotionTokenizer.load(run).eval()
    return {"family": family, "steps": steps, "model": model, "preset": preset,
            "overrides": overrides or {}, "splits": sizes,
            "heldout": split_roundtrip(tok, split_dir, "heldout"),
            "indist": split_roundtrip(tok, split_dir, "indist"),
            "bvh": bvh_roundtrip(tok, out / "bvh")}
