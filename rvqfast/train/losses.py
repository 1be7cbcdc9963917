"""Extra training objectives for the motion tokenizer.

:func:`posecode_consistency_loss` makes the decoder obey its pose codes: the pose codes are
thresholded functions of the joints, so the loss measures, for every decoded frame and every
one of the 70 slots, how far the decoded slot value (knee angle, hand distance, ...) lies
outside the bin of the input's category (:func:`rvqfast.motion.posecodes.bin_violation`, a
hinge in bin units with a small margin). It is zero when every decoded code is right and
pushes wrong slots back across their bin edges, which the plain feature regression weights no
more than any other small error.
"""
from __future__ import annotations

import torch
from torch import Tensor

from rvqfast.motion.features import RIC, ROOT_ROT_VEL, ROOT_Y
from rvqfast.motion.posecodes import bin_violation, slot_values, values_to_indices
from rvqfast.motion.skeleton import NUM_JOINTS, frame_bone_lengths

POSECODE_MARGIN = 0.1  # bin units kept clear of an edge


def local_joints(raw: Tensor) -> Tensor:
    """Joints (..., T, 22, 3) in each frame's heading frame from RAW features (..., T, 263).

    Root at x = z = 0 and its height from ROOT_Y, the others from RIC: no integration over
    time, and pose codes are invariant to the heading, so they equal those of the global joints.
    """
    ric = raw[..., RIC].reshape(raw.shape[:-1] + (NUM_JOINTS - 1, 3))
    y = raw[..., ROOT_Y]
    root = torch.stack([torch.zeros_like(y[..., 0]), y[..., 0], torch.zeros_like(y[..., 0])], dim=-1)
    return torch.cat([root.unsqueeze(-2), ric], dim=-2)


POSECODE_STRIDE = 2  # every 2nd frame: half the cost, and neighbouring frames are near-identical


def posecode_consistency_loss(model, x_norm: Tensor, y_norm: Tensor, margin: float = POSECODE_MARGIN,
                              stride: int = POSECODE_STRIDE) -> Tensor:
    """Mean bin violation of the decoded pose codes against the input's (both NORMALISED
    features (B, T, 263); ``model`` supplies ``denormalize``), on every ``stride``-th frame."""
    x_norm, y_norm = x_norm[:, ::stride], y_norm[:, ::stride]
    with torch.no_grad():
        target = values_to_indices(slot_values(local_joints(model.denormalize(x_norm))))
    values = slot_values(local_joints(model.denormalize(y_norm)))
    return bin_violation(values, target, margin).mean()


def bone_length_loss(model, x_norm: Tensor, y_norm: Tensor, stride: int = POSECODE_STRIDE) -> Tensor:
    """Mean |bone length of the decoded joints - the input's| in metres (both NORMALISED features
    (B, T, 263)), on every ``stride``-th frame.

    The feature regression scores each joint's position on its own, so nothing keeps a decoded
    limb its length; an edit asks for code combinations no motion shows, where that freedom costs
    most (issue 12: edited motions had 1 mm more bone-length error than reconstructions).
    """
    x_norm, y_norm = x_norm[:, ::stride], y_norm[:, ::stride]
    with torch.no_grad():
        ref = frame_bone_lengths(local_joints(model.denormalize(x_norm)))
    return (frame_bone_lengths(local_joints(model.denormalize(y_norm))) - ref).abs().mean()


def heading_drift_loss(model, x_norm: Tensor, y_norm: Tensor) -> Tensor:
    """Mean |heading of the decoded motion - the input's| in radians over each window (both
    NORMALISED features (B, T, 263)), headings integrated from the window's first frame.

    The feature regression weighs the rotation velocity as one dimension of 263 and frame by
    frame, but decoding integrates it: an error that is small per frame and of one sign turns
    every later frame, and with it every root-relative joint position.
    """
    dv = (model.denormalize(y_norm) - model.denormalize(x_norm))[..., ROOT_ROT_VEL]
    return (2.0 * torch.cumsum(dv[..., 0], dim=-1)).abs().mean()


__all__ = ["bone_length_loss", "heading_drift_loss", "posecode_consistency_loss", "local_joints", "POSECODE_MARGIN"]
