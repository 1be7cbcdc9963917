"""The HumanML3D "t2m" skeleton: 22 joints, Y up, metres, 20 frames per second.

The rest pose (``REST_OFFSETS``) is our own average-adult skeleton standing upright, facing +Z,
with the subject's left side on +X and the arms hanging down. It is used by the synthetic
generator and as the reference pose of the per-joint rotations stored in the features.
"""
from __future__ import annotations

import numpy as np
import torch

NUM_JOINTS: int = 22
FPS: int = 20
FEATURE_DIM: int = 263

JOINT_NAMES: list[str] = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
]
JOINT_INDEX: dict[str, int] = {n: i for i, n in enumerate(JOINT_NAMES)}

PARENTS: list[int] = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]

# Chains as used by HumanML3D's t2m plots: right leg, left leg, spine+head, right arm, left arm.
KINEMATIC_CHAIN: list[list[int]] = [
    [0, 2, 5, 8, 11],
    [0, 1, 4, 7, 10],
    [0, 3, 6, 9, 12, 15],
    [9, 14, 17, 19, 21],
    [9, 13, 16, 18, 20],
]

# Joints whose positions define the body's facing direction (HumanML3D face_joint_indx).
FACE_JOINTS: tuple[int, int, int, int] = (2, 1, 17, 16)  # r_hip, l_hip, r_shoulder, l_shoulder
FOOT_LEFT: tuple[int, int] = (7, 10)
FOOT_RIGHT: tuple[int, int] = (8, 11)

# Offset of each joint from its parent in the rest pose (metres); row 0 is the pelvis height.
REST_OFFSETS: np.ndarray = np.array(
    [
        [0.0, 0.92, 0.0],     # pelvis (standing height above the floor)
        [0.09, -0.06, 0.0],   # left_hip
        [-0.09, -0.06, 0.0],  # right_hip
        [0.0, 0.11, -0.01],   # spine1
        [0.0, -0.40, 0.0],    # left_knee
        [0.0, -0.40, 0.0],    # right_knee
        [0.0, 0.13, 0.0],     # spine2
        [0.0, -0.40, 0.0],    # left_ankle
        [0.0, -0.40, 0.0],    # right_ankle
        [0.0, 0.06, 0.02],    # spine3
        [0.0, -0.06, 0.12],   # left_foot (toes)
        [0.0, -0.06, 0.12],   # right_foot
        [0.0, 0.21, -0.02],   # neck
        [0.07, 0.12, 0.0],    # left_collar
        [-0.07, 0.12, 0.0],   # right_collar
        [0.0, 0.10, 0.04],    # head
        [0.11, 0.03, 0.0],    # left_shoulder
        [-0.11, 0.03, 0.0],   # right_shoulder
        [0.0, -0.27, 0.0],    # left_elbow
        [0.0, -0.27, 0.0],    # right_elbow
        [0.0, -0.25, 0.0],    # left_wrist
        [0.0, -0.25, 0.0],    # right_wrist
    ],
    dtype=np.float64,
)

# First child of every joint (-1 for end effectors); the bone joint->child defines the
# direction whose rotation is stored for that joint in the 6D features.
FIRST_CHILD: list[int] = [-1] * NUM_JOINTS
for _j, _p in enumerate(PARENTS):
    if _p >= 0 and FIRST_CHILD[_p] == -1:
        FIRST_CHILD[_p] = _j
# The pelvis and spine3 have several children; use the spine as their reference bone.
FIRST_CHILD[0] = 3
FIRST_CHILD[9] = 12


_BONE_PARENTS: list[int] = PARENTS[1:]


def frame_bone_lengths(joints):
    """(..., T, 21) length of every bone joint -> parent in every frame of joints (..., T, 22, 3).

    Takes a numpy array or a torch tensor and returns the same kind (differentiable for torch),
    so training losses, the edit fit and the metrics measure bones one way.
    """
    d = joints[..., 1:, :] - joints[..., _BONE_PARENTS, :]
    # torch's norm has a zero (not NaN) gradient at a zero-length bone
    return np.linalg.norm(d, axis=-1) if isinstance(d, np.ndarray) else d.norm(dim=-1)


def set_bone_lengths(joints, lengths):
    """Joints (..., 22, 3) with every bone's length set to ``lengths`` and its direction kept.

    ``lengths`` is (21,) or broadcastable to (..., 21), one per bone joint -> parent in t2m
    order. Joints are placed outwards from the root, which stays where it is: each child sits
    at its (already placed) parent plus the bone's unit direction times its length. A
    zero-length bone has no direction and takes the rest pose's.

    Why from the root rather than a least-squares fit of all joints: a decoder's joint errors
    are mostly independent per joint, so re-chaining the decoded bone directions keeps them and
    drops the length noise; on the default data this lowers the test split's root-relative
    error (see the README). Numpy in, numpy out; torch is differentiable and exports to ONNX
    with elementary ops only (no ``ReduceL2``).
    """
    if isinstance(joints, np.ndarray):
        return set_bone_lengths(torch.from_numpy(joints), torch.as_tensor(np.asarray(lengths))).numpy()
    if joints.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"joints: expected shape (..., {NUM_JOINTS}, 3), got {tuple(joints.shape)}")
    lengths = torch.as_tensor(lengths, dtype=joints.dtype, device=joints.device)
    if lengths.shape[-1] != NUM_JOINTS - 1:
        raise ValueError(f"lengths: expected {NUM_JOINTS - 1} bone lengths in the last dimension, "
                         f"got shape {tuple(lengths.shape)}")
    rest = torch.as_tensor(REST_OFFSETS[1:] / np.linalg.norm(REST_OFFSETS[1:], axis=-1, keepdims=True),
                           dtype=joints.dtype, device=joints.device)
    placed = [joints[..., 0, :]]
    for j in range(1, NUM_JOINTS):
        bone = joints[..., j, :] - joints[..., PARENTS[j], :]
        sq = (bone * bone).sum(-1, keepdim=True)
        unit = torch.where(sq > 1e-18, bone / torch.sqrt(sq.clamp(min=1e-18)), rest[j - 1])
        placed.append(placed[PARENTS[j]] + unit * lengths[..., j - 1:j])
    return torch.stack(placed, dim=-2)


def rest_pose() -> np.ndarray:
    """Return the (22, 3) rest-pose joint positions (feet on the floor, facing +Z)."""
    pos = np.zeros((NUM_JOINTS, 3))
    for j, p in enumerate(PARENTS):
        pos[j] = REST_OFFSETS[j] if p < 0 else pos[p] + REST_OFFSETS[j]
    return pos


def check_joints(joints: object, name: str = "joints", min_frames: int = 1) -> np.ndarray:
    """Validate a numpy (T, 22, 3) joint array and return it as float64."""
    if not isinstance(joints, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of shape (T, 22, 3), got {type(joints).__name__}")
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"{name}: expected shape (T, 22, 3), got {tuple(joints.shape)}")
    if joints.shape[0] < min_frames:
        raise ValueError(f"{name}: expected at least {min_frames} frames, got {joints.shape[0]}")
    if not np.issubdtype(joints.dtype, np.floating):
        raise ValueError(f"{name}: expected a floating dtype, got {joints.dtype}")
    if not np.isfinite(joints).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return joints.astype(np.float64, copy=False)
