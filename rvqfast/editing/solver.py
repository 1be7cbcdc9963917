"""Joint-space solver: the smallest limb rotation that puts requested pose codes in their bins.

An edit names categories for a few slots. Changing only those slots' codes contradicts their
kinematically coupled neighbours (the knee angle, the calf's verticality and the knee-foot
distances all describe one leg), so the decoder outvotes the change. Instead the solver moves
the pose: it rotates the bones of the body part the requested slots read (``POSECODE_SLOT_JOINTS``)
about their parent joints -- every bone length is kept -- by the least amount that brings each
requested slot value inside its bin (aiming at the bin centre, or half a bin inside an open
bin), while a hinge keeps every other slot in its current bin where it can. Re-extracting the 70
slots of the solved pose then gives a complete, consistent assignment: coupled slots change as
the geometry demands, unrelated ones keep their categories.

The objective is solved for all frames at once with Adam (a temporal smoothness term keeps
neighbouring frames' rotations alike), deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rvqfast.motion.posecodes import (
    NUM_SLOTS, POSECODE_SLOT_JOINTS, POSECODE_SLOTS, bin_violation, slot_values, values_to_indices,
)
from rvqfast.motion.skeleton import JOINT_INDEX, NUM_JOINTS, PARENTS

# Rotatable bones as (pivot, subtree root): rotating the subtree about the pivot keeps lengths.
BONES: list[tuple[str, str]] = [
    ("pelvis", "spine1"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("left_ankle", "left_foot"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("right_ankle", "right_foot"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
]
# Rotating the whole upper body is a bigger change than bending one limb: cost it higher.
_BONE_COST = {"spine1": 4.0}
_LIMB_JOINTS = {
    "left_leg": ("left_knee", "left_ankle", "left_foot"),
    "right_leg": ("right_knee", "right_ankle", "right_foot"),
    "left_arm": ("left_elbow", "left_wrist"),
    "right_arm": ("right_elbow", "right_wrist"),
}
_DISTAL = {j for js in _LIMB_JOINTS.values() for j in js}


def _subtree(root: int) -> list[int]:
    out = [root]
    for j in range(NUM_JOINTS):
        a = PARENTS[j]
        while a >= 0:
            if a == root:
                out.append(j)
                break
            a = PARENTS[a]
    return sorted(set(out))


_SUBTREE_MASK = torch.zeros(len(BONES), NUM_JOINTS, dtype=torch.bool)
for _b, (_p, _c) in enumerate(BONES):
    _SUBTREE_MASK[_b, _subtree(JOINT_INDEX[_c])] = True


def movable_bones(slots) -> list[int]:
    """Indices into :data:`BONES` the solver may rotate for ``slots``.

    A slot that reads a limb joint beyond the hip/shoulder moves that limb's bones up to the
    joint; a slot that reads only trunk joints (pelvis, spine, neck, shoulders, hips) bends the
    upper body at the pelvis.
    """
    bones: set[int] = set()
    for s in slots:
        read = set(POSECODE_SLOT_JOINTS[s])
        distal = read & _DISTAL
        if distal:
            for b, (_, c) in enumerate(BONES):
                if c == "spine1":
                    continue
                if any(_SUBTREE_MASK[b, JOINT_INDEX[j]] for j in distal):
                    bones.add(b)
        else:
            bones.add(0)
    return sorted(bones)


def moved_joints(bones) -> set[str]:
    """Names of the joints that rotating ``bones`` can move."""
    from rvqfast.motion.skeleton import JOINT_NAMES
    return {JOINT_NAMES[j] for b in bones for j in range(NUM_JOINTS) if _SUBTREE_MASK[b, j]}


def _rodrigues(aa: Tensor) -> Tensor:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3)."""
    theta = torch.sqrt((aa * aa).sum(-1, keepdim=True) + 1e-12)
    k = aa / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    kmat = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], dim=-1).reshape(aa.shape[:-1] + (3, 3))
    s = torch.sin(theta).unsqueeze(-1)
    c = torch.cos(theta).unsqueeze(-1)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(kmat.shape)
    return eye + s * kmat + (1 - c) * (kmat @ kmat)


def apply_rotations(joints: Tensor, rotations: Tensor, bones: list[int], root_dy: Tensor | None = None) -> Tensor:
    """Rotate the subtrees of ``bones`` (parents first) by axis-angle ``rotations`` (F, len(bones), 3)
    about their pivots; ``root_dy`` (F,) lifts the whole body. Bone lengths are unchanged."""
    j = joints
    for k, b in enumerate(sorted(bones)):
        pivot = j[:, JOINT_INDEX[BONES[b][0]]].unsqueeze(1)
        rot = _rodrigues(rotations[:, k])
        moved = pivot + (j - pivot) @ rot.transpose(-1, -2)
        j = torch.where(_SUBTREE_MASK[b].to(j.device).view(1, -1, 1), moved, j)
    if root_dy is not None:
        j = j + torch.stack([torch.zeros_like(root_dy), root_dy, torch.zeros_like(root_dy)], -1).unsqueeze(1)
    return j


@dataclass
class Solution:
    """Solver output for F frames."""

    joints: Tensor          # (F, 22, 3) the solved pose (full edit)
    rotations: Tensor       # (F, len(bones), 3) axis-angle per movable bone
    root_dy: Tensor         # (F,) vertical shift of the body (ground slots only, else zeros)
    bones: list[int]
    categories: Tensor      # (F, 70) re-extracted categories of the solved pose
    met: Tensor             # (F, R) bool: requested slot r holds in frame f

    def blended(self, joints: Tensor, weight: Tensor) -> Tensor:
        """Apply the edit scaled by per-frame ``weight`` (F,) in [0, 1] (smooth window borders)."""
        w = weight.to(joints.dtype)
        rot, dy = self.rotations.to(joints.dtype), self.root_dy.to(joints.dtype)
        return apply_rotations(joints, rot * w.view(-1, 1, 1), self.bones, dy * w)


def solve(joints: Tensor, targets: dict[str, int], *, segment_starts: Tensor | None = None,
          iters: int = 100, lr: float = 0.05, seed: int = 0, keep_weight: float = 1.0,
          coupled_keep_weight: float = 0.05, margin: float = 0.5, smooth_weight: float = 20.0) -> Solution:
    """Move ``joints`` (F, 22, 3) the least so that each slot of ``targets`` ({slot: local
    category}) holds, keeping other slots where possible.

    ``segment_starts`` (F,) bool marks frames that begin a new motion (no smoothness across).
    """
    if joints.dim() != 3 or tuple(joints.shape[1:]) != (NUM_JOINTS, 3):
        raise ValueError(f"joints: expected shape (F, 22, 3), got {tuple(joints.shape)}")
    slots = list(targets)
    req = torch.tensor([POSECODE_SLOTS.index(s) for s in slots])
    tgt = torch.tensor([targets[s] for s in slots])
    bones = movable_bones(slots)
    use_root = any(s.startswith("ground:") for s in slots)
    # float32 is plenty for centimetre-scale geometry and twice as fast as float64.
    j0 = joints.detach().to(torch.float32)
    dt = j0.dtype
    f = j0.shape[0]
    with torch.no_grad():
        cur = values_to_indices(slot_values(j0))
    moved = moved_joints(bones)
    coupled = torch.tensor([bool(moved & set(POSECODE_SLOT_JOINTS[s])) for s in POSECODE_SLOTS])
    keep_w = torch.where(coupled, coupled_keep_weight, keep_weight).to(dt)
    keep_w[req] = 0.0
    cost = torch.tensor([_BONE_COST.get(BONES[b][1], 1.0) for b in bones], dtype=dt)
    g = torch.Generator().manual_seed(seed)
    # A small random start (exactly straight limbs / vertical bones are stationary points),
    # the same for every frame of a motion so it adds no jitter.
    seg = torch.zeros(f, dtype=torch.int64)
    if segment_starts is not None and f > 0:
        seg = torch.cumsum(segment_starts.to(torch.int64), 0) - int(segment_starts[0])
    noise = 0.02 * torch.randn(int(seg.max()) + 1 if f else 1, len(bones), 3, generator=g, dtype=dt)
    rot = noise[seg].clone().requires_grad_(True)
    dy = torch.zeros(f, dtype=dt, requires_grad=use_root)
    params = [rot] + ([dy] if use_root else [])
    opt = torch.optim.Adam(params, lr=lr)
    # Adam moves every parameter by ~lr per step whatever its gradient, so decay the rate to
    # zero: the last steps settle instead of dithering frame by frame.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / max(iters, 1))
    smooth_mask = torch.ones(max(f - 1, 0), dtype=dt)
    if segment_starts is not None and f > 1:
        smooth_mask = (~segment_starts[1:].bool()).to(dt)
    tgt_full = cur.clone()
    tgt_full[:, req] = tgt
    for _ in range(iters):
        j = apply_rotations(j0, rot, bones, dy if use_root else None)
        v = slot_values(j)
        viol = bin_violation(v[:, req], tgt_full[:, req], margin, req)
        keep = bin_violation(v, cur, 0.0) * keep_w
        loss = 10.0 * viol.sum() + keep.sum() + 0.1 * ((rot * rot).sum(-1) * cost).sum()
        if use_root:
            loss = loss + 10.0 * (dy * dy).sum()
        if f > 1:
            d = rot[1:] - rot[:-1]
            loss = loss + smooth_weight * ((d * d).sum((-1, -2)) * smooth_mask).sum()
            if use_root:
                loss = loss + 20.0 * (((dy[1:] - dy[:-1]) ** 2) * smooth_mask).sum()
        opt.zero_grad(set_to_none=True)
        (loss / f).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        j = apply_rotations(j0, rot, bones, dy if use_root else None)
        cats = values_to_indices(slot_values(j))
        met = cats[:, req] == tgt
    return Solution(joints=j.to(joints.dtype), rotations=rot.detach(), root_dy=dy.detach(), bones=bones,
                    categories=cats, met=met)


__all__ = ["BONES", "Solution", "apply_rotations", "movable_bones", "moved_joints", "solve", "NUM_SLOTS"]
