"""The HumanML3D 263-dimensional motion representation.

Layout per frame (``T`` input frames give ``T-1`` feature rows, row ``t`` describes frame ``t``):

=============  ==========  ==========================================================
slice          size        content
=============  ==========  ==========================================================
ROOT_ROT_VEL   1           half of the heading change (rad) from frame t to t+1
ROOT_LIN_VEL   2           root x/z displacement t -> t+1, in the heading frame of t+1
ROOT_Y         1           root height above the floor (m)
RIC            63          joints 1..21 relative to the root's x/z, in the heading frame
ROT6D          126         joints 1..21 local rotations, 6D (first two matrix columns)
LOCAL_VEL      66          all 22 joint displacements t -> t+1, in the heading frame of t
FOOT_CONTACT   4           left ankle, left toe, right ankle, right toe contact (0/1)
=============  ==========  ==========================================================

The half-angle convention for the root rotation velocity matches HumanML3D, so published
``new_joint_vecs`` files decode with :func:`features_to_joints` as with the reference code.

The 6D rotations come from our own swing-only inverse kinematics: for each joint the minimal
rotation taking the rest-pose direction of its reference bone (``skeleton.FIRST_CHILD``) to the
observed direction, expressed in the parent's frame. End effectors get the identity. They are
not used to recover joints (positions come from RIC), only as extra input features.
"""
from __future__ import annotations

from typing import overload

import numpy as np
import torch

from .skeleton import (
    FACE_JOINTS, FEATURE_DIM, FIRST_CHILD, FOOT_LEFT, FOOT_RIGHT, NUM_JOINTS, PARENTS,
    REST_OFFSETS, check_joints, set_bone_lengths,
)

ROOT_ROT_VEL = slice(0, 1)
ROOT_LIN_VEL = slice(1, 3)
ROOT_Y = slice(3, 4)
RIC = slice(4, 67)
ROT6D = slice(67, 193)
LOCAL_VEL = slice(193, 259)
FOOT_CONTACT = slice(259, 263)
local_positions_slice = RIC

# Published HumanML3D threshold on the squared per-frame foot displacement (m^2).
CONTACT_VEL_THRESHOLD = 0.002
# Our height gates (m) so a foot swinging slowly in the air is not called a contact.
CONTACT_HEIGHT_ANKLE = 0.15
CONTACT_HEIGHT_TOE = 0.10


def _heading_angle(pos: np.ndarray) -> np.ndarray:
    """Angle theta (T,) of the Y rotation that maps each frame's facing direction onto +Z."""
    r_hip, l_hip, r_sh, l_sh = FACE_JOINTS
    across = (pos[:, r_hip] - pos[:, l_hip]) + (pos[:, r_sh] - pos[:, l_sh])
    # forward = up x across = (az, 0, -ax); rotating by -atan2(fx, fz) brings it to +Z.
    return -np.arctan2(across[:, 2], -across[:, 0])


def _rot_y(points: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate points (..., 3) about +Y by theta (broadcast over leading dims)."""
    c, s = np.cos(theta), np.sin(theta)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([c * x + s * z, y, -s * x + c * z], axis=-1)


def canonicalize(joints: np.ndarray) -> np.ndarray:
    """Apply HumanML3D's normalisation: floor at y=0, root x/z at the origin and facing +Z
    at frame 0. Returns float64 (T, 22, 3); ``features_to_joints`` recovers exactly this
    (minus the last frame)."""
    pos = check_joints(joints).copy()
    pos[..., 1] -= pos[..., 1].min()
    pos[..., [0, 2]] -= pos[0, 0, [0, 2]]
    r_hip, l_hip, r_sh, l_sh = FACE_JOINTS
    across = (pos[0, r_hip] - pos[0, l_hip]) + (pos[0, r_sh] - pos[0, l_sh])
    if np.hypot(across[0], across[2]) < 1e-8:
        raise ValueError("joints: cannot find the facing direction at frame 0 "
                         "(hips and shoulders have no horizontal extent)")
    return _rot_y(pos, _heading_angle(pos[:1])[0])


def _rotation_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Minimal rotation matrices (..., 3, 3) taking unit vectors u to unit vectors v."""
    k = np.cross(u, v)
    c = (u * v).sum(-1)
    kx = np.zeros(k.shape[:-1] + (3, 3))
    kx[..., 0, 1], kx[..., 0, 2] = -k[..., 2], k[..., 1]
    kx[..., 1, 0], kx[..., 1, 2] = k[..., 2], -k[..., 0]
    kx[..., 2, 0], kx[..., 2, 1] = -k[..., 1], k[..., 0]
    denom = np.maximum(1.0 + c, 1e-9)[..., None, None]
    rot = np.eye(3) + kx + kx @ kx / denom
    # Antiparallel vectors: Rodrigues is singular; use a half turn about an axis normal to u.
    anti = c < -1.0 + 1e-6
    if anti.any():
        ua = u[anti] if u.ndim > 1 else np.broadcast_to(u, v[anti].shape)
        axis = np.cross(ua, np.array([1.0, 0.0, 0.0]))
        small = np.linalg.norm(axis, axis=-1) < 1e-6
        axis[small] = np.cross(ua[small], np.array([0.0, 0.0, 1.0]))
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        rot[anti] = 2.0 * axis[..., :, None] * axis[..., None, :] - np.eye(3)
    return rot


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-9)


def joint_rotations(pos: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Local rotation matrices (T, 22, 3, 3) from positions by swing-only IK (see module doc).
    ``theta`` is the per-frame heading angle (world -> heading frame)."""
    t = pos.shape[0]
    local = np.tile(np.eye(3), (t, NUM_JOINTS, 1, 1))
    glob = np.empty_like(local)
    c, s = np.cos(theta), np.sin(theta)
    # Root's parent frame is the heading frame: local->world is R_y(-theta).
    heading = np.zeros((t, 3, 3))
    heading[:, 0, 0], heading[:, 0, 2] = c, -s
    heading[:, 1, 1] = 1.0
    heading[:, 2, 0], heading[:, 2, 2] = s, c
    for j in range(NUM_JOINTS):
        parent_g = heading if PARENTS[j] < 0 else glob[:, PARENTS[j]]
        child = FIRST_CHILD[j]
        if child >= 0:
            rest_dir = _unit(REST_OFFSETS[child])
            d_world = _unit(pos[:, child] - pos[:, j])
            d_parent = np.einsum("tji,tj->ti", parent_g, d_world)
            local[:, j] = _rotation_between(np.broadcast_to(rest_dir, d_parent.shape), d_parent)
        glob[:, j] = parent_g @ local[:, j]
    return local


@overload
def joints_to_features(joints: torch.Tensor) -> torch.Tensor: ...
@overload
def joints_to_features(joints: np.ndarray) -> np.ndarray: ...


def joints_to_features(joints):
    """HumanML3D features (T-1, 263) float32 from joint positions (T, 22, 3) in metres, Y up.

    Numpy input gives a numpy array; a torch tensor gives a float32 tensor on its device
    (computed in float64 numpy on the CPU: not differentiable, unlike features_to_joints).
    """
    if isinstance(joints, torch.Tensor):
        if not joints.is_floating_point():
            raise ValueError(f"joints: expected a floating dtype, got {joints.dtype}")
        arr = joints.detach().to("cpu", torch.float64).numpy()
        return torch.from_numpy(joints_to_features(arr)).to(joints.device)
    pos = canonicalize(check_joints(joints, min_frames=2))
    t = pos.shape[0]
    theta = _heading_angle(pos)
    # Heading change wrapped to (-pi, pi] so a turn through +-180 deg integrates correctly.
    dtheta = np.angle(np.exp(1j * (theta[1:] - theta[:-1])))
    rot_vel = dtheta / 2.0

    root_vel = pos[1:, 0] - pos[:-1, 0]
    lin_vel = _rot_y(root_vel, theta[1:])[:, [0, 2]]
    root_y = pos[:-1, 0, 1:2]

    rel = pos.copy()
    rel[..., [0, 2]] -= pos[:, :1, [0, 2]]
    ric = _rot_y(rel, theta[:, None])[:-1, 1:].reshape(t - 1, -1)

    rots = joint_rotations(pos, theta)[:-1, 1:]
    rot6d = np.concatenate([rots[..., :, 0], rots[..., :, 1]], axis=-1).reshape(t - 1, -1)

    local_vel = _rot_y(pos[1:] - pos[:-1], theta[:-1, None]).reshape(t - 1, -1)

    def contacts(ids: tuple[int, int]) -> np.ndarray:
        vel2 = ((pos[1:, list(ids)] - pos[:-1, list(ids)]) ** 2).sum(-1)
        height = pos[:-1, list(ids), 1]
        gate = np.array([CONTACT_HEIGHT_ANKLE, CONTACT_HEIGHT_TOE])
        return ((vel2 < CONTACT_VEL_THRESHOLD) & (height < gate)).astype(np.float64)

    out = np.concatenate(
        [rot_vel[:, None], lin_vel, root_y, ric, rot6d, local_vel,
         contacts(FOOT_LEFT), contacts(FOOT_RIGHT)], axis=-1)
    assert out.shape[1] == FEATURE_DIM
    return out.astype(np.float32)


@overload
def features_to_joints(features: torch.Tensor) -> torch.Tensor: ...
@overload
def features_to_joints(features: np.ndarray) -> np.ndarray: ...


def features_to_joints(features):
    """Recover joint positions (..., T, 22, 3) from features (..., T, 263).

    Pure elementwise torch ops plus cumsum/cat/stack, so it is differentiable and exports to
    ONNX (opset 15). Numpy input gives numpy output. Positions come from the root velocities
    (integrated) and RIC; the 6D rotations and local velocities are not used.
    """
    if isinstance(features, np.ndarray):
        if not np.issubdtype(features.dtype, np.floating):
            raise ValueError(f"features: expected a floating dtype, got {features.dtype}")
        return features_to_joints(torch.from_numpy(features)).numpy()
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features: expected a torch.Tensor or np.ndarray, got {type(features).__name__}")
    if features.dim() < 2 or features.shape[-1] != FEATURE_DIM:
        raise ValueError(f"features: expected shape (..., T, {FEATURE_DIM}), got {tuple(features.shape)}")
    rot_vel = features[..., 0]
    incl = torch.cumsum(rot_vel, dim=-1)
    theta = 2.0 * (incl - rot_vel)          # heading at frame t (exclusive cumsum)
    theta_next = 2.0 * incl                 # heading at frame t+1
    lx, lz = features[..., 1], features[..., 2]
    cn, sn = torch.cos(theta_next), torch.sin(theta_next)
    # Root step t -> t+1 back to world (inverse of R_y(theta_{t+1})), then integrate.
    wx = lx * cn - lz * sn
    wz = lx * sn + lz * cn
    rx = torch.cumsum(wx, dim=-1) - wx
    rz = torch.cumsum(wz, dim=-1) - wz
    ry = features[..., 3]

    ric = features[..., 4:67].reshape(features.shape[:-1] + (NUM_JOINTS - 1, 3))
    c = torch.cos(theta).unsqueeze(-1)
    s = torch.sin(theta).unsqueeze(-1)
    px, py, pz = ric[..., 0], ric[..., 1], ric[..., 2]
    jx = px * c - pz * s + rx.unsqueeze(-1)
    jz = px * s + pz * c + rz.unsqueeze(-1)
    body = torch.stack([jx, py, jz], dim=-1)
    root = torch.stack([rx, ry, rz], dim=-1).unsqueeze(-2)
    return torch.cat([root, body], dim=-2)


def features_with_bone_lengths(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Features (..., T, 263) whose joints (``RIC``) have the bone ``lengths`` (21,), directions kept.

    The bones are re-chained from the root (:func:`~rvqfast.motion.skeleton.set_bone_lengths`)
    in the heading frame the RIC block is stored in: a rotation about Y and a shift of the
    origin keep lengths, so this equals setting the lengths of :func:`features_to_joints`'
    output. Only ``RIC`` changes; the root, rotations, velocities and contacts are kept.
    Differentiable; exports to ONNX with elementary ops.
    """
    if not isinstance(features, torch.Tensor) or features.dim() < 2 or features.shape[-1] != FEATURE_DIM:
        raise ValueError(f"features: expected a tensor of shape (..., T, {FEATURE_DIM}), got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}")
    ric = features[..., RIC].reshape(features.shape[:-1] + (NUM_JOINTS - 1, 3))
    y = features[..., ROOT_Y]
    root = torch.cat([torch.zeros_like(y), y, torch.zeros_like(y)], dim=-1).unsqueeze(-2)
    local = set_bone_lengths(torch.cat([root, ric], dim=-2), lengths)
    body = local[..., 1:, :].reshape(features.shape[:-1] + (RIC.stop - RIC.start,))
    return torch.cat([features[..., :RIC.start], body, features[..., RIC.stop:]], dim=-1)
