"""Limb-splice augmentation: training motions whose code combinations no single motion shows.

An edit asks the decoder for, say, a walk with the left knee held at 90 degrees. No training
motion shows that, so a decoder trained only on whole motions treats the 70 codes as a
fingerprint of the motion type and reproduces the walk. A spliced motion takes motion A and
replaces one limb (an arm or a leg) with motion B's limb, frame by frame: B's bone directions
in B's body frame are placed on A's limb root in A's body frame with A's bone lengths; a
frame whose spliced limb dips under the floor is lifted. The pool is built once at the start
of training (deterministic in the seed) and added to the training motions.
"""
from __future__ import annotations

import numpy as np

from rvqfast.motion.features import features_to_joints, joints_to_features
from rvqfast.motion.skeleton import FACE_JOINTS, JOINT_INDEX

LIMBS: dict[str, list[str]] = {
    "left_arm": ["left_shoulder", "left_elbow", "left_wrist"],
    "right_arm": ["right_shoulder", "right_elbow", "right_wrist"],
    "left_leg": ["left_hip", "left_knee", "left_ankle", "left_foot"],
    "right_leg": ["right_hip", "right_knee", "right_ankle", "right_foot"],
}


def _heading(j: np.ndarray) -> np.ndarray:
    r_hip, l_hip, r_sh, l_sh = FACE_JOINTS
    across = (j[:, r_hip] - j[:, l_hip]) + (j[:, r_sh] - j[:, l_sh])
    return np.arctan2(across[:, 2], -across[:, 0])  # angle of forward = up x across


def _rot_y(v: np.ndarray, theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x, y, z = v[:, 0:1], v[:, 1:2], v[:, 2:3]
    return np.concatenate([c * x + s * z, y, -s * x + c * z], axis=-1)


def splice_limb(a: np.ndarray, b: np.ndarray, limb: str) -> np.ndarray:
    """Joints of ``a`` (T, 22, 3) with ``limb`` posed as in ``b`` (T, 22, 3), lengths of ``a``."""
    chain = [JOINT_INDEX[n] for n in LIMBS[limb]]
    out = a.copy()
    # Rotating by (heading_a - heading_b) maps b's body frame onto a's.
    dtheta = _heading(a) - _heading(b)
    for p, c in zip(chain[:-1], chain[1:]):
        vb = _rot_y(b[:, c] - b[:, p], dtheta)
        la = np.linalg.norm(a[:, c] - a[:, p], axis=-1, keepdims=True)
        out[:, c] = out[:, p] + la * vb / np.maximum(np.linalg.norm(vb, axis=-1, keepdims=True), 1e-9)
    below = np.minimum(out[..., 1].min(-1), 0.0)
    out[..., 1] -= below[:, None]
    return out


def splice_pool(features: list[np.ndarray], count: int, seed: int, min_frames: int) -> list[np.ndarray]:
    """``count`` spliced motions (RAW features) from pairs of ``features`` with >= ``min_frames``
    frames; deterministic in ``seed``."""
    usable = [f for f in features if f.shape[0] >= min_frames + 1]
    if count <= 0 or len(usable) < 2:
        return []
    rng = np.random.default_rng([seed, 12])
    limbs = list(LIMBS)
    out = []
    for _ in range(count):
        i, k = rng.choice(len(usable), size=2, replace=False)
        fa, fb = usable[i], usable[k]
        t = min(fa.shape[0], fb.shape[0])
        sa = int(rng.integers(0, fa.shape[0] - t + 1))
        sb = int(rng.integers(0, fb.shape[0] - t + 1))
        ja = np.asarray(features_to_joints(fa[sa:sa + t].astype(np.float64)))
        jb = np.asarray(features_to_joints(fb[sb:sb + t].astype(np.float64)))
        j = splice_limb(ja, jb, limbs[int(rng.integers(len(limbs)))])
        out.append(joints_to_features(j))
    return out


__all__ = ["LIMBS", "splice_limb", "splice_pool"]
