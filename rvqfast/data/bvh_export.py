"""Joint positions -> BVH on the canonical 22-joint skeleton, with rotations solved from positions.

The written file is a standard text BVH (``HIERARCHY`` / ``MOTION``) that DCC tools (Blender,
MotionBuilder, Maya) read: centimetres, Y up, facing +Z in the rest pose, the root with
``Xposition Yposition Zposition Zrotation Yrotation Xrotation`` and every other joint with
``Zrotation Yrotation Xrotation`` (intrinsic ZYX Euler angles in degrees, applied in the listed
order). Joint names are the common mocap ones (Hips, LeftUpLeg, ..., LeftHand), which
:func:`rvqfast.data.bvh.load_bvh` and most retargeting tools map automatically.

The skeleton: by default (``skeleton="canonical"``) the bone lengths of the canonical t2m
skeleton (:data:`~rvqfast.motion.skeleton.REST_OFFSETS`) -- the lengths the datasets and
``import-bvh`` (:func:`rvqfast.motion.retarget.retarget`) give every motion, so all exports share
one set of bones. With ``skeleton="motion"`` the bones take the motion's own median lengths.
Rest directions are the canonical rest pose's, except for the children of the two branching
joints (pelvis, spine3), which keep the motion's frame-0 layout turned upright, so that one
rotation can place all of them. Each joint's
global rotation is then solved per frame: by orthogonal Procrustes (Kabsch) on the children at a
branching joint, otherwise as the smallest rotation that turns the parent's frame onto the bone
(no added twist). When the motion is rigid on that skeleton (the dataset's motions and
retargeted imports on the canonical one; any rigid motion with ``"motion"``) the BVH reproduces
every joint position to float precision; otherwise (a decoder's raw output, whose bone lengths
wobble) the difference remains and :func:`joints_to_bvh` reports the largest deviation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_write_text
from ..motion.skeleton import FPS, NUM_JOINTS, PARENTS, REST_OFFSETS, check_joints

BVH_JOINT_NAMES: list[str] = [
    "Hips", "LeftUpLeg", "RightUpLeg", "Spine", "LeftLeg", "RightLeg", "Spine1", "LeftFoot",
    "RightFoot", "Spine2", "LeftToeBase", "RightToeBase", "Neck", "LeftShoulder", "RightShoulder",
    "Head", "LeftArm", "RightArm", "LeftForeArm", "RightForeArm", "LeftHand", "RightHand",
]
CM_PER_M = 100.0
_CHILDREN: list[list[int]] = [[c for c, p in enumerate(PARENTS) if p == j] for j in range(NUM_JOINTS)]
# End-site lengths (metres) for leaf joints, along the parent bone: toe tip, head top, hand.
_END_SITE_M = {10: 0.05, 11: 0.05, 15: 0.10, 20: 0.08, 21: 0.08}


def _dfs_order() -> list[int]:
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(_CHILDREN[j]))
    return order


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotations R (F, 3, 3) minimising sum |R src_c - dst_c|^2; src (C, 3), dst (F, C, 3)."""
    h = np.einsum("ci,fcj->fij", src, dst)  # sum_c src_c dst_c^T
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("fji,fkj->fik", vt, u)))  # det(V U^T)
    d[d == 0] = 1.0
    fix = np.tile(np.eye(3), (len(d), 1, 1))
    fix[:, 2, 2] = d
    return np.einsum("fji,fjk,flk->fil", vt, fix, u)  # V diag(1,1,d) U^T


def _swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations (F, 3, 3) turning unit vectors a (F, 3) onto unit vectors b (F, 3)."""
    k = np.cross(a, b)
    c = np.einsum("fi,fi->f", a, b)
    kx = np.zeros(a.shape[:-1] + (3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx[:, 1, 0], kx[:, 2, 0], kx[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    opposite = c < -1 + 1e-9
    r = np.eye(3) + kx + kx @ kx / np.maximum(1 + c, 1e-9)[:, None, None]
    if opposite.any():  # half turn about any axis perpendicular to a
        ax = np.cross(a[opposite], [1.0, 0.0, 0.0])
        weak = np.linalg.norm(ax, axis=-1) < 1e-6
        ax[weak] = np.cross(a[opposite][weak], [0.0, 0.0, 1.0])
        ax = _unit(ax)
        r[opposite] = 2 * np.einsum("fi,fj->fij", ax, ax) - np.eye(3)
    return r


def _euler_zyx_deg(r: np.ndarray) -> np.ndarray:
    """(F, 3, 3) rotations R = Rz(z) Ry(y) Rx(x) -> (F, 3) degrees (z, y, x)."""
    sy = np.clip(-r[:, 2, 0], -1.0, 1.0)
    y = np.arcsin(sy)
    z = np.arctan2(r[:, 1, 0], r[:, 0, 0])
    x = np.arctan2(r[:, 2, 1], r[:, 2, 2])
    lock = np.abs(sy) > 1 - 1e-9  # gimbal lock: x and z share one axis; put it all in z
    z[lock] = np.arctan2(-r[lock, 0, 1], r[lock, 1, 1])
    x[lock] = 0.0
    return np.degrees(np.stack([z, y, x], -1))


SKELETONS = ("canonical", "motion")


def _rest_offsets(joints: np.ndarray, skeleton: str) -> np.ndarray:
    """Rest offsets (22, 3): bone lengths from the skeleton choice, directions from the canonical
    rest pose, except the children of the branching joints (see the module docstring)."""
    if skeleton == "motion":
        bone = joints[:, 1:] - joints[:, PARENTS[1:]]
        lengths = np.concatenate([[0.0], np.median(np.linalg.norm(bone, axis=-1), axis=0)])
    else:
        lengths = np.linalg.norm(REST_OFFSETS, axis=-1)
    offsets = _unit(REST_OFFSETS) * lengths[:, None]
    for j in range(NUM_JOINTS):
        kids = _CHILDREN[j]
        if len(kids) > 1:
            # The children's frame-0 directions (bones set to the chosen lengths), turned onto the
            # canonical directions as closely as a rotation can: upright, in the motion's layout.
            v0 = _unit(joints[0, kids] - joints[0, j]) * lengths[kids, None]
            r = _kabsch(v0, (_unit(REST_OFFSETS[kids]) * lengths[kids, None])[None])[0]
            offsets[kids] = v0 @ r.T
    offsets[0] = 0.0
    return offsets


def fit_skeleton(joints: np.ndarray, skeleton: str = "canonical") -> tuple[np.ndarray, np.ndarray]:
    """Rest offsets (22, 3) in metres and global joint rotations (T, 22, 3, 3) for ``joints``
    on the ``"canonical"`` skeleton or one with the ``"motion"``'s own proportions."""
    if skeleton not in SKELETONS:
        raise ValueError(f"skeleton: expected one of {SKELETONS}, got {skeleton!r}")
    t = joints.shape[0]
    offsets = _rest_offsets(joints, skeleton)
    glob = np.tile(np.eye(3), (t, NUM_JOINTS, 1, 1))
    for j in _dfs_order():
        kids = _CHILDREN[j]
        parent_r = glob[:, PARENTS[j]] if j else np.tile(np.eye(3), (t, 1, 1))
        if len(kids) > 1:
            glob[:, j] = _kabsch(offsets[kids], joints[:, kids] - joints[:, j, None])
        elif kids:
            c = kids[0]
            a = _unit(np.einsum("fij,j->fi", parent_r, offsets[c]))
            glob[:, j] = _swing(a, _unit(joints[:, c] - joints[:, j])) @ parent_r
        else:
            glob[:, j] = parent_r
    return offsets, glob


def forward_kinematics(root: np.ndarray, offsets: np.ndarray, glob: np.ndarray) -> np.ndarray:
    """Joint positions (T, 22, 3) from root positions (T, 3), offsets (22, 3), global rotations."""
    pos = np.zeros(glob.shape[:2] + (3,))
    pos[:, 0] = root
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        pos[:, j] = pos[:, p] + np.einsum("fij,j->fi", glob[:, p], offsets[j])
    return pos


def joints_to_bvh(joints: np.ndarray, *, fps: int = FPS, skeleton: str = "canonical") -> tuple[str, float]:
    """BVH text (centimetres) for ``joints`` (T, 22, 3) in metres, and the largest distance
    (metres) between an input joint and the same joint of the written skeleton."""
    joints = check_joints(joints, "joints")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps: expected a positive integer, got {fps!r}")
    offsets, glob = fit_skeleton(joints, skeleton)
    err = float(np.linalg.norm(forward_kinematics(joints[:, 0], offsets, glob) - joints, axis=-1).max())
    local = glob.copy()
    for j in range(1, NUM_JOINTS):
        local[:, j] = np.swapaxes(glob[:, PARENTS[j]], -1, -2) @ glob[:, j]
    order = _dfs_order()
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        o = offsets[j] * CM_PER_M
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {BVH_JOINT_NAMES[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {o[0]:.6f} {o[1]:.6f} {o[2]:.6f}")
        rot = "Zrotation Yrotation Xrotation"
        lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {rot}" if j == 0
                     else f"{pad}  CHANNELS 3 {rot}")
        for c in _CHILDREN[j]:
            emit(c, depth + 1)
        if not _CHILDREN[j]:
            e = _unit(REST_OFFSETS[j]) * _END_SITE_M[j] * CM_PER_M
            lines.extend([f"{pad}  End Site", f"{pad}  {{",
                          f"{pad}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}", f"{pad}  }}"])
        lines.append(f"{pad}}}")

    emit(0, 0)
    t = joints.shape[0]
    lines += ["MOTION", f"Frames: {t}", f"Frame Time: {1.0 / fps:.8f}"]
    euler = np.stack([_euler_zyx_deg(local[:, j]) for j in order], 1)  # (T, 22, 3)
    root = joints[:, 0] * CM_PER_M
    for f in range(t):
        vals = np.concatenate([root[f], euler[f].reshape(-1)])
        lines.append(" ".join(f"{v:.6f}" for v in vals))
    return "\n".join(lines) + "\n", err


def export_bvh(joints: np.ndarray, path: str | Path, *, fps: int = FPS, skeleton: str = "canonical") -> Path:
    """Write ``joints`` (T, 22, 3), metres, Y up, as a BVH file at ``path`` (centimetres).

    ``skeleton``: ``"canonical"`` (the t2m rig every dataset motion uses) or ``"motion"`` (the
    motion's own bone lengths). See the module docstring for the fit and the channel layout. The
    file is written atomically. Returns the path.
    """
    path = Path(path)
    if path.suffix.lower() != ".bvh":
        raise ValueError(f"path: expected a file name ending in .bvh, got {path.name!r}")
    text, _ = joints_to_bvh(joints, fps=fps, skeleton=skeleton)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


__all__ = ["BVH_JOINT_NAMES", "SKELETONS", "export_bvh", "fit_skeleton", "forward_kinematics", "joints_to_bvh"]
