"""Retargeting raw joints to the canonical t2m skeleton (HumanML3D's "uniform skeleton" step).

A model trained on one skeleton should be fed that skeleton: a capture of a tall subject with
long arms otherwise reads as a different pose. :func:`retarget` keeps every bone's direction
from the input, frame by frame, and sets its length to the reference skeleton's
(``skeleton.REST_OFFSETS``); the root trajectory is scaled by the ratio of the reference's leg
length to the subject's, so a step of a short person stays a step of the same relative size.
The result is then put in HumanML3D's canonical place: the lowest joint over the whole motion
on the floor (y = 0), the root's x/z at the origin and the body facing +Z at frame 0.
"""
from __future__ import annotations

from typing import overload

import numpy as np
import torch

from .features import canonicalize
from .skeleton import NUM_JOINTS, REST_OFFSETS, check_joints, frame_bone_lengths, set_bone_lengths

# Bones whose lengths make up a leg (hip -> knee -> ankle), both sides.
_LEG_BONES = ((4, 7), (5, 8))  # (knee, ankle) children: bone = joint - parent
REFERENCE_BONE_LENGTHS: np.ndarray = np.linalg.norm(REST_OFFSETS, axis=-1)
REFERENCE_BONE_LENGTHS[0] = 0.0  # row 0 is the pelvis height, not a bone


def _leg_length(lengths: np.ndarray) -> float:
    """Mean hip->ankle chain length over both legs from per-bone lengths (22,)."""
    return float(np.mean([lengths[k] + lengths[a] for k, a in _LEG_BONES]))


REFERENCE_LEG_LENGTH: float = _leg_length(REFERENCE_BONE_LENGTHS)


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Per-joint length (22,) of the bone parent -> joint (median over frames; 0 for the root).
    The median keeps one bad mocap frame from deciding a subject's proportions."""
    out = np.zeros(NUM_JOINTS)
    out[1:] = np.median(frame_bone_lengths(check_joints(joints)), axis=0)
    return out


def _retarget_np(pos: np.ndarray, place: bool) -> np.ndarray:
    lengths = bone_lengths(pos)
    src_leg = _leg_length(lengths)
    if not src_leg > 1e-6:
        raise ValueError("joints: the legs have zero length (hip, knee and ankle coincide); "
                         "cannot scale the root to the reference skeleton")
    scale = REFERENCE_LEG_LENGTH / src_leg
    # Move every joint with the scaled root (bone directions unchanged), then set the lengths.
    moved = pos + (pos[:, :1] * (scale - 1.0))
    out = set_bone_lengths(moved, REFERENCE_BONE_LENGTHS[1:])
    return canonicalize(out) if place else out


def shared_skeleton(motions, tolerance_m: float = 0.005) -> np.ndarray | None:
    """The bone lengths (21,) that all ``motions`` share, or ``None`` if they do not.

    ``motions`` are joint arrays (T, 22, 3). Each motion's lengths are its per-bone medians
    (one bad frame does not count); they share a skeleton when every motion's lengths lie
    within ``tolerance_m`` of the median over motions, as after :func:`retarget` or in
    HumanML3D, whose motions are all retargeted to one subject's skeleton.
    """
    per_motion = np.stack([bone_lengths(j)[1:] for j in motions]) if len(motions) else np.zeros((0, NUM_JOINTS - 1))
    if per_motion.shape[0] == 0:
        raise ValueError("motions: expected at least one motion")
    common = np.median(per_motion, axis=0)
    if np.abs(per_motion - common).max() > tolerance_m or not (common > 0).all():
        return None
    return common


@overload
def retarget(joints: np.ndarray, *, place: bool = True) -> np.ndarray: ...
@overload
def retarget(joints: torch.Tensor, *, place: bool = True) -> torch.Tensor: ...


def retarget(joints, *, place: bool = True):
    """Joints (T, 22, 3) in metres, Y up, on any body -> the same motion on the canonical
    t2m skeleton.

    Bone directions are kept and bone lengths set to the reference skeleton's; the root
    trajectory (all three coordinates) is scaled by reference leg length / subject leg length
    (legs = hip -> knee -> ankle, median over frames). With ``place=True`` (default) the motion
    is then canonicalised as HumanML3D does: floor at y = 0 (lowest joint of the whole motion),
    root x/z at the origin and facing +Z at frame 0. Numpy input gives float64 numpy output;
    a torch tensor gives a tensor of its dtype and device (computed in float64 on the CPU; not
    differentiable).
    """
    if isinstance(joints, torch.Tensor):
        if joints.dim() != 3 or tuple(joints.shape[1:]) != (NUM_JOINTS, 3):
            raise ValueError(f"joints: expected shape (T, 22, 3), got {tuple(joints.shape)}")
        if not joints.is_floating_point():
            raise ValueError(f"joints: expected a floating dtype, got {joints.dtype}")
        arr = joints.detach().to("cpu", torch.float64).numpy()
        return torch.from_numpy(_retarget_np(check_joints(arr), place)).to(joints.device, joints.dtype)
    if not isinstance(joints, np.ndarray):
        raise TypeError(f"joints: expected a numpy array or torch.Tensor of shape (T, 22, 3), "
                        f"got {type(joints).__name__}")
    return _retarget_np(check_joints(joints), place)


__all__ = ["retarget", "bone_lengths", "shared_skeleton", "REFERENCE_BONE_LENGTHS", "REFERENCE_LEG_LENGTH"]
