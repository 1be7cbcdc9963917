"""Deterministic generator of the embedded default dataset (HumanML3D layout), version 4.

A motion is one to three action segments with minimum-jerk transitions between them. An
action is one of the scripted everyday actions (:mod:`.everyday`), a whole-body or floor
motion (:mod:`.wholebody`) or a range-of-motion sweep of independently moving body parts,
standing or (since version 4) lying on the floor (:mod:`.sweeps`). Each motion is made on a
subject with its own proportions (Euler angles -> forward kinematics, a root trajectory
integrated from speed, sideways speed and yaw rate, floor placement keeping the lowest joint on
y = 0 plus a lift term while airborne), then
retargeted to the canonical t2m skeleton (:func:`rvqfast.motion.retarget`), as HumanML3D does
with motion capture. Every motion is written twice, as is and mirrored left/right (HumanML3D's
"M" copies, captions with left and right swapped); both copies land in the same split.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...motion.features import features_to_joints, joints_to_features
from ...motion.retarget import retarget
from ...motion.skeleton import FEATURE_DIM, FPS
from .captions import SUBJECTS, caption_lines, mirror_caption
from .everyday import _NEEDS_OFFSETS, EVERYDAY
from .kinematics import (
    Segment, Y, _gaussian_smooth, _subject_offsets, forward_kinematics, minimum_jerk, mirror_joints,
)
from .sweeps import SWEEPS
from .wholebody import WHOLE_BODY

# Bump whenever generated files change: the default cache folder is named after it, so a stale
# cache from an older generator is regenerated instead of reused.
GENERATOR_VERSION = 4
MANIFEST = "rvqfast_dataset.json"
DEFAULT_N_MOTIONS = 3000
STD_EPS = 1e-3
MIRROR_PREFIX = "M"


def _with_offsets(fn):
    """Everyday actions that ignore proportions take (n, t, rng); give them the common
    (n, t, rng, offsets) signature."""
    return lambda n, t, rng, off: fn(n, t, rng)


ACTIONS = {
    **{name: (fn if name in _NEEDS_OFFSETS else _with_offsets(fn), d)
       for name, (fn, d) in EVERYDAY.items()},
    **WHOLE_BODY, **SWEEPS,
}
ACTION_NAMES = list(ACTIONS)
# Share of segments drawn from each group (uniform within a group).
GROUP_WEIGHTS = {"everyday": 0.45, "whole_body": 0.25, "sweeps": 0.30}
_GROUPS = {"everyday": list(EVERYDAY), "whole_body": list(WHOLE_BODY), "sweeps": list(SWEEPS)}
_P = np.array([GROUP_WEIGHTS[g] / len(_GROUPS[g]) for g in _GROUPS for _ in _GROUPS[g]])
_SAMPLED = [a for g in _GROUPS for a in _GROUPS[g]]

# Families of actions, for leave-one-family-out checks (every action is in exactly one).
FAMILIES: dict[str, list[str]] = {
    "locomotion": ["walk", "run", "jog", "walk_backwards", "crouch_walk", "side_step", "turn"],
    "jumps": ["jump", "jumping_jacks"],
    "lower_body": ["sit", "squat", "crouch", "kneel", "lunge", "split"],
    "arms": ["wave", "punch", "clap", "throw", "cross_arms", "raise_arms"],
    "kicks": ["kick", "spin_kick"],
    "trunk": ["side_bend", "twist", "bend_over", "reach_floor", "toe_touch"],
    "floor": ["crawl", "roll", "get_up", "lie_down"],
    "acrobatics": ["cartwheel", "handstand", "backflip"],
    "dance_idle": ["dance", "idle"],
    "sweeps": ["sweep", "floor_sweep"],
}
FAMILY_OF = {a: f for f, acts in FAMILIES.items() for a in acts}
assert sorted(FAMILY_OF) == sorted(ACTIONS), "every action needs exactly one family"


@dataclass
class Motion:
    joints: np.ndarray        # (T, 22, 3) world positions on the canonical skeleton, metres, Y up
    actions: list[str]
    captions: list[str]


def _transition(a: Segment, b: Segment, k: int) -> Segment:
    """k frames moving from a's last pose and drivers to b's first with a minimum-jerk profile."""
    w = minimum_jerk(np.arange(1, k + 1) / (k + 1))
    ang = a.ang[-1] + (b.ang[0] - a.ang[-1]) * w[:, None, None]
    drv = {key: getattr(a, key)[-1] + (getattr(b, key)[0] - getattr(a, key)[-1]) * w
           for key in ("speed", "lateral", "yaw_rate")}
    return Segment(ang, drv["speed"], drv["lateral"], drv["yaw_rate"], np.zeros(k))


def _chain(segs: list[Segment], rng: np.random.Generator) -> list[Segment]:
    parts = [segs[0]]
    for s in segs[1:]:
        prev = parts[-1]
        # Whole turns (a roll, a cartwheel) end 2*pi away from where they began: continue from
        # there instead of unwinding the turn in the transition.
        turns = np.round((prev.ang[-1, 0] - s.ang[0, 0]) / (2 * np.pi))
        s.ang[:, 0] += turns * 2 * np.pi
        parts.append(_transition(prev, s, int(rng.uniform(0.4, 0.8) * FPS)))
        parts.append(s)
    return parts


def generate_motion(seed: int, index: int, actions: list[str] | None = None) -> Motion:
    """One motion on the canonical skeleton, fully determined by (seed, index); ``actions``
    forces its sequence of actions (names from ``ACTIONS``) instead of drawing them."""
    rng = np.random.default_rng([seed, index])
    offsets = _subject_offsets(rng)
    u = rng.random()
    n_seg = 1 if u < 0.5 else 2 if u < 0.85 else 3
    names = [_SAMPLED[int(rng.choice(len(_SAMPLED), p=_P))] for _ in range(n_seg)]
    if actions is not None:
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown or not actions:
            raise ValueError(f"actions: expected a non-empty list of {ACTION_NAMES}, got {actions!r}")
        names, n_seg = list(actions), len(actions)
    segs = []
    for name in names:
        fn, (lo, hi) = ACTIONS[name]
        dur = rng.uniform(lo, hi) if n_seg == 1 else rng.uniform(lo, 0.5 * (lo + hi))
        n = max(int(round(dur * FPS)), 40)
        t = np.arange(n) / FPS
        segs.append(fn(n, t, rng, offsets))
    parts = _chain(segs, rng)
    ang = np.concatenate([s.ang for s in parts])
    drivers = np.stack([np.concatenate([getattr(s, k) for s in parts])
                        for k in ("speed", "lateral", "yaw_rate")], -1)
    ang = _gaussian_smooth(ang, 1.5)
    drivers = _gaussian_smooth(drivers, 2.0)
    speed, lateral, yaw_rate = drivers.T
    # Lift is smoothed less so that landings keep frames with the feet on the floor; the few
    # millimetres the smoothing leaves on those frames are dropped.
    lift = _gaussian_smooth(np.concatenate([s.lift for s in parts]), 1.0)
    lift = np.where(lift < 0.004, 0.0, lift)
    heading = rng.uniform(-np.pi, np.pi) + np.cumsum(yaw_rate) / FPS
    ang[:, 0, Y] += heading
    pos = forward_kinematics(ang, offsets)
    vx = speed * np.sin(heading) + lateral * np.cos(heading)
    vz = speed * np.cos(heading) - lateral * np.sin(heading)
    root = np.stack([np.cumsum(vx) / FPS, np.zeros_like(vx), np.cumsum(vz) / FPS], -1)
    root[:, 1] = -pos[..., 1].min(axis=1) + np.maximum(lift, 0.0)
    joints = retarget(pos + root[:, None, :])

    captions = []
    for k in range(3):
        subj = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
        phr = [segs[i].phrases[(k + i) % len(segs[i].phrases)] for i in range(n_seg)]
        glue = [" then ", " and then ", ", after that "][k]
        captions.append(f"{subj} {glue.join(phr)}".replace("  ", " ").strip())
    return Motion(joints.astype(np.float64), names, captions)


def mirror_motion(m: Motion) -> Motion:
    """The left/right mirror image of a motion, captions with the sides swapped."""
    return Motion(mirror_joints(m.joints), list(m.actions), [mirror_caption(c) for c in m.captions])


def split_names(names: list[str], seed: int) -> dict[str, list[str]]:
    """Deterministic ~80/5/15 train/val/test split."""
    order = np.random.default_rng([seed, 7]).permutation(len(names))
    n_val = max(1, round(0.05 * len(names)))
    n_test = max(1, round(0.15 * len(names)))
    test = sorted(names[i] for i in order[:n_test])
    val = sorted(names[i] for i in order[n_test:n_test + n_val])
    train = sorted(names[i] for i in order[n_test + n_val:])
    return {"train": train, "val": val, "test": test}


def write_stats(out: Path, train_features: list[np.ndarray]) -> None:
    """Mean.npy / Std.npy over the training features (std floored at STD_EPS)."""
    allf = np.concatenate(train_features, 0).astype(np.float64)
    np.save(out / "Mean.npy", allf.mean(0).astype(np.float32))
    np.save(out / "Std.npy", np.maximum(allf.std(0), STD_EPS).astype(np.float32))


def motion_names(n_motions: int) -> list[tuple[str, int, bool]]:
    """(file name, base index, mirrored) of the ``n_motions`` motions of a generated dataset:
    ceil(n/2) base motions and the mirrored copies of the first floor(n/2) of them."""
    n_base = (n_motions + 1) // 2
    out = [(f"{i:06d}", i, False) for i in range(n_base)]
    out += [(f"{MIRROR_PREFIX}{i:06d}", i, True) for i in range(n_motions // 2)]
    return out


def generate_dataset(out: str | Path, *, n_motions: int = DEFAULT_N_MOTIONS, seed: int = 0,
                     progress: bool = False) -> Path:
    """Write a synthetic HumanML3D-layout dataset into the folder ``out`` (created; must be
    empty or absent). Same (n_motions, seed) gives byte-identical files. The manifest lists
    every motion's actions (``motions``) and the action families (``families``)."""
    if not isinstance(n_motions, int) or isinstance(n_motions, bool) or n_motions < 3:
        raise ValueError(f"n_motions: expected an integer >= 3, got {n_motions!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"out: {out} exists and is not empty; choose a new folder")
    for sub in ("new_joints", "new_joint_vecs", "texts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    entries = motion_names(n_motions)
    base_splits = split_names([f"{i:06d}" for i in range((n_motions + 1) // 2)], seed)
    split_of = {b: k for k, lst in base_splits.items() for b in lst}
    splits: dict[str, list[str]] = {k: [] for k in base_splits}
    for name, i, _ in entries:
        splits[split_of[f"{i:06d}"]].append(name)
    train = set(splits["train"])
    train_feats, all_feats = [], []
    it = range((n_motions + 1) // 2)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="generating motions", unit="motion")
    action_counts: dict[str, int] = {}
    motion_actions: dict[str, list[str]] = {}
    for i in it:
        base = generate_motion(seed, i)
        copies = [(f"{i:06d}", base)]
        if i < n_motions // 2:
            copies.append((f"{MIRROR_PREFIX}{i:06d}", mirror_motion(base)))
        for name, m in copies:
            feats = joints_to_features(m.joints)
            joints = features_to_joints(feats)
            np.save(out / "new_joint_vecs" / f"{name}.npy", feats)
            np.save(out / "new_joints" / f"{name}.npy", joints.astype(np.float32))
            (out / "texts" / f"{name}.txt").write_text(caption_lines(m.captions))
            motion_actions[name] = list(m.actions)
            for act in m.actions:
                action_counts[act] = action_counts.get(act, 0) + 1
            all_feats.append(feats)
            if name in train:
                train_feats.append(feats)
    for split, lst in splits.items():
        (out / f"{split}.txt").write_text("".join(n + "\n" for n in sorted(lst)))
    (out / "all.txt").write_text("".join(n + "\n" for n, _, _ in entries))
    # A tiny set (a test's) may have no training motion left: then use them all for Mean/Std.
    write_stats(out, train_feats or all_feats)
    manifest = {
        "generator": "rvqfast.data.synthetic", "version": GENERATOR_VERSION, "seed": seed,
        "n_motions": n_motions, "fps": FPS, "feature_dim": FEATURE_DIM,
        "splits": {k: len(v) for k, v in splits.items()},
        "actions": dict(sorted(action_counts.items())),
        "families": FAMILIES,
        "motions": dict(sorted(motion_actions.items())),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out
