"""BVH motion-capture import, retargeted to the 22-joint skeleton by joint positions.

Supported: the usual text BVH (HIERARCHY / MOTION) with Euler rotation channels in any order
(degrees, applied in the listed order) and Y up, as exported by CMU conversions, Mixamo,
Blender (with Y up) and most tools. Joints are matched by name: SMPL names
(``left_hip``...) directly, otherwise common mocap names (Hips, LeftUpLeg, LeftLeg,
LeftFoot, LeftToeBase, Spine*, Neck, Head, LeftShoulder, LeftArm, LeftForeArm, LeftHand;
namespace prefixes such as ``mixamorig:`` ignored). The three spine joints are taken from the
BVH's pelvis -> neck chain (directly when it has three intermediate joints, otherwise by
interpolating along it). Units: ``scale="auto"`` picks metres, centimetres or inches from
the rest-pose height; pass a number to override. Motions are resampled to 20 fps.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..motion.features import features_to_joints, joints_to_features
from ..motion.retarget import retarget
from ..motion.skeleton import FPS, JOINT_NAMES, NUM_JOINTS
from .humanml3d import MAX_LENGTH
from .synthetic import caption_lines, write_stats


class BVHError(ValueError):
    """A BVH file could not be parsed or mapped to the 22-joint skeleton."""


@dataclass
class BVH:
    names: list[str]
    parents: list[int]
    offsets: np.ndarray        # (J, 3)
    channels: list[list[str]]  # per joint, e.g. ["Xposition", ..., "Zrotation"]
    motion: np.ndarray         # (F, total channels)
    frame_time: float


_VALID_CH = {"Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation"}
MAX_BVH_FRAMES = 1_000_000   # rows in the file; the 20 fps output is limited to MAX_LENGTH
MAX_BVH_BYTES = 1 << 30      # 1 GiB of text: about a million frames of a full-body skeleton
_MAX_VALUE = 1e7             # |channel value| (file units or degrees); beyond it nothing is a motion
_INT_RE = re.compile(r"^[+]?\d+$")


def parse_bvh(text: str, source: str = "<bvh>", max_seconds: float | None = None) -> BVH:
    """Parse BVH text. Errors name ``source``, the line and the problem.

    The HIERARCHY is read token by token; the MOTION block row by row, each row checked to hold
    exactly one value per channel and the row count checked against ``Frames:``, so a missing
    or extra value can never shift the columns of later frames.
    """
    lines = text.splitlines()
    # Tokens are made line by line on demand, so the (possibly huge) MOTION block is never
    # turned into per-token Python objects before it is read row by row.
    toks: list[tuple[str, int]] = []
    next_line = 0
    pos = 0

    def where() -> str:
        return f"{source}:{toks[pos - 1][1]}" if 0 < pos <= len(toks) else source

    def need() -> str:
        nonlocal pos, next_line
        while pos >= len(toks) and next_line < len(lines):
            toks.extend((w, next_line + 1) for w in lines[next_line].split())
            next_line += 1
        if pos >= len(toks):
            raise BVHError(f"{source}: unexpected end of file")
        pos += 1
        return toks[pos - 1][0]

    def num(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise BVHError(f"{where()}: expected a number, got {s!r}") from None
        if not math.isfinite(v) or abs(v) > _MAX_VALUE:
            raise BVHError(f"{where()}: expected a finite number of magnitude <= {_MAX_VALUE:g}, got {s!r}")
        return v

    def count(s: str, what: str, hi: int) -> int:
        if not _INT_RE.match(s) or int(s) > hi:
            raise BVHError(f"{where()}: {what}: expected an integer in [0, {hi}], got {s!r}")
        return int(s)

    if need().upper() != "HIERARCHY":
        raise BVHError(f"{source}: expected 'HIERARCHY' at the start")
    names, parents, offsets, channels = [], [], [], []
    stack: list[int] = []
    while True:
        word = need()
        up = word.upper()
        if up in ("ROOT", "JOINT"):
            if up == "ROOT" and names:
                raise BVHError(f"{where()}: more than one ROOT is not supported")
            if up == "JOINT" and not stack:
                raise BVHError(f"{where()}: JOINT outside the ROOT")
            names.append(need())
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append([])
            if need() != "{":
                raise BVHError(f"{where()}: expected '{{' after joint {names[-1]}")
            stack.append(len(names) - 1)
        elif up == "END":
            need()  # "Site"
            if need() != "{":
                raise BVHError(f"{where()}: expected '{{' after End Site")
            depth = 1
            while depth:
                w = need()
                depth += (w == "{") - (w == "}")
        elif up == "OFFSET":
            if not stack:
                raise BVHError(f"{where()}: OFFSET outside a joint")
            offsets[stack[-1]] = [num(need()) for _ in range(3)]
        elif up == "CHANNELS":
            if not stack:
                raise BVHError(f"{where()}: CHANNELS outside a joint")
            n = count(need(), "CHANNELS count", len(_VALID_CH))
            chs = [need() for _ in range(n)]
            bad = [c for c in chs if c not in _VALID_CH]
            if bad:
                raise BVHError(f"{where()}: unknown channel(s) {bad} in joint {names[stack[-1]]}")
            if len(set(chs)) != len(chs):
                raise BVHError(f"{where()}: repeated channel in joint {names[stack[-1]]}: {chs}")
            channels[stack[-1]] = chs
        elif word == "}":
            if not stack:
                raise BVHError(f"{where()}: unbalanced '}}'")
            stack.pop()
        elif up == "MOTION":
            break
        else:
            raise BVHError(f"{where()}: unexpected token {word!r} in HIERARCHY")
    if stack or not names:
        raise BVHError(f"{where()}: HIERARCHY is incomplete (unclosed joint or no ROOT)")
    if need().rstrip(":").upper() != "FRAMES":
        raise BVHError(f"{where()}: expected 'Frames:' after MOTION")
    n_frames = count(need(), "Frames", MAX_BVH_FRAMES)
    if n_frames < 1:
        raise BVHError(f"{where()}: Frames is 0; the file holds no motion")
    if [need().rstrip(":").upper() for _ in range(2)] != ["FRAME", "TIME"]:
        raise BVHError(f"{where()}: expected 'Frame Time:'")
    frame_time = num(need())
    if not 1e-4 <= frame_time <= 10:
        raise BVHError(f"{where()}: Frame Time: expected seconds per frame in [0.0001, 10], got {frame_time}")
    if pos != len(toks):
        raise BVHError(f"{source}:{toks[pos][1]}: expected the first MOTION row on a new line after 'Frame Time:'")
    if max_seconds is not None and (n_frames - 1) * frame_time > max_seconds:  # before reading the rows
        raise BVHError(f"{where()}: motion lasts {(n_frames - 1) * frame_time:.1f} s ({n_frames} frames x "
                       f"{frame_time} s); at most {max_seconds:g} s fit the loader: split the file")
    header_line = toks[pos - 1][1]
    n_ch = sum(len(c) for c in channels)
    motion = _fast_rows(lines[header_line:], n_frames, n_ch)
    if motion is None:  # something is off: find and name it row by row
        motion = _checked_rows(lines, header_line, n_frames, n_ch, source)
    bad = ~(np.isfinite(motion) & (np.abs(motion) <= _MAX_VALUE))
    if bad.any():
        r = int(np.argwhere(bad)[0][0])
        lineno = [i for i, ln in enumerate(lines[header_line:], header_line + 1) if ln.strip()][r]
        raise BVHError(f"{source}:{lineno}: frame {r} holds NaN, infinite or implausibly large "
                       f"values (|v| > {_MAX_VALUE:g})")
    return BVH(names, parents, np.array(offsets, dtype=np.float64).reshape(-1, 3), channels, motion, frame_time)


def _fast_rows(body: list[str], n_frames: int, n_ch: int) -> np.ndarray | None:
    """The MOTION block as (n_frames, n_ch) via numpy's C parser, or None when it does not parse
    to exactly that shape (then :func:`_checked_rows` finds the row at fault)."""
    import io
    import warnings

    if n_ch == 0:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = np.loadtxt(io.StringIO("\n".join(body)), dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        return None
    return m if m.shape == (n_frames, n_ch) else None


def _checked_rows(lines: list[str], header_line: int, n_frames: int, n_ch: int, source: str) -> np.ndarray:
    rows = [(i, ln.split()) for i, ln in enumerate(lines[header_line:], header_line + 1) if ln.strip()]
    if len(rows) != n_frames:
        raise BVHError(f"{source}: Frames: {n_frames}, but the MOTION block has {len(rows)} rows")
    flat: list[str] = []
    for r, (lineno, vals) in enumerate(rows):
        if len(vals) != n_ch:
            raise BVHError(f"{source}:{lineno}: frame {r} has {len(vals)} values; the HIERARCHY "
                           f"declares {n_ch} channels")
        flat += vals
    try:  # one C-level conversion; the row loop above only counts
        motion = np.array(flat, dtype=np.float64).reshape(n_frames, n_ch)
    except ValueError:
        for r, (lineno, vals) in enumerate(rows):
            try:
                [float(v) for v in vals]
            except ValueError:
                raise BVHError(f"{source}:{lineno}: non-numeric value in frame {r}") from None
        raise BVHError(f"{source}: a MOTION value is not a plain decimal number") from None
    return motion


def _axis_rot(axis: str, deg: np.ndarray) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    m = {"X": [o, z, z, z, c, -s, z, s, c], "Y": [c, z, s, z, o, z, -s, z, c],
         "Z": [c, -s, z, s, c, z, z, z, o]}[axis]
    return np.stack(m, -1).reshape(a.shape + (3, 3))


def bvh_positions(bvh: BVH) -> np.ndarray:
    """World positions (F, J, 3) of all BVH joints (file units)."""
    f = bvh.motion.shape[0]
    j = len(bvh.names)
    pos = np.zeros((f, j, 3))
    glob = np.zeros((f, j, 3, 3))
    col = 0
    for k in range(j):
        rot = np.tile(np.eye(3), (f, 1, 1))
        trans = np.tile(bvh.offsets[k], (f, 1))
        for ch in bvh.channels[k]:
            v = bvh.motion[:, col]
            col += 1
            if ch.endswith("position"):
                trans[:, "XYZ".index(ch[0])] = v
            else:
                rot = rot @ _axis_rot(ch[0], v)
        p = bvh.parents[k]
        if p < 0:
            pos[:, k], glob[:, k] = trans, rot
        else:
            pos[:, k] = pos[:, p] + np.einsum("fij,fj->fi", glob[:, p], trans)
            glob[:, k] = glob[:, p] @ rot
    return pos


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.split(":")[-1].lower())


_ALIASES = {
    "pelvis": ["hips", "pelvis", "hip", "root"],
    "neck": ["neck", "neck1"],
    "head": ["head"],
}
for _side, _s in (("left", "l"), ("right", "r")):
    _ALIASES.update({
        f"{_side}_hip": [f"{_side}upleg", f"{_side}thigh", f"{_s}thigh", f"{_side}upperleg", f"{_s}upleg"],
        f"{_side}_knee": [f"{_side}leg", f"{_side}knee", f"{_s}knee", f"{_side}shin", f"{_s}shin",
                          f"{_side}lowerleg"],
        f"{_side}_ankle": [f"{_side}foot", f"{_side}ankle", f"{_s}ankle", f"{_s}foot"],
        f"{_side}_foot": [f"{_side}toebase", f"{_side}toe", f"{_side}toes", f"{_s}toes", f"{_s}toe"],
        f"{_side}_collar": [f"{_side}shoulder", f"{_side}collar", f"{_s}collar", f"{_side}clavicle",
                            f"{_s}clavicle"],
        f"{_side}_shoulder": [f"{_side}arm", f"{_side}upperarm", f"{_s}upperarm", f"{_s}humerus"],
        f"{_side}_elbow": [f"{_side}forearm", f"{_side}elbow", f"{_s}elbow", f"{_side}lowerarm",
                           f"{_s}forearm"],
        f"{_side}_wrist": [f"{_side}hand", f"{_side}wrist", f"{_s}wrist", f"{_s}hand"],
    })
_SPINE = ("spine1", "spine2", "spine3")


def map_to_smpl22(bvh: BVH) -> tuple[dict[str, int], list[int]]:
    """Map target joint names to BVH joint indices; returns (direct map, pelvis->neck chain).
    Raises BVHError listing the unmapped target joints and the BVH's joint names."""
    norm = [_norm(n) for n in bvh.names]
    if all(_norm(t) in norm for t in JOINT_NAMES):  # SMPL-named skeleton
        return {t: norm.index(_norm(t)) for t in JOINT_NAMES}, []
    mapping: dict[str, int] = {}
    missing = []
    for target, aliases in _ALIASES.items():
        hit = next((norm.index(a) for a in aliases if a in norm), None)
        if hit is None:
            missing.append(target)
        else:
            mapping[target] = hit
    chain: list[int] = []
    if "pelvis" in mapping and "neck" in mapping:
        k = bvh.parents[mapping["neck"]]
        while k >= 0 and k != mapping["pelvis"]:
            chain.append(k)
            k = bvh.parents[k]
        if k != mapping["pelvis"]:
            missing.append("spine (neck is not below the pelvis)")
        chain = chain[::-1]
    if missing:
        raise BVHError(f"cannot map BVH joints to the 22-joint skeleton: no match for {missing}; "
                       f"BVH joints are {bvh.names}. Rename them to SMPL names "
                       f"({', '.join(JOINT_NAMES[:4])}, ...) or common mocap names "
                       "(Hips, LeftUpLeg, LeftLeg, LeftFoot, LeftToeBase, Spine, Neck, Head, "
                       "LeftShoulder, LeftArm, LeftForeArm, LeftHand)")
    return mapping, chain


def _polyline_points(pts: np.ndarray, fracs: list[float]) -> np.ndarray:
    """Points at arc-length fractions along polylines pts (F, K, 3) -> (F, len(fracs), 3)."""
    seg = np.linalg.norm(np.diff(pts, axis=1), axis=-1)  # (F, K-1)
    cum = np.concatenate([np.zeros((pts.shape[0], 1)), np.cumsum(seg, 1)], 1)
    total = np.maximum(cum[:, -1:], 1e-9)
    out = []
    for fr in fracs:
        target = fr * total
        i = np.clip((cum <= target).sum(1) - 1, 0, pts.shape[1] - 2)
        rows = np.arange(pts.shape[0])
        w = ((target[:, 0] - cum[rows, i]) / np.maximum(seg[rows, i], 1e-9))[:, None]
        out.append(pts[rows, i] * (1 - w) + pts[rows, i + 1] * w)
    return np.stack(out, 1)


def check_scale(scale: float | str) -> float | str:
    """``"auto"`` or a finite positive number (strings such as ``"0.01"`` accepted); else BVHError."""
    if scale == "auto":
        return scale
    try:
        v = float(scale)
    except (TypeError, ValueError):
        v = float("nan")
    if isinstance(scale, bool) or not (math.isfinite(v) and 0 < v <= 1e3):
        raise BVHError(f"scale: expected 'auto' or a number of metres per BVH unit in (0, 1000], got {scale!r}")
    return v


def bvh_to_joints(bvh: BVH, *, scale: float | str = "auto", fps: int = FPS) -> np.ndarray:
    """(T, 22, 3) joints in metres at ``fps`` from a parsed BVH."""
    if scale != "auto":
        scale = check_scale(scale)
    n_out = int(np.floor((bvh.motion.shape[0] - 1) * bvh.frame_time * fps + 1e-9)) + 1
    if n_out > MAX_LENGTH:  # checked before the forward kinematics allocate per-frame matrices
        raise BVHError(f"motion lasts {(bvh.motion.shape[0] - 1) * bvh.frame_time:.1f} s = {n_out} frames at "
                       f"{fps} fps; the loader accepts at most {MAX_LENGTH} frames per motion: split the file")
    mapping, chain = map_to_smpl22(bvh)
    allpos = bvh_positions(bvh)
    out = np.zeros((allpos.shape[0], NUM_JOINTS, 3))
    for j, name in enumerate(JOINT_NAMES):
        if name in mapping:
            out[:, j] = allpos[:, mapping[name]]
    if chain is not None and not all(s in mapping for s in _SPINE):
        if len(chain) == 3:
            for s, k in zip(_SPINE, chain):
                out[:, JOINT_NAMES.index(s)] = allpos[:, k]
        else:
            poly = allpos[:, [mapping["pelvis"], *chain, mapping["neck"]]]
            pts = _polyline_points(poly, [0.25, 0.5, 0.75])
            for i, s in enumerate(_SPINE):
                out[:, JOINT_NAMES.index(s)] = pts[:, i]
    if scale == "auto":
        rest = bvh_positions(BVH(bvh.names, bvh.parents, bvh.offsets,
                                 [[] for _ in bvh.names], np.zeros((1, 0)), 1.0))[0]
        h = float(rest[:, 1].max() - rest[:, 1].min())
        if 0.8 <= h <= 2.5:
            scale = 1.0
        elif 80 <= h <= 250:
            scale = 0.01
        elif 30 <= h < 80:
            scale = 0.0254
        elif h > 0:
            scale = 1.6 / h
        else:
            raise BVHError("rest pose has no height; pass an explicit scale")
    scale = check_scale(scale)
    out *= float(scale)
    src_t = np.arange(out.shape[0]) * bvh.frame_time
    n_out = int(np.floor(src_t[-1] * fps + 1e-9)) + 1
    if n_out > MAX_LENGTH:
        raise BVHError(f"motion lasts {src_t[-1]:.1f} s = {n_out} frames at {fps} fps; the loader "
                       f"accepts at most {MAX_LENGTH} frames per motion: split the file")
    if not np.isfinite(out).all() or np.abs(out).max() > 1e4:
        raise BVHError("joint positions exceed 10 km (or are not finite) after scaling; check the "
                       "OFFSET/position values and --scale")
    dst_t = np.arange(n_out) / fps
    res = np.empty((n_out, NUM_JOINTS, 3))
    flat_src = out.reshape(out.shape[0], -1)
    for c in range(flat_src.shape[1]):
        res.reshape(n_out, -1)[:, c] = np.interp(dst_t, src_t, flat_src[:, c])
    return res


def load_bvh(path: str | Path, *, scale: float | str = "auto", fps: int = FPS) -> np.ndarray:
    """Read a BVH file and return (T, 22, 3) joints in metres at ``fps`` frames/s."""
    path = Path(path)
    try:
        if not path.is_file():  # a folder, FIFO or device (e.g. /dev/zero) would block or never end
            raise OSError("not a regular file")
        if path.stat().st_size > MAX_BVH_BYTES:
            raise OSError(f"{path.stat().st_size} bytes; expected at most {MAX_BVH_BYTES}")
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise BVHError(f"{path}: unreadable ({e})") from None
    try:
        return bvh_to_joints(parse_bvh(text, str(path), max_seconds=MAX_LENGTH / fps), scale=scale, fps=fps)
    except BVHError as e:
        msg = str(e)
        raise BVHError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def _safe_name(stem: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "_", stem).lstrip(".") or "motion"
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


def import_bvh(files: list[str | Path], out: str | Path, *, scale: float | str = "auto",
               caption: str = "a person moves", keep_proportions: bool = False) -> Path:
    """Convert BVH files to a HumanML3D-layout folder ``out`` (must be absent or empty).
    Each motion is retargeted to the canonical t2m skeleton (:func:`rvqfast.motion.retarget`,
    as HumanML3D does) unless ``keep_proportions`` keeps the capture's own bone lengths.
    All motions go to train.txt (val/test empty); Mean/Std are computed over them. Written
    into a temporary sibling folder and renamed when complete."""
    out = Path(out)
    if not files:
        raise ValueError("files: expected at least one BVH file")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out: {out} exists and is not an empty folder")
    caption = " ".join(str(caption).replace("#", " ").split())  # '#' and newlines are field/line separators
    if not caption:
        raise ValueError("caption: expected a non-empty caption")
    motions = []
    used: set[str] = set()
    for f in files:
        joints = load_bvh(f, scale=scale)
        if not keep_proportions and joints.shape[0] >= 1:
            try:
                joints = retarget(joints)
            except ValueError as e:
                raise BVHError(f"{f}: cannot retarget to the canonical skeleton ({e}); "
                               "pass keep_proportions=True (--keep-proportions) to skip it") from None
        if joints.shape[0] < 2:
            raise BVHError(f"{f}: needs at least 2 frames at {FPS} fps (a motion of at least "
                           f"{1 / FPS:g} s), got {joints.shape[0]}")
        try:
            feats = joints_to_features(joints)
        except ValueError as e:
            raise BVHError(f"{f}: cannot compute motion features ({e})") from None
        if not np.isfinite(feats).all():
            raise BVHError(f"{f}: motion features are not finite; the motion is implausible")
        motions.append((_safe_name(Path(f).stem, used), joints, feats))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for sub in ("new_joints", "new_joint_vecs", "texts"):
            (tmp / sub).mkdir()
        feats_all = []
        for name, _, feats in motions:
            feats_all.append(feats)
            np.save(tmp / "new_joint_vecs" / f"{name}.npy", feats)
            np.save(tmp / "new_joints" / f"{name}.npy", features_to_joints(feats).astype(np.float32))
            (tmp / "texts" / f"{name}.txt").write_text(caption_lines([caption]))
        (tmp / "train.txt").write_text("".join(m[0] + "\n" for m in motions))
        (tmp / "val.txt").write_text("")
        (tmp / "test.txt").write_text("")
        write_stats(tmp, feats_all)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
