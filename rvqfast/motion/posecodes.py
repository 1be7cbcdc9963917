"""Pose codes: the interpretable, per-frame discrete description of a pose (CoMo / PoseScript
style elementary posecodes).

70 slots, 392 categories in total, with CoMo's joint sets, order and thresholds:

* 4 joint angles (knees, elbows), 18 ordinal bins with edges 10, 20, ..., 170 degrees;
* 18 joint-pair distances, 10 bins with edges 0.1, 0.2, ..., 0.9 m;
* relative position of joint pairs along the body's X (left/right, 6 slots), Y (up/down,
  16 slots) and Z (front/back, 9 slots) axes, 3 categories each with a +-0.15 m dead zone;
* 13 body segments against the vertical axis: vertical (< 10 deg), oblique, horizontal (> 80 deg);
* 4 on-ground slots (knees, feet): height below 0.10 m.

Slot names read ``"kind:part"`` (``"angle:left_knee"``, ``"distance:left_hand-right_hand"``,
``"relpos_y:left_ankle-neck"``, ``"vertical:left_thigh"``, ``"ground:left_foot"``); a pair slot
compares ``first - second``. X and Z are measured in each frame's body frame (facing +Z from the
hip/shoulder across vector, as in HumanML3D), so the codes do not depend on where the person
faces. Virtual joints: a hand point 0.08 m beyond the wrist along the forearm (the 22-joint
skeleton has no hands), and the torso centre (mean of pelvis, spine3 and neck). Unlike
PoseScript's captioning there is no random threshold jitter: the codes are deterministic.
Binning sums comparisons against constant edges (angles compare cosines), so the code is
vectorised and ONNX-exportable (no atan2, no bucketize, no data-dependent control flow).
"""
from __future__ import annotations

import math
from typing import overload

import numpy as np
import torch

from .skeleton import FACE_JOINTS, JOINT_INDEX, NUM_JOINTS

HAND_EXTENSION_M = 0.08
# Virtual joints appended after the 22 real ones.
_VIRTUAL = ["left_hand", "right_hand", "torso"]
_IDX = dict(JOINT_INDEX)
_IDX.update({n: NUM_JOINTS + i for i, n in enumerate(_VIRTUAL)})

ANGLE_EDGES_DEG = [10.0 * k for k in range(1, 18)]
DISTANCE_EDGES_M = [0.1 * k for k in range(1, 10)]
RELPOS_THRESHOLD_M = 0.15
VERTICAL_EDGES_DEG = [10.0, 80.0]
GROUND_THRESHOLD_M = 0.10

# The tables below follow the published CoMo / PoseScript elementary posecode definitions:
# same joint sets, same order, same thresholds (without PoseScript's captioning jitter).
_ANGLES = [  # (name, a, vertex, b): the angle is measured at the vertex
    ("left_knee", "left_hip", "left_knee", "left_ankle"),
    ("right_knee", "right_hip", "right_knee", "right_ankle"),
    ("left_elbow", "left_shoulder", "left_elbow", "left_wrist"),
    ("right_elbow", "right_shoulder", "right_elbow", "right_wrist"),
]
_DISTANCES = [
    ("left_elbow", "right_elbow"), ("left_hand", "right_hand"), ("left_knee", "right_knee"),
    ("left_foot", "right_foot"), ("left_hand", "left_shoulder"), ("left_hand", "right_shoulder"),
    ("right_hand", "right_shoulder"), ("right_hand", "left_shoulder"),
    ("left_hand", "right_elbow"), ("right_hand", "left_elbow"),
    ("left_hand", "left_knee"), ("left_hand", "right_knee"),
    ("right_hand", "right_knee"), ("right_hand", "left_knee"),
    ("left_hand", "left_foot"), ("left_hand", "right_foot"),
    ("right_hand", "right_foot"), ("right_hand", "left_foot"),
]
# Joint pairs shared by the three relative-position operators, with the axes ("x", "y", "z")
# that have a slot for the pair; each axis keeps the pairs in this order.
_RELPOS_PAIRS = [
    ("left_shoulder", "right_shoulder", "yz"),
    ("left_elbow", "right_elbow", "yz"),
    ("left_hand", "right_hand", "xyz"),
    ("left_knee", "right_knee", "yz"),
    ("neck", "pelvis", "xz"),
    ("left_ankle", "neck", "y"),
    ("right_ankle", "neck", "y"),
    ("left_hip", "left_knee", "y"),
    ("right_hip", "right_knee", "y"),
    ("left_hand", "left_shoulder", "xy"),
    ("right_hand", "right_shoulder", "xy"),
    ("left_foot", "left_hip", "xy"),
    ("right_foot", "right_hip", "xy"),
    ("left_wrist", "neck", "y"),
    ("right_wrist", "neck", "y"),
    ("left_hand", "left_hip", "y"),
    ("right_hand", "right_hip", "y"),
    ("left_hand", "torso", "z"),
    ("right_hand", "torso", "z"),
    ("left_foot", "torso", "z"),
    ("right_foot", "torso", "z"),
]
_REL_X = [(a, b) for a, b, axes in _RELPOS_PAIRS if "x" in axes]
_REL_Y = [(a, b) for a, b, axes in _RELPOS_PAIRS if "y" in axes]
_REL_Z = [(a, b) for a, b, axes in _RELPOS_PAIRS if "z" in axes]
_VERTICAL = [  # (name, from, to): the segment's angle to the vertical axis, folded to 0..90 deg
    ("left_thigh", "left_hip", "left_knee"), ("right_thigh", "right_hip", "right_knee"),
    ("left_calf", "left_knee", "left_ankle"), ("right_calf", "right_knee", "right_ankle"),
    ("left_upperarm", "left_shoulder", "left_elbow"),
    ("right_upperarm", "right_shoulder", "right_elbow"),
    ("left_forearm", "left_elbow", "left_wrist"), ("right_forearm", "right_elbow", "right_wrist"),
    ("left_backdiag", "pelvis", "left_shoulder"), ("right_backdiag", "pelvis", "right_shoulder"),
    ("torso", "pelvis", "neck"), ("hands", "left_hand", "right_hand"),
    ("feet", "left_foot", "right_foot"),
]
_GROUND = ["left_knee", "right_knee", "left_foot", "right_foot"]


def _angle_labels() -> list[str]:
    labels = ["completely bent"]
    labels += [f"bent {lo:.0f}-{lo + 10:.0f} deg" for lo in ANGLE_EDGES_DEG[:-1]]
    labels[-1] = "almost straight"  # 160-170 deg
    return labels + ["straight"]


def _distance_labels() -> list[str]:
    labels = ["touching (<0.1 m)"]
    labels += [f"{lo:.1f}-{lo + 0.1:.1f} m apart" for lo in DISTANCE_EDGES_M[:-1]]
    return labels + ["far apart (>0.9 m)"]


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _build_tables():
    slots: list[str] = []
    cats: list[tuple[str, str]] = []
    phrases: list[str] = []

    def add(slot: str, labels: list[str], phrase_of) -> None:
        slots.append(slot)
        for lab in labels:
            cats.append((slot, lab))
            phrases.append(phrase_of(lab))

    for name, *_ in _ANGLES:
        add(f"angle:{name}", _angle_labels(), lambda lab, n=name: f"{_pretty(n)}: {lab}")
    for a, b in _DISTANCES:
        add(f"distance:{a}-{b}", _distance_labels(),
            lambda lab, a=a, b=b: f"{_pretty(a)} and {_pretty(b)}: {lab}")
    for axis, pairs, labels in (
        ("x", _REL_X, ["right of", "x-aligned with", "left of"]),
        ("y", _REL_Y, ["below", "y-aligned with", "above"]),
        ("z", _REL_Z, ["behind", "z-aligned with", "in front of"]),
    ):
        for a, b in pairs:
            add(f"relpos_{axis}:{a}-{b}", labels,
                lambda lab, a=a, b=b: f"{_pretty(a)} {lab} {_pretty(b)}")
    for name, _, _ in _VERTICAL:
        add(f"vertical:{name}", ["vertical", "oblique", "horizontal"],
            lambda lab, n=name: f"{_pretty(n)}: {lab}")
    for name in _GROUND:
        add(f"ground:{name}", ["on ground", "off ground"], lambda lab, n=name: f"{_pretty(n)}: {lab}")
    return slots, cats, phrases


POSECODE_SLOTS, POSECODE_CATEGORIES, _PHRASES = _build_tables()
SLOT_SIZES: list[int] = [sum(1 for s, _ in POSECODE_CATEGORIES if s == slot) for slot in POSECODE_SLOTS]
SLOT_OFFSETS: list[int] = [sum(SLOT_SIZES[:i]) for i in range(len(SLOT_SIZES))]
NUM_SLOTS = len(POSECODE_SLOTS)
NUM_CATEGORIES = len(POSECODE_CATEGORIES)
assert (len(_REL_X), len(_REL_Y), len(_REL_Z)) == (6, 16, 9), (len(_REL_X), len(_REL_Y), len(_REL_Z))
assert NUM_SLOTS == 70 and NUM_CATEGORIES == 392, (NUM_SLOTS, NUM_CATEGORIES)
_SLOT_POS = {s: i for i, s in enumerate(POSECODE_SLOTS)}


def category_index(slot: str, label: str) -> int:
    """Local index of ``label`` within ``slot`` (e.g. ``("angle:right_elbow", "straight")``)."""
    if slot not in _SLOT_POS:
        raise ValueError(f"slot: unknown posecode slot {slot!r}; valid slots are e.g. "
                         f"{POSECODE_SLOTS[:3]} (see POSECODE_SLOTS, {NUM_SLOTS} in all)")
    s = _SLOT_POS[slot]
    labels = [lab for _, lab in POSECODE_CATEGORIES[SLOT_OFFSETS[s]:SLOT_OFFSETS[s] + SLOT_SIZES[s]]]
    if label not in labels:
        raise ValueError(f"label: {label!r} is not a category of slot {slot!r}; valid labels: {labels}")
    return labels.index(label)


def _ids(names) -> list[int]:
    return [_IDX[n] for n in names]


_ANG_A, _ANG_V, _ANG_B = (_ids(col) for col in zip(*[(a, v, b) for _, a, v, b in _ANGLES]))
_DIST_A, _DIST_B = (_ids(col) for col in zip(*_DISTANCES))
_RX_A, _RX_B = (_ids(col) for col in zip(*_REL_X))
_RY_A, _RY_B = (_ids(col) for col in zip(*_REL_Y))
_RZ_A, _RZ_B = (_ids(col) for col in zip(*_REL_Z))
_VA, _VB = (_ids(col) for col in zip(*[(a, b) for _, a, b in _VERTICAL]))
_GR = _ids(_GROUND)
# A bone's angle to the vertical exceeds e iff |cos| < cos(e); same for joint angles.
_ANGLE_COS = [math.cos(math.radians(e)) for e in ANGLE_EDGES_DEG]
_VERT_COS = [math.cos(math.radians(e)) for e in VERTICAL_EDGES_DEG]


def _bin_count(value: torch.Tensor, edges: list[float], greater: bool = True) -> torch.Tensor:
    """Number of edges that ``value`` exceeds (or, with greater=False, lies below)."""
    out = torch.zeros_like(value, dtype=torch.int64)
    for e in edges:
        out = out + ((value > e) if greater else (value < e)).to(torch.int64)
    return out


def _with_virtual(j: torch.Tensor) -> torch.Tensor:
    lw, rw = j[..., 20, :], j[..., 21, :]
    le, re = j[..., 18, :], j[..., 19, :]

    def ext(w, e):
        d = w - e
        n = torch.sqrt((d * d).sum(-1, keepdim=True) + 1e-12)
        return w + HAND_EXTENSION_M * d / n

    torso = (j[..., 0, :] + j[..., 9, :] + j[..., 12, :]) / 3.0
    return torch.cat([j, torch.stack([ext(lw, le), ext(rw, re), torso], dim=-2)], dim=-2)


def _posecode_indices_torch(joints: torch.Tensor) -> torch.Tensor:
    j = _with_virtual(joints)
    # Body frame per pose: forward f = up x across (horizontal), left l = up x f.
    r_hip, l_hip, r_sh, l_sh = FACE_JOINTS
    across = (j[..., r_hip, :] - j[..., l_hip, :]) + (j[..., r_sh, :] - j[..., l_sh, :])
    fx, fz = across[..., 2], -across[..., 0]
    fn = torch.sqrt(fx * fx + fz * fz + 1e-12)
    fx, fz = fx / fn, fz / fn
    lx, lz = fz, -fx

    def gather(idx):
        return j[..., idx, :]

    # Joint angles: compare cos(angle) against cos(edges); larger angle <=> smaller cosine.
    u = gather(_ANG_A) - gather(_ANG_V)
    v = gather(_ANG_B) - gather(_ANG_V)
    cosang = (u * v).sum(-1) / torch.sqrt((u * u).sum(-1) * (v * v).sum(-1) + 1e-12)
    angle_bin = _bin_count(cosang, _ANGLE_COS, greater=False)

    d = gather(_DIST_A) - gather(_DIST_B)
    dist_bin = _bin_count(torch.sqrt((d * d).sum(-1)), DISTANCE_EDGES_M)

    t = RELPOS_THRESHOLD_M
    dxp = gather(_RX_A) - gather(_RX_B)
    xb = _bin_count(dxp[..., 0] * lx.unsqueeze(-1) + dxp[..., 2] * lz.unsqueeze(-1), [-t, t])
    yb = _bin_count(gather(_RY_A)[..., 1] - gather(_RY_B)[..., 1], [-t, t])
    dzp = gather(_RZ_A) - gather(_RZ_B)
    zb = _bin_count(dzp[..., 0] * fx.unsqueeze(-1) + dzp[..., 2] * fz.unsqueeze(-1), [-t, t])

    bone = gather(_VB) - gather(_VA)
    vcos = torch.abs(bone[..., 1]) / torch.sqrt((bone * bone).sum(-1) + 1e-12)
    vert_bin = _bin_count(vcos, _VERT_COS, greater=False)

    ground_bin = (gather(_GR)[..., 1] >= GROUND_THRESHOLD_M).to(torch.int64)
    return torch.cat([angle_bin, dist_bin, xb, yb, zb, vert_bin, ground_bin], dim=-1)


@overload
def posecode_indices(joints: torch.Tensor) -> torch.Tensor: ...
@overload
def posecode_indices(joints: np.ndarray) -> np.ndarray: ...


def posecode_indices(joints):
    """Per-slot local category indices (..., 70) int64 from joints (..., 22, 3) in metres, Y up."""
    if isinstance(joints, np.ndarray):
        if not np.issubdtype(joints.dtype, np.floating):
            raise ValueError(f"joints: expected a floating dtype, got {joints.dtype}")
        return posecode_indices(torch.from_numpy(joints)).numpy()
    if not isinstance(joints, torch.Tensor):
        raise TypeError(f"joints: expected a torch.Tensor or np.ndarray, got {type(joints).__name__}")
    if joints.dim() < 2 or tuple(joints.shape[-2:]) != (NUM_JOINTS, 3):
        raise ValueError(f"joints: expected shape (..., 22, 3), got {tuple(joints.shape)}")
    if not joints.is_floating_point():
        raise ValueError(f"joints: expected a floating dtype, got {joints.dtype}")
    return _posecode_indices_torch(joints)


def indices_to_multihot(indices):
    """(..., 70) local indices -> (..., 392) bool multi-hot (numpy or torch)."""
    is_np = isinstance(indices, np.ndarray)
    idx = torch.as_tensor(indices, dtype=torch.int64)
    if idx.shape[-1] != NUM_SLOTS:
        raise ValueError(f"indices: expected last dimension {NUM_SLOTS}, got {tuple(idx.shape)}")
    sizes = torch.tensor(SLOT_SIZES, device=idx.device)
    if bool(((idx < 0) | (idx >= sizes)).any()):
        raise ValueError("indices: each entry must lie in [0, SLOT_SIZES[slot])")
    flat = idx + torch.tensor(SLOT_OFFSETS, device=idx.device)
    out = torch.zeros(idx.shape[:-1] + (NUM_CATEGORIES,), dtype=torch.bool, device=idx.device)
    out.scatter_(-1, flat, True)
    return out.numpy() if is_np else out


def extract_posecodes(joints):
    """Multi-hot pose codes (T, 392) bool from joints (T, 22, 3): exactly one per slot."""
    if isinstance(joints, (np.ndarray, torch.Tensor)) and joints.ndim != 3:
        raise ValueError(f"joints: expected shape (T, 22, 3), got {tuple(joints.shape)}")
    return indices_to_multihot(posecode_indices(joints))


def describe(codes) -> list[str]:
    """Readable phrases for one pose: ``codes`` is a (392,) multi-hot row or (70,) indices."""
    arr = np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes)
    if arr.shape == (NUM_CATEGORIES,) and arr.dtype == bool:
        return [_PHRASES[i] for i in np.flatnonzero(arr)]
    if arr.shape == (NUM_SLOTS,) and np.issubdtype(arr.dtype, np.integer):
        if ((arr < 0) | (arr >= np.array(SLOT_SIZES))).any():
            raise ValueError("codes: local indices must lie in [0, SLOT_SIZES[slot])")
        return [_PHRASES[SLOT_OFFSETS[s] + int(k)] for s, k in enumerate(arr)]
    raise ValueError(f"codes: expected a (392,) bool row or (70,) integer indices, "
                     f"got shape {arr.shape} dtype {arr.dtype}")


# ---------------------------------------------------------------------------- coupling as data
# Which real joints each slot reads. A virtual hand reads its elbow and wrist, the torso centre
# reads pelvis, spine3 and neck. The X/Z relative-position slots are measured in the body frame,
# so they also depend on the facing direction (hips and shoulders, ``FACE_JOINTS``) -- but only
# through the heading, which an edit of one limb leaves essentially unchanged; the table lists
# the joints whose positions enter the measured difference.
_VIRTUAL_SOURCES = {"left_hand": ("left_elbow", "left_wrist"), "right_hand": ("right_elbow", "right_wrist"),
                    "torso": ("pelvis", "spine3", "neck")}


def _real(names) -> tuple[str, ...]:
    out: list[str] = []
    for n in names:
        for r in _VIRTUAL_SOURCES.get(n, (n,)):
            if r not in out:
                out.append(r)
    return tuple(out)


def _slot_joint_table() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for name, a, v, b in _ANGLES:
        table[f"angle:{name}"] = _real((a, v, b))
    for a, b in _DISTANCES:
        table[f"distance:{a}-{b}"] = _real((a, b))
    for axis, pairs in (("x", _REL_X), ("y", _REL_Y), ("z", _REL_Z)):
        for a, b in pairs:
            table[f"relpos_{axis}:{a}-{b}"] = _real((a, b))
    for name, a, b in _VERTICAL:
        table[f"vertical:{name}"] = _real((a, b))
    for name in _GROUND:
        table[f"ground:{name}"] = (name,)
    return table


POSECODE_SLOT_JOINTS: dict[str, tuple[str, ...]] = _slot_joint_table()
"""slot name -> names of the skeleton joints whose positions the slot's value reads."""
assert list(POSECODE_SLOT_JOINTS) == POSECODE_SLOTS

SLOT_KINDS: list[str] = [s.split(":")[0] for s in POSECODE_SLOTS]
"""Kind of each slot: angle, distance, relpos_x, relpos_y, relpos_z, vertical or ground."""


def coupled_slots(slots, joints_moved=None) -> list[str]:
    """Slots (other than ``slots``) that read a joint read by any of ``slots`` (or, with
    ``joints_moved``, a joint in that collection): the slots an edit of those body parts
    may have to change."""
    names = set(joints_moved) if joints_moved is not None else {j for s in slots for j in POSECODE_SLOT_JOINTS[s]}
    return [s for s in POSECODE_SLOTS if s not in slots and names & set(POSECODE_SLOT_JOINTS[s])]


# ---------------------------------------------------------------------------- continuous values
# Each slot's category is the number of its edges (``SLOT_EDGES``) that a continuous value
# exceeds: joint angle in degrees, distance in metres, body-frame offset in metres, angle to
# the vertical in degrees (folded to 0..90), height in metres. ``SLOT_SCALES`` is the value
# unit used to normalise violations (about one bin).
_KIND_EDGES = {"angle": ANGLE_EDGES_DEG, "distance": DISTANCE_EDGES_M,
               "relpos_x": [-RELPOS_THRESHOLD_M, RELPOS_THRESHOLD_M],
               "relpos_y": [-RELPOS_THRESHOLD_M, RELPOS_THRESHOLD_M],
               "relpos_z": [-RELPOS_THRESHOLD_M, RELPOS_THRESHOLD_M],
               "vertical": VERTICAL_EDGES_DEG, "ground": [GROUND_THRESHOLD_M]}
_KIND_SCALE = {"angle": 10.0, "distance": 0.1, "relpos_x": RELPOS_THRESHOLD_M,
               "relpos_y": RELPOS_THRESHOLD_M, "relpos_z": RELPOS_THRESHOLD_M, "vertical": 10.0,
               "ground": GROUND_THRESHOLD_M}
SLOT_EDGES: list[list[float]] = [list(_KIND_EDGES[k]) for k in SLOT_KINDS]
SLOT_SCALES: list[float] = [_KIND_SCALE[k] for k in SLOT_KINDS]
_EDGE_TABLE = torch.full((len(SLOT_EDGES), max(len(e) for e in SLOT_EDGES)), math.inf, dtype=torch.float64)
for _s, _e in enumerate(SLOT_EDGES):
    _EDGE_TABLE[_s, :len(_e)] = torch.tensor(_e, dtype=torch.float64)


def _bin_bounds() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per global category: lower edge, upper edge (+-inf when open) and the margin unit."""
    lo, hi, unit = [], [], []
    for s, edges in enumerate(SLOT_EDGES):
        for k in range(SLOT_SIZES[s]):
            a = edges[k - 1] if k > 0 else -math.inf
            b = edges[k] if k < len(edges) else math.inf
            lo.append(a)
            hi.append(b)
            unit.append(min(b - a, SLOT_SCALES[s]) if math.isfinite(b - a) else SLOT_SCALES[s])
    return (torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64),
            torch.tensor(unit, dtype=torch.float64))


CATEGORY_LOW, CATEGORY_HIGH, CATEGORY_UNIT = _bin_bounds()


def _angle_deg(sin_part: torch.Tensor, cos_part: torch.Tensor) -> torch.Tensor:
    # atan2 rather than acos: finite gradients near straight limbs and vertical bones.
    return torch.rad2deg(torch.atan2(sin_part, cos_part))


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((v * v).sum(-1) + 1e-12)


def slot_values(joints: torch.Tensor) -> torch.Tensor:
    """Continuous value of every slot (..., 70) from joints (..., 22, 3), differentiable.

    ``posecode_indices(j) == (slot_values(j)[..., s] > SLOT_EDGES[s]).sum()`` for every slot
    ``s`` (up to values exactly on an edge).
    """
    if joints.dim() < 2 or tuple(joints.shape[-2:]) != (NUM_JOINTS, 3):
        raise ValueError(f"joints: expected shape (..., 22, 3), got {tuple(joints.shape)}")
    j = _with_virtual(joints)
    r_hip, l_hip, r_sh, l_sh = FACE_JOINTS
    across = (j[..., r_hip, :] - j[..., l_hip, :]) + (j[..., r_sh, :] - j[..., l_sh, :])
    fx, fz = across[..., 2], -across[..., 0]
    fn = torch.sqrt(fx * fx + fz * fz + 1e-12)
    fx, fz = (fx / fn).unsqueeze(-1), (fz / fn).unsqueeze(-1)
    lx, lz = fz, -fx

    def gather(idx):
        return j[..., idx, :]

    u = gather(_ANG_A) - gather(_ANG_V)
    v = gather(_ANG_B) - gather(_ANG_V)
    angle = _angle_deg(_norm(torch.linalg.cross(u, v)), (u * v).sum(-1))
    d = gather(_DIST_A) - gather(_DIST_B)
    dist = torch.sqrt((d * d).sum(-1) + 1e-12)
    dxp = gather(_RX_A) - gather(_RX_B)
    rx = dxp[..., 0] * lx + dxp[..., 2] * lz
    ry = gather(_RY_A)[..., 1] - gather(_RY_B)[..., 1]
    dzp = gather(_RZ_A) - gather(_RZ_B)
    rz = dzp[..., 0] * fx + dzp[..., 2] * fz
    bone = gather(_VB) - gather(_VA)
    vert = _angle_deg(_norm(bone[..., [0, 2]]), torch.abs(bone[..., 1]))
    height = gather(_GR)[..., 1]
    return torch.cat([angle, dist, rx, ry, rz, vert, height], dim=-1)


def values_to_indices(values: torch.Tensor) -> torch.Tensor:
    """Categories (..., 70) int64 from :func:`slot_values` output."""
    # One comparison against every slot's edges, padded with +inf (never exceeded).
    edges = _EDGE_TABLE.to(values.device, values.dtype)
    return (values.unsqueeze(-1) > edges).sum(-1)


def bin_violation(values: torch.Tensor, categories: torch.Tensor, margin: float | torch.Tensor = 0.0,
                  slots: torch.Tensor | None = None) -> torch.Tensor:
    """How far (in bin units, >= 0) each slot value lies outside its target bin (..., 70).

    ``categories`` are LOCAL targets (..., 70), or (..., S) for the slot indices ``slots``. The
    bin is shrunk by ``margin`` units on each finite side (0.5 on a closed bin aims at its
    centre). Zero when the value is inside: a hinge that is differentiable almost everywhere,
    used by the training loss and the edit solver.
    """
    offsets = torch.as_tensor(SLOT_OFFSETS, device=categories.device)
    flat = categories + (offsets if slots is None else offsets[slots])
    lo = CATEGORY_LOW.to(values.device, values.dtype)[flat]
    hi = CATEGORY_HIGH.to(values.device, values.dtype)[flat]
    unit = CATEGORY_UNIT.to(values.device, values.dtype)[flat]
    m = torch.as_tensor(margin, dtype=values.dtype, device=values.device) * unit
    # Open sides (+-inf) contribute nothing: relu(-inf) = 0.
    below = torch.relu(torch.nan_to_num(lo + m - values, neginf=-1.0, posinf=0.0))
    above = torch.relu(torch.nan_to_num(values - (hi - m), neginf=-1.0, posinf=0.0))
    return (below + above) / unit


def seen_categories(joints_list) -> dict[str, list[str]]:
    """{slot: labels that occur in any frame} over an iterable of joint arrays (T, 22, 3):
    what a tokenizer trained on those motions has seen (recorded in its run folder)."""
    seen = np.zeros(NUM_CATEGORIES, dtype=bool)
    offsets = np.asarray(SLOT_OFFSETS)
    arrays = [np.asarray(j, np.float32).reshape(-1, NUM_JOINTS, 3) for j in joints_list]
    if arrays:  # one vectorised pass: per-motion calls cost more in overhead than in work
        idx = posecode_indices(torch.from_numpy(np.concatenate(arrays))).numpy()
        seen[np.unique(idx + offsets)] = True
    return {slot: [lab for (s, lab), ok in zip(POSECODE_CATEGORIES[off:off + n], seen[off:off + n]) if ok]
            for slot, off, n in zip(POSECODE_SLOTS, SLOT_OFFSETS, SLOT_SIZES)}
