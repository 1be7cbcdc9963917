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

from collections.abc import Mapping
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
_FEET = tuple(JOINT_INDEX[n] for n in ("left_ankle", "right_ankle", "left_foot", "right_foot"))
_PLANTED_M = 0.05
_LEG_BONES = [b for b, (_, c) in enumerate(BONES) if c in _LIMB_JOINTS["left_leg"] + _LIMB_JOINTS["right_leg"]]


def lowers_body(slots) -> bool:
    """True when ``slots`` (a mapping slot -> label or local category) puts a joint on the
    ground. Sinking the body would do that with every other joint pushed into the floor, which
    no decoder reproduces; the body has to kneel or crouch instead, so both legs may bend."""
    if not isinstance(slots, Mapping):
        return False
    return any(s.startswith("ground:") and v in ("on ground", 0) for s, v in slots.items())


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
    upper body at the pelvis. A mapping (slot -> label or local category) that puts a joint on the
    ground (:func:`lowers_body`) also moves both legs.
    """
    bones: set[int] = set(_LEG_BONES) if lowers_body(slots) else set()
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


def edit_coupled_slots(slots) -> list[str]:
    """Slots an edit of ``slots`` may have to change (other than ``slots``): those reading a
    joint the requested slots read or a joint the solver moves for them -- the edited limb
    distal of the rotated bones (bending a knee moves the foot, so the foot's ground,
    distance and position slots follow) -- and, when a ground slot lifts the body, every
    ground slot; when the upper body turns, every left/right and front/back slot (measured in
    the body frame). Given as a mapping slot -> label, a request that puts a joint on the
    ground moves both legs (:func:`movable_bones`), so both legs' slots are coupled. An angle or distance whose joints all move together under the same rotations
    keeps its value (turning the upper body leaves the elbow angle alone) and is not coupled.
    The other slots are *unrelated*: the edit should keep their categories."""
    bones = movable_bones(slots)
    slots = list(slots)
    read = {j for s in slots for j in POSECODE_SLOT_JOINTS[s]}
    moved = moved_joints(bones)
    lifted = any(s.startswith("ground:") for s in slots)
    trunk = any(BONES[b][1] == "spine1" for b in bones)

    def rotations_of(name: str) -> frozenset:
        return frozenset(b for b in bones if _SUBTREE_MASK[b, JOINT_INDEX[name]])

    out = []
    for s in POSECODE_SLOTS:
        if s in slots:
            continue
        joints = POSECODE_SLOT_JOINTS[s]
        kind = s.split(":")[0]
        # Ground heights follow a lift; left/right and front/back are measured in the body
        # frame, whose facing turns with the shoulders when the upper body moves.
        if (lifted and kind == "ground") or (trunk and kind in ("relpos_x", "relpos_z")):
            out.append(s)
            continue
        if not (read | moved) & set(joints):
            continue
        rigid = kind in ("angle", "distance") and not read & set(joints) \
            and len({rotations_of(j) for j in joints}) == 1
        if not rigid:
            out.append(s)
    return out


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


def apply_rotations(joints: Tensor, rotations: Tensor, bones: list[int], root_shift: Tensor | None = None) -> Tensor:
    """Rotate the subtrees of ``bones`` (parents first) by axis-angle ``rotations`` (F, len(bones), 3)
    about their pivots; ``root_shift`` (F, 3) moves the whole body. Bone lengths are unchanged."""
    j = joints
    for k, b in enumerate(sorted(bones)):
        pivot = j[:, JOINT_INDEX[BONES[b][0]]].unsqueeze(1)
        rot = _rodrigues(rotations[:, k])
        moved = pivot + (j - pivot) @ rot.transpose(-1, -2)
        j = torch.where(_SUBTREE_MASK[b].to(j.device).view(1, -1, 1), moved, j)
    if root_shift is not None:
        j = j + root_shift.unsqueeze(1)
    return j


@dataclass
class Solution:
    """Solver output for F frames."""

    joints: Tensor          # (F, 22, 3) the solved pose (full edit)
    rotations: Tensor       # (F, len(bones), 3) axis-angle per movable bone
    root_shift: Tensor      # (F, 3) shift of the body: vertical for ground slots, horizontal to keep feet planted
    bones: list[int]
    categories: Tensor      # (F, 70) re-extracted categories of the solved pose
    met: Tensor             # (F, R) bool: requested slot r holds in frame f

    def blended(self, joints: Tensor, weight: Tensor) -> Tensor:
        """Apply the edit scaled by per-frame ``weight`` (F,) in [0, 1] (smooth window borders)."""
        w = weight.to(joints.dtype)
        rot, shift = self.rotations.to(joints.dtype), self.root_shift.to(joints.dtype)
        return apply_rotations(joints, rot * w.view(-1, 1, 1), self.bones, shift * w.view(-1, 1))


def _lift(dy: Tensor) -> Tensor:
    """(F,) vertical shift -> (F, 3) body shift."""
    z = torch.zeros_like(dy)
    return torch.stack([z, dy, z], -1)


def _plant_feet(base: Tensor, edited: Tensor, smooth_mask: Tensor, weight: float, iters: int) -> Tensor:
    """(F, 3) horizontal body slide that keeps the feet planted in ``base`` from skating in
    ``edited``. Sliding the whole body changes no pose code (every slot is invariant under a
    horizontal translation), so it runs after the pose is solved and cannot undo the edit.
    A foot counts as planted where it is within 5 cm of the floor on consecutive frames both
    before and after the edit (a foot the edit lifts is free)."""
    feet = list(_FEET)
    low = []
    for m in (base, edited):  # planted before the edit and still on the floor after it
        h = m[:, feet, 1] - m[..., 1].min()
        low.append((h[1:] < _PLANTED_M) & (h[:-1] < _PLANTED_M))
    planted = (low[0] & low[1]).to(base.dtype) * smooth_mask.view(-1, 1)
    if not bool(planted.any()):
        return torch.zeros(base.shape[0], 3, dtype=base.dtype)
    # Extra foot motion the edit added on planted frames; the slide's steps should cancel it.
    extra = ((edited[1:, feet] - edited[:-1, feet]) - (base[1:, feet] - base[:-1, feet]))[..., [0, 2]].detach()
    xz = torch.zeros(base.shape[0], 2, dtype=base.dtype, requires_grad=True)
    opt = torch.optim.Adam([xz], lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / max(iters, 1))
    for _ in range(iters):
        step = (xz[1:] - xz[:-1]).unsqueeze(1)
        slip = step + extra
        ds = step.squeeze(1)
        loss = (weight * ((slip * slip).sum(-1) * planted).sum() + 10.0 * (xz * xz).sum()
                + 20.0 * ((ds * ds).sum(-1) * smooth_mask).sum())
        opt.zero_grad(set_to_none=True)
        (loss / base.shape[0]).backward()
        opt.step()
        sched.step()
    xz = xz.detach()
    return torch.stack([xz[:, 0], torch.zeros_like(xz[:, 0]), xz[:, 1]], -1)


def solve(joints: Tensor, targets: dict[str, int], *, segment_starts: Tensor | None = None,
          iters: int = 100, lr: float = 0.05, seed: int = 0, keep_weight: float = 1.0,
          coupled_keep_weight: float = 0.05, margin: float = 0.5, smooth_weight: float = 20.0,
          plant_weight: float = 1e5, floor_weight: float = 1e3) -> Solution:
    """Move ``joints`` (F, 22, 3) the least so that each slot of ``targets`` ({slot: local
    category}) holds, keeping other slots where possible.

    ``segment_starts`` (F,) bool marks frames that begin a new motion (no smoothness across).
    When the edit moves a leg, the body may also slide horizontally so that feet planted in
    ``joints`` (within 5 cm of the floor on consecutive frames) do not skate
    (``plant_weight``; 0 turns it off). ``floor_weight`` keeps every joint above the floor
    (the motion's lowest joint before the edit).
    """
    if joints.dim() != 3 or tuple(joints.shape[1:]) != (NUM_JOINTS, 3):
        raise ValueError(f"joints: expected shape (F, 22, 3), got {tuple(joints.shape)}")
    slots = list(targets)
    req = torch.tensor([POSECODE_SLOTS.index(s) for s in slots])
    tgt = torch.tensor([targets[s] for s in slots])
    bones = movable_bones(targets)
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
    # The floor of each motion is its lowest joint before the edit. No edit may push a joint
    # through it (straightening the knee of a squat must lift the foot, a joint is put on the
    # ground by kneeling onto it): the decoder never learnt such poses and would not follow.
    floor = torch.full((int(seg.max()) + 1 if f else 1,), float("inf"), dtype=dt)
    floor = floor.scatter_reduce(0, seg, j0[..., 1].amin(-1), reduce="amin")[seg] if f else floor[:0]
    for _ in range(iters):
        j = apply_rotations(j0, rot, bones, _lift(dy) if use_root else None)
        v = slot_values(j)
        viol = bin_violation(v[:, req], tgt_full[:, req], margin, req)
        keep = bin_violation(v, cur, 0.0) * keep_w
        loss = 10.0 * viol.sum() + keep.sum() + 0.1 * ((rot * rot).sum(-1) * cost).sum()
        if use_root:
            loss = loss + 10.0 * (dy * dy).sum()
        below = torch.relu(floor.view(-1, 1) - j[..., 1])
        loss = loss + floor_weight * (below * below).sum()
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
        shift = _lift(dy.detach())
    if plant_weight > 0 and f > 1 and any(_SUBTREE_MASK[b, list(_FEET)].any() for b in bones):
        shift = shift + _plant_feet(j0, apply_rotations(j0, rot.detach(), bones, shift), smooth_mask,
                                    plant_weight, iters)
    with torch.no_grad():
        j = apply_rotations(j0, rot, bones, shift)
        cats = values_to_indices(slot_values(j))
        met = cats[:, req] == tgt
    return Solution(joints=j.to(joints.dtype), rotations=rot.detach(), root_shift=shift, bones=bones,
                    categories=cats, met=met)


__all__ = ["BONES", "Solution", "apply_rotations", "edit_coupled_slots", "lowers_body", "movable_bones", "moved_joints", "solve", "NUM_SLOTS"]
