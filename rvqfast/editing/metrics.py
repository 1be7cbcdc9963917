"""Measures of one edit: does it take effect, does it leave the rest alone, is it natural.

Pose-code rates compare codes re-extracted (every motion frame) from the decoded edited motion
with those of the decoded *unedited* reconstruction, so reconstruction error is not counted
against the edit. Slots are split with the coupling table (``POSECODE_SLOT_JOINTS``) and the
solver's kinematics (:func:`rvqfast.editing.solver.edit_coupled_slots`): *coupled* slots read a
joint that a requested slot reads or that the edit moves (the limb distal of the rotated
bones; they may have to change), *unrelated* slots read none (they should keep their
categories).

Naturalness (joints in metres, 20 fps): bone-length error against the input motion's own
bone lengths (mm), foot skating (mean horizontal speed of a foot joint while it is within
5 cm of the floor, cm/s), jerk (mean |third difference|, m/s^3) and, for windowed edits, the
acceleration at the window borders (m/s^2) beside the reconstruction's.
"""
from __future__ import annotations

import numpy as np
import torch

from rvqfast.motion.features import features_to_joints
from rvqfast.motion.posecodes import POSECODE_SLOTS, category_index, coupled_slots, posecode_indices
from rvqfast.motion.skeleton import FPS, frame_bone_lengths

from .solver import edit_coupled_slots

FOOT_JOINTS = (7, 8, 10, 11)
SKATE_HEIGHT_M = 0.05
BORDER_FRAMES = 3
FRAMES_PER_TOKEN = 4


def _joints(features: np.ndarray) -> np.ndarray:
    return np.asarray(features_to_joints(torch.from_numpy(np.asarray(features, np.float32))), np.float64)


def _codes(joints: np.ndarray) -> np.ndarray:
    return posecode_indices(joints)


def bone_length_error_mm(joints: np.ndarray, reference: np.ndarray) -> float:
    """Mean |bone length - the reference motion's median length| in mm."""
    ref = np.median(frame_bone_lengths(reference), axis=0)
    return float(np.abs(frame_bone_lengths(joints) - ref).mean() * 1000.0)


def foot_skating_cm_s(joints: np.ndarray) -> float:
    """Mean horizontal speed (cm/s) of ankles/toes on frames where they are within 5 cm of the
    floor (the lowest joint of the motion)."""
    if joints.shape[0] < 2:
        return 0.0
    feet = joints[:, list(FOOT_JOINTS)]
    h = feet[..., 1] - joints[..., 1].min()
    v = np.linalg.norm(feet[1:, :, [0, 2]] - feet[:-1, :, [0, 2]], axis=-1) * FPS * 100.0
    low = (h[1:] < SKATE_HEIGHT_M) & (h[:-1] < SKATE_HEIGHT_M)
    return float(v[low].mean()) if low.any() else 0.0


def jerk_m_s3(joints: np.ndarray) -> float:
    """Mean magnitude of the third time difference of joint positions (m/s^3)."""
    if joints.shape[0] < 4:
        return 0.0
    d3 = joints[3:] - 3 * joints[2:-1] + 3 * joints[1:-2] - joints[:-3]
    return float(np.linalg.norm(d3, axis=-1).mean() * FPS ** 3)


def accel_at(joints: np.ndarray, frames) -> float:
    """Mean joint acceleration magnitude (m/s^2) at the given frames (second difference)."""
    a = np.linalg.norm(joints[2:] - 2 * joints[1:-1] + joints[:-2], axis=-1) * FPS ** 2
    ids = [f - 1 for f in frames if 1 <= f < joints.shape[0] - 1]
    return float(a[ids].mean()) if ids else 0.0


def border_frames(frames: range, num_frames: int, width: int = BORDER_FRAMES) -> list[int]:
    """Frames within ``width`` of the edges of ``frames`` (empty for a whole-motion edit)."""
    out = []
    for b in (frames.start, frames.stop):
        if 0 < b < num_frames:
            out += list(range(max(0, b - width), min(num_frames, b + width)))
    return sorted(set(out))


def edit_metrics(res, input_features: np.ndarray) -> dict:
    """All measures of an :class:`~rvqfast.editing.apply.EditResult` (see module docstring)."""
    j_in = _joints(input_features)
    j_out, j_rec = _joints(res.features), _joints(res.reconstruction)
    c_out, c_rec, c_in = _codes(j_out), _codes(j_rec), _codes(j_in)
    # Without a solved pose (token-only bank edits) the codes asked of the decoder stand in.
    c_tgt = (_codes(_joints(res.target)) if res.target is not None
             else np.repeat(res.categories, FRAMES_PER_TOKEN, axis=0)[: j_out.shape[0]])
    fr = np.arange(res.frames.start, res.frames.stop)
    req = np.array([POSECODE_SLOTS.index(s) for s in res.requested])
    tgt = np.array([category_index(s, lab) for s, lab in res.requested.items()])
    coupled = np.array([POSECODE_SLOTS.index(s) for s in edit_coupled_slots(res.requested)], dtype=int)
    unrelated = np.setdiff1d(np.arange(len(POSECODE_SLOTS)), np.concatenate([req, coupled]))
    # The narrower reading of "unrelated" (shares no joint with a requested slot, even if the
    # edit moves it, like the foot of a bent knee), kept for comparison with earlier results.
    sharing = np.array([POSECODE_SLOTS.index(s) for s in coupled_slots(list(res.requested))], dtype=int)
    not_sharing = np.setdiff1d(np.arange(len(POSECODE_SLOTS)), np.concatenate([req, sharing]))
    t = j_out.shape[0]
    outside = np.flatnonzero(res.weights == 0)
    out = {
        "success": float((c_out[np.ix_(fr, req)] == tgt).mean()),
        "pre_edit_success": float((c_rec[np.ix_(fr, req)] == tgt).mean()),
        "input_success": float((c_in[np.ix_(fr, req)] == tgt).mean()),
        "solved_success": float((c_tgt[np.ix_(fr, req)] == tgt).mean()),
        "unrelated_preservation": float((c_out[np.ix_(fr, unrelated)] == c_rec[np.ix_(fr, unrelated)]).mean()),
        "unshared_preservation": float((c_out[np.ix_(fr, not_sharing)] == c_rec[np.ix_(fr, not_sharing)]).mean()),
        "coupled_change": float((c_out[np.ix_(fr, coupled)] != c_rec[np.ix_(fr, coupled)]).mean()) if coupled.size else 0.0,
        "coupled_consistency": float((c_out[np.ix_(fr, coupled)] == c_tgt[np.ix_(fr, coupled)]).mean()) if coupled.size else 1.0,
        "outside_preservation": float((c_out[outside] == c_rec[outside]).mean()) if outside.size else None,
        "bone_length_error_mm": bone_length_error_mm(j_out, j_in),
        "bone_length_error_mm_recon": bone_length_error_mm(j_rec, j_in),
        "foot_skating_cm_s": foot_skating_cm_s(j_out),
        "foot_skating_cm_s_recon": foot_skating_cm_s(j_rec),
        "jerk_m_s3": jerk_m_s3(j_out),
        "jerk_m_s3_recon": jerk_m_s3(j_rec),
    }
    # The blend ramps and two frames either side of them: where a pop would show.
    ramp = np.flatnonzero((res.weights > 0) & (res.weights < 1))
    border = sorted({int(f) + d for f in ramp for d in range(-2, 3) if 0 <= f + d < t}
                    | set(border_frames(res.frames, t)))
    if border:
        out["border_accel_m_s2"] = accel_at(j_out, border)
        out["border_accel_m_s2_recon"] = accel_at(j_rec, border)
    return out


__all__ = ["accel_at", "bone_length_error_mm", "border_frames", "edit_metrics",
           "foot_skating_cm_s", "jerk_m_s3"]
