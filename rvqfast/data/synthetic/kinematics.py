"""Kinematic building blocks of the synthetic generator: joint indices, per-frame drivers
(:class:`Segment`), eased key-framing, Euler forward kinematics over the 22-joint tree and
per-subject bone offsets."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...motion.skeleton import FPS, NUM_JOINTS, PARENTS, REST_OFFSETS

# Joint indices used by the actions.
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = range(10)
NECK, L_COLLAR, R_COLLAR, HEAD, L_SH, R_SH, L_ELB, R_ELB = 12, 13, 14, 15, 16, 17, 18, 19
L_WRIST, R_WRIST = 20, 21
SPINE = (SPINE1, SPINE2, SPINE3)
# How a trunk bend or twist is shared out over the three spine joints (sums to 1).
SPINE_SHARE = np.array([0.2, 0.35, 0.45])
X, Y, Z = 0, 1, 2


@dataclass
class Segment:
    """Per-frame drivers of one action segment."""
    ang: np.ndarray        # (T, 22, 3) Euler angles (x, y, z) in radians, R = Ry Rz Rx
    speed: np.ndarray      # (T,) forward speed m/s in the heading frame
    lateral: np.ndarray    # (T,) leftward speed m/s
    yaw_rate: np.ndarray   # (T,) rad/s, positive turns left
    lift: np.ndarray       # (T,) extra root height while airborne (m)
    phrases: list[str] = field(default_factory=list)  # alternative descriptions (verb phrases)


def _blank(n: int) -> Segment:
    z = np.zeros(n)
    return Segment(np.zeros((n, NUM_JOINTS, 3)), z.copy(), z.copy(), z.copy(), z.copy())


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _duration(t: np.ndarray) -> float:
    """Length in seconds of a segment sampled at times ``t`` (one frame past the last sample)."""
    return t[-1] + 1.0 / FPS


def _pick_side(rng: np.random.Generator) -> tuple[str, float]:
    """A random body side and its sign (+1 left, -1 right)."""
    side = rng.choice(["left", "right"])
    return side, 1.0 if side == "left" else -1.0


def _sway(t: np.ndarray, dur: float, freq: float) -> np.ndarray:
    """Sinusoid at ``freq`` Hz faded in and out over 0.5 s, for back-and-forth movements."""
    return np.sin(2 * np.pi * freq * t) * _smoothstep(t / 0.5) * _smoothstep((dur - t) / 0.5)


def _envelope(t: np.ndarray, dur: float, ramp: float = 0.4) -> np.ndarray:
    """0 -> 1 -> 0 window with smooth ramps, for key-framed actions."""
    return _smoothstep(t / ramp) * _smoothstep((dur - t) / ramp)


def _speed_word(rng: np.random.Generator, factor: float) -> tuple[str, str]:
    if factor < 0.85:
        return "slowly", rng.choice(["slowly", "at a slow pace", "carefully"])
    if factor > 1.15:
        return "quickly", rng.choice(["quickly", "fast", "at a brisk pace"])
    return "", rng.choice(["", "normally", "steadily"])


def _arms_relaxed(s: Segment, rng: np.random.Generator) -> None:
    s.ang[:, L_SH, Z] += 0.08
    s.ang[:, R_SH, Z] -= 0.08
    s.ang[:, [L_ELB, R_ELB], X] -= rng.uniform(0.1, 0.3)


def _gait(s: Segment, t: np.ndarray, freq: float, hip: float, knee: float, arm: float,
          elbow: float, lean: float) -> None:
    ph = 2 * np.pi * freq * t
    sn = np.sin(ph)
    s.ang[:, L_HIP, X] = -hip * sn
    s.ang[:, R_HIP, X] = hip * sn
    s.ang[:, L_KNEE, X] = 0.08 + knee * np.clip(np.sin(ph + 1.0), 0, None)
    s.ang[:, R_KNEE, X] = 0.08 + knee * np.clip(np.sin(ph + 1.0 + np.pi), 0, None)
    s.ang[:, L_ANKLE, X] = 0.25 * np.sin(ph - 0.5)
    s.ang[:, R_ANKLE, X] = -0.25 * np.sin(ph - 0.5)
    s.ang[:, L_SH, X] = arm * sn
    s.ang[:, R_SH, X] = -arm * sn
    s.ang[:, L_SH, Z] = 0.1
    s.ang[:, R_SH, Z] = -0.1
    s.ang[:, [L_ELB, R_ELB], X] = -elbow
    s.ang[:, SPINE2, Y] = 0.08 * sn
    s.ang[:, PELVIS, X] = lean


_LEGS = ((L_HIP, L_KNEE, L_ANKLE), (R_HIP, R_KNEE, R_ANKLE))


def _flat_feet(s: Segment, legs=_LEGS) -> None:
    """Ankle angle that keeps each foot level given root pitch, hip and knee (all about X), for
    the given (hip, knee, ankle) legs."""
    for hip, knee, ankle in legs:
        s.ang[:, ankle, X] = -(s.ang[:, PELVIS, X] + s.ang[:, hip, X] + s.ang[:, knee, X])


def _keys(t: np.ndarray, times, values) -> np.ndarray:
    """Key-framed channel: eased (smoothstep) interpolation between (time, value) keys."""
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    u = _smoothstep((t - times[k]) / np.maximum(times[k + 1] - times[k], 1e-9))
    return values[k] + (values[k + 1] - values[k]) * u


def _lock_feet(s: Segment, off: np.ndarray, feet: list[int]) -> None:
    """Root speed that keeps the given (planted) joints in place horizontally, so a pose change
    such as kneeling down moves the hips over the feet instead of sliding the feet."""
    pos = forward_kinematics(s.ang, off)[:, feet].mean(1)
    s.speed[:] = -np.gradient(pos[:, 2]) * FPS
    s.lateral[:] = -np.gradient(pos[:, 0]) * FPS



def _twist(s: Segment, amount: np.ndarray) -> None:
    """Turn the shoulders relative to the hips (positive: to the left), sharing the rotation
    over the spine and drawing the scapulae along, as in a real trunk rotation."""
    s.ang[:, list(SPINE), Y] += amount[:, None] * SPINE_SHARE
    s.ang[:, [L_COLLAR, R_COLLAR], Y] += 0.35 * amount[:, None]



def _subject_offsets(rng: np.random.Generator) -> np.ndarray:
    """Bone offsets of one subject: overall size 0.85-1.15 and independent leg / arm / torso /
    width proportions (+-12 %). The motion is retargeted to the canonical skeleton afterwards;
    the proportions still shape poses that depend on them (hands and knees on the floor)."""
    off = REST_OFFSETS.copy()
    off *= rng.uniform(0.85, 1.15)
    legs = [L_KNEE, R_KNEE, L_ANKLE, R_ANKLE]
    arms = [L_ELB, R_ELB, 20, 21]
    torso = [SPINE1, SPINE2, SPINE3, NECK, HEAD]
    off[legs] *= rng.uniform(0.88, 1.12)
    off[arms] *= rng.uniform(0.88, 1.12)
    off[torso] *= rng.uniform(0.88, 1.12)
    off[[L_HIP, R_HIP, L_SH, R_SH, L_COLLAR, R_COLLAR], 0] *= rng.uniform(0.88, 1.15)
    return off


def _euler_to_matrix(ang: np.ndarray) -> np.ndarray:
    """R = Ry(y) @ Rz(z) @ Rx(x) for angles (..., 3) in radians."""
    cx, cy, cz = np.cos(ang[..., 0]), np.cos(ang[..., 1]), np.cos(ang[..., 2])
    sx, sy, sz = np.sin(ang[..., 0]), np.sin(ang[..., 1]), np.sin(ang[..., 2])
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(ang.shape[:-1] + (3, 3))
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(ang.shape[:-1] + (3, 3))
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(ang.shape[:-1] + (3, 3))
    return ry @ rz @ rx


def forward_kinematics(ang: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Joint positions (T, 22, 3) relative to the root from Euler angles (T, 22, 3)."""
    rot = _euler_to_matrix(ang)
    glob = np.empty_like(rot)
    pos = np.zeros(ang.shape[:-1] + (3,))
    glob[:, 0] = rot[:, 0]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        glob[:, j] = glob[:, p] @ rot[:, j]
        pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
    return pos


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    r = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], r, 0), x, np.repeat(x[-1:], r, 0)], 0)
    flat = pad.reshape(pad.shape[0], -1)
    out = np.empty((x.shape[0], flat.shape[1]))
    for c in range(flat.shape[1]):
        out[:, c] = np.convolve(flat[:, c], k, mode="valid")
    return out.reshape(x.shape)




def minimum_jerk(x: np.ndarray) -> np.ndarray:
    """Minimum-jerk position profile 10x^3 - 15x^4 + 6x^5 on [0, 1] (bell-shaped velocity, as
    measured in human point-to-point movements)."""
    x = np.clip(x, 0.0, 1.0)
    return x ** 3 * (10 - 15 * x + 6 * x * x)


def mj_keys(t: np.ndarray, times, values) -> np.ndarray:
    """Key-framed channel(s): minimum-jerk interpolation between (time, value) keys; ``values``
    may be (K,) or (K, C) for C channels sharing the key times."""
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    u = minimum_jerk((t - times[k]) / np.maximum(times[k + 1] - times[k], 1e-9))
    if values.ndim == 2:
        u = u[:, None]
    return values[k] + (values[k + 1] - values[k]) * u


def random_key_times(rng: np.random.Generator, dur: float, lo: float = 0.45,
                     hi: float = 1.3) -> np.ndarray:
    """Key times 0 = t0 < t1 < ... spanning ``dur`` with gaps drawn from [lo, hi] seconds."""
    ts = [0.0]
    while ts[-1] < dur:
        ts.append(ts[-1] + rng.uniform(lo, hi))
    return np.array(ts)


# Joints swapped by a left/right mirror (x -> -x).
MIRROR_PERM: list[int] = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20]


def mirror_joints(joints: np.ndarray) -> np.ndarray:
    """Left/right mirror image of (T, 22, 3) joints: negate x and swap the sides."""
    out = joints[:, MIRROR_PERM].copy()
    out[..., 0] *= -1
    return out


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """Angles (..., 3) (x, y, z) with R = Ry(y) Rz(z) Rx(x), inverse of _euler_to_matrix."""
    z = np.arcsin(np.clip(rot[..., 1, 0], -1.0, 1.0))
    x = np.arctan2(-rot[..., 1, 2], rot[..., 1, 1])
    y = np.arctan2(-rot[..., 2, 0], rot[..., 0, 0])
    return np.stack([x, y, z], -1)


def abducted_hip(pelvis_pitch: float, abduction: float) -> np.ndarray:
    """Hip Euler angles that spread a leg by ``abduction`` in the world's frontal plane under a
    pelvis pitched forward by ``pelvis_pitch`` (a Z angle on the hip itself would turn about the
    pitched pelvis's axis instead)."""
    pitch = np.array([pelvis_pitch, 0.0, 0.0])
    spread = np.array([0.0, 0.0, abduction])
    return matrix_to_euler(_euler_to_matrix(-pitch) @ _euler_to_matrix(spread))
