"""Whole-body and floor motions: cartwheel, handstand, forward / backward roll, lying down,
getting up from lying face down or face up, backflip, spin kick, lunges, reaching down to the
floor, windmill toe touches, a side split.

Each is key-framed with minimum-jerk interpolation (:func:`~.kinematics.mj_keys`). The root's
Euler angles carry the whole-body rotations: +X pitches the body forward (face down at +pi/2),
-Z tilts it to the subject's left. Floor placement (lowest joint on y = 0) is done by the
generator, so a pose on hands, knees or back rests on the floor by construction.
"""
from __future__ import annotations

import numpy as np

from .kinematics import (
    L_ANKLE, L_ELB, L_HIP, L_KNEE, L_SH, NECK, PELVIS, R_ANKLE, R_ELB, R_HIP, R_KNEE, R_SH,
    SPINE, SPINE_SHARE, X, Y, Z, Segment, _blank, _duration, _flat_feet, _lock_feet, _pick_side,
    abducted_hip, mj_keys,
)

TAU = 2 * np.pi


def _set(s: Segment, t: np.ndarray, times, channels: dict) -> None:
    """Key every (joint, axis) channel in ``channels`` (values per key) on the key ``times``."""
    for (j, ax), vals in channels.items():
        s.ang[:, j, ax] = mj_keys(t, times, vals)


def _both(j_left: int, j_right: int, ax: int, vals, mirror_sign: float = 1.0) -> dict:
    """The same key values on the left and right joint (times ``mirror_sign`` on the right)."""
    vals = np.asarray(vals, dtype=np.float64)
    return {(j_left, ax): vals, (j_right, ax): mirror_sign * vals}


def _scaled_times(t: np.ndarray, rel) -> np.ndarray:
    return np.asarray(rel, dtype=np.float64) * _duration(t)


def act_cartwheel(n, t, rng, off):
    s = _blank(n)
    side, sign = _pick_side(rng)
    ks = _scaled_times(t, [0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0])
    # Arms overhead and legs straddled through the wheel; the body turns a full circle about
    # the front-back axis while travelling sideways.
    _set(s, t, ks, {
        (0, Z): -sign * np.array([0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]) * TAU,
        **_both(L_SH, R_SH, Z, [0.1, 2.8, 2.9, 2.9, 2.9, 2.6, 0.1], -1.0),
        **_both(L_HIP, R_HIP, Z, [0, 0.3, 0.7, 0.8, 0.7, 0.3, 0], -1.0),
        **_both(L_KNEE, R_KNEE, X, [0.05, 0.2, 0.05, 0.05, 0.05, 0.2, 0.05]),
    })
    v = rng.uniform(1.0, 1.6)
    s.lateral[:] = sign * v * np.clip(np.sin(np.pi * t / _duration(t)), 0, None) ** 0.5
    s.phrases = [f"does a cartwheel to the {side}", f"cartwheels to the {side}",
                 "turns a cartwheel"]
    return s


def act_handstand(n, t, rng, off):
    s = _blank(n)
    side, sign = _pick_side(rng)
    dur = _duration(t)
    # Kicking up and coming down take about a second each (the legs sweep half a circle).
    up = 1.2 + 0.2 * rng.random()
    ks = np.array([0, 0.4 * up, up, dur - up - 0.2, dur - up, dur - 0.45 * up, dur])
    lead, trail = (L_HIP, R_HIP) if side == "left" else (R_HIP, L_HIP)
    _set(s, t, ks, {
        (0, X): [0, 0.4, np.pi, np.pi, np.pi, 0.4, 0],
        **_both(L_SH, R_SH, X, [0, -1.5, -2.95, -2.95, -2.95, -1.5, 0]),
        (lead, X): [0, -1.2, 0, 0.1, -0.1, -1.2, 0],
        (trail, X): [0, 0.3, 0, -0.1, 0.1, 0.3, 0],
        **_both(L_KNEE, R_KNEE, X, [0.05, 0.3, 0.05, 0.05, 0.05, 0.3, 0.05]),
        (NECK, X): [0, -0.3, -0.5, -0.5, -0.5, -0.3, 0],
    })
    s.phrases = ["does a handstand", "kicks up into a handstand and comes back down",
                 "stands on the hands for a moment"]
    return s


def act_roll(n, t, rng, off):
    s = _blank(n)
    forward = rng.random() < 0.6
    sgn = 1.0 if forward else -1.0
    ks = _scaled_times(t, [0, 0.25, 0.38, 0.5, 0.62, 0.8, 1.0])
    _set(s, t, ks, {
        (0, X): sgn * np.array([0, 0.5, 0.3, 0.6, 0.85, 1.0, 1.0]) * TAU + np.array([0, 0.5, 0, 0, 0, 0, 0]),
        **_both(L_HIP, R_HIP, X, [0, -2.0, -2.2, -2.2, -2.2, -2.0, 0]),
        **_both(L_KNEE, R_KNEE, X, [0.05, 2.4, 2.6, 2.6, 2.6, 2.4, 0.05]),
        **_both(L_SH, R_SH, X, [0, -1.2, -1.6, -1.0, -1.3, -1.2, 0]),
        **_both(L_ELB, R_ELB, X, [-0.1, -0.5, -1.6, -1.4, -1.0, -0.5, -0.1]),
        (NECK, X): [0, 0.3, 0.7, 0.7, 0.7, 0.3, 0],
    })
    s.ang[:, list(SPINE), X] = mj_keys(t, ks, [0, 0.3, 0.6, 0.6, 0.6, 0.3, 0])[:, None] * SPINE_SHARE * 3
    roll = (t > ks[1]) & (t < ks[5])
    s.speed[:] = np.where(roll, sgn * rng.uniform(0.9, 1.4), 0.0)
    if forward:
        s.phrases = ["does a forward roll", "rolls forward on the floor", "tucks and rolls forward"]
    else:
        s.phrases = ["does a backward roll", "rolls backwards on the floor", "tucks and rolls backwards"]
    return s


def _lying_keys(face_down: bool):
    """Key poses (root pitch, hip flexion, knee flexion, shoulder flexion, elbow flexion) from
    lying on the floor to standing."""
    if face_down:  # push up, knees under the body, squat, stand
        return ([1.57, 1.3, 1.15, 0.6, 0.0], [0, 0, -1.6, -2.0, 0], [0, 0.2, 2.3, 2.4, 0.05],
                [0.4, -1.4, -1.3, -0.6, 0], [-1.9, -0.2, -0.2, -0.3, -0.1])
    # on the back: sit up, knees up, rock forward onto the feet, stand
    return ([-1.57, -0.1, 0.1, 0.7, 0.0], [0, -1.5, -2.3, -2.1, 0], [0, 0.05, 2.4, 2.4, 0.05],
            [0.2, -0.8, -0.4, -1.3, 0], [-0.1, -0.2, -0.3, -0.3, -0.1])


def _floor_transition(n, t, rng, off, face_down: bool, getting_up: bool) -> Segment:
    s = _blank(n)
    root, hip, knee, sh, elb = (np.array(v) for v in _lying_keys(face_down))
    rel = np.array([0.0, 0.22, 0.45, 0.7, 1.0])
    if not getting_up:  # lying down is the same path backwards
        root, hip, knee, sh, elb = (v[::-1] for v in (root, hip, knee, sh, elb))
    hold = rng.uniform(0.1, 0.25)  # stay on the floor a moment
    rel = hold + (1 - hold) * rel if getting_up else (1 - hold) * rel
    ks = rel * _duration(t)
    ks = np.concatenate([[0.0], ks, [_duration(t) + 1]]) if getting_up else \
        np.concatenate([[-1.0], ks, [_duration(t) + 1]])
    pad = lambda v: np.concatenate([[v[0]], v, [v[-1]]])  # noqa: E731
    _set(s, t, ks, {
        (0, X): pad(root), **_both(L_HIP, R_HIP, X, pad(hip)), **_both(L_KNEE, R_KNEE, X, pad(knee)),
        **_both(L_SH, R_SH, X, pad(sh)), **_both(L_ELB, R_ELB, X, pad(elb)),
    })
    s.ang[:, NECK, X] = -0.5 * np.sin(np.clip(s.ang[:, 0, X], 0, None))  # look ahead when prone
    _flat_feet(s)
    upright = s.ang[:, 0, X] if face_down else -s.ang[:, 0, X]
    s.ang[:, [L_ANKLE, R_ANKLE], X] *= np.clip(1.4 - upright, 0, 1)[:, None]
    # Once the feet carry the weight they stay planted and the hips travel over them.
    _lock_feet(s, off, [L_ANKLE, R_ANKLE])
    on_feet = np.clip((np.abs(hip) > 1.0).astype(float), 0, 1)
    w = mj_keys(t, ks, pad(on_feet)) if face_down else (np.abs(s.ang[:, L_KNEE, X]) > 1.5)
    s.speed *= w
    s.lateral *= w
    where = "face down" if face_down else "on the back"
    if getting_up:
        s.phrases = ([f"gets up from lying {where}", "pushes up off the floor and stands up",
                      "rises from the floor after lying on the stomach"] if face_down else
                     [f"gets up from lying {where}", "sits up from the floor and stands up",
                      "gets up off the ground from the back"])
    else:
        s.phrases = ([f"lies down {where}", "gets down onto the stomach on the floor",
                      "lowers down to lie face down"] if face_down else
                     [f"lies down {where}", "sits down and lies back on the floor",
                      "lowers down to lie on the back"])
    return s


def act_get_up(n, t, rng, off):
    return _floor_transition(n, t, rng, off, face_down=rng.random() < 0.5, getting_up=True)


def act_lie_down(n, t, rng, off):
    return _floor_transition(n, t, rng, off, face_down=rng.random() < 0.5, getting_up=False)


def act_backflip(n, t, rng, off):
    s = _blank(n)
    dur = _duration(t)
    t0 = rng.uniform(0.45, 0.6)
    air = rng.uniform(0.7, 0.85)
    ks = np.array([0, t0 - 0.3, t0, t0 + 0.35 * air, t0 + 0.7 * air, t0 + air, t0 + air + 0.35, dur])
    _set(s, t, ks, {
        (0, X): [0, 0.35, 0.0, -0.4 * TAU, -0.8 * TAU, -TAU + 0.3, -TAU + 0.2, -TAU],
        **_both(L_HIP, R_HIP, X, [0, -1.2, 0.1, -2.0, -2.0, -1.0, -0.9, 0]),
        **_both(L_KNEE, R_KNEE, X, [0.05, 1.6, 0.05, 2.3, 2.2, 1.0, 1.2, 0.05]),
        **_both(L_SH, R_SH, X, [0, 0.8, -2.9, -1.5, -1.2, -0.8, -0.4, 0]),
    })
    tau = (t - t0) / air
    in_air = (tau > 0) & (tau < 1)
    s.lift[:] = np.where(in_air, 4 * rng.uniform(0.45, 0.7) * tau * (1 - tau), 0.0)
    s.speed[:] = np.where(in_air, -rng.uniform(0.2, 0.8), 0.0)
    s.phrases = ["does a backflip", "jumps and flips backwards", "performs a back somersault"]
    return s


def act_spin_kick(n, t, rng, off):
    s = _blank(n)
    side, sign = _pick_side(rng)
    dur = _duration(t)
    hip, knee = (L_HIP, L_KNEE) if side == "left" else (R_HIP, R_KNEE)
    tc = 0.5 * dur
    spin = rng.uniform(0.6, 0.9)
    ks = np.array([0, tc - spin / 2, tc - 0.1, tc + 0.1, tc + spin / 2, dur])
    _set(s, t, ks, {
        (hip, Z): sign * np.array([0, 0.3, 1.3, 1.3, 0.2, 0]),
        (hip, X): [0, -0.8, -0.7, -0.6, -0.4, 0],
        (knee, X): [0.05, 2.0, 0.3, 0.1, 1.2, 0.05],
        (PELVIS, Z): sign * np.array([0, 0.1, 0.5, 0.5, 0.1, 0]),
        **_both(L_SH, R_SH, Z, [0.1, 0.8, 1.2, 1.2, 0.6, 0.1], -1.0),
        **_both(L_ELB, R_ELB, X, [-0.2, -1.5, -0.8, -0.8, -1.2, -0.2]),
    })
    # The kick swings round with the body: a full turn towards the kicking leg's back.
    turn = (t > ks[1]) & (t < ks[4])
    s.yaw_rate[:] = np.where(turn, -sign * TAU / (ks[4] - ks[1]), 0.0)
    if rng.random() < 0.4:
        tau = (t - ks[1]) / (ks[4] - ks[1])
        s.lift[:] = np.where(turn, 0.2 * np.sin(np.pi * np.clip(tau, 0, 1)), 0.0)
    s.phrases = [f"does a spinning kick with the {side} leg", f"spins around and kicks with the {side} foot",
                 "turns and kicks in a spin kick"]
    return s


def act_lunge(n, t, rng, off):
    s = _blank(n)
    side, sign = _pick_side(rng)
    front, back = ((L_HIP, L_KNEE, L_ANKLE), (R_HIP, R_KNEE, R_ANKLE)) if side == "left" else \
        ((R_HIP, R_KNEE, R_ANKLE), (L_HIP, L_KNEE, L_ANKLE))
    dur = _duration(t)
    reps = int(rng.integers(1, 4))
    depth = 0.5 - 0.5 * np.cos(TAU * reps * np.clip(t / dur * 1.15 - 0.07, 0, 1))
    step = np.clip(4 * np.minimum(t, dur - t) / dur, 0, 1)  # step into the split stance and back
    d = rng.uniform(0.8, 1.0) * depth
    s.ang[:, front[0], X] = -0.55 * step - 1.0 * d
    s.ang[:, front[1], X] = 0.1 + 1.45 * d
    s.ang[:, back[0], X] = 0.35 * step + 0.15 * d
    s.ang[:, back[1], X] = 0.1 + 1.5 * d
    _flat_feet(s, (front,))
    s.ang[:, back[2], X] = 0.6 * step  # back heel up
    arms = rng.random() < 0.5
    if arms:
        s.ang[:, [L_SH, R_SH], Z] = np.array([0.3, -0.3]) * step[:, None]
        s.ang[:, [L_ELB, R_ELB], X] = -1.6 * step[:, None]
    _lock_feet(s, off, [front[2], back[2]])
    s.phrases = [f"does lunges with the {side} leg forward", f"lunges forward on the {side} leg",
                 f"steps into a deep lunge with the {side} foot in front"]
    return s


def _hand_point(pos: np.ndarray, elbow: int, wrist: int) -> np.ndarray:
    """The virtual hand point (0.08 m beyond the wrist along the forearm) of FK poses (P, 22, 3)."""
    fore = pos[:, wrist] - pos[:, elbow]
    return pos[:, wrist] + 0.08 * fore / np.linalg.norm(fore, axis=-1, keepdims=True)


def _solve(off, make_pose, grid, cost):
    """The grid parameters whose single-frame pose (from ``make_pose(params) -> (22, 3)
    angles``) minimises ``cost(joint positions (P, 22, 3))``: a small brute-force IK."""
    from .kinematics import forward_kinematics
    cands = list(grid)
    ang = np.stack([make_pose(*c) for c in cands])
    return cands[int(np.argmin(cost(forward_kinematics(ang, off))))]


def act_reach_floor(n, t, rng, off):
    s = _blank(n)
    side, sign = _pick_side(rng)
    both = rng.random() < 0.4
    stoop = rng.random() < 0.5  # stoop (nearly straight legs) or squat down to reach
    sh_j, elb_j, wr_j = (L_SH, L_ELB, 20) if side == "left" else (R_SH, R_ELB, 21)

    def pose(pitch, knee):
        a = np.zeros((22, 3))
        a[PELVIS, X] = pitch
        a[[L_HIP, R_HIP], X] = -pitch - 0.45 * knee
        a[[L_KNEE, R_KNEE], X] = knee
        a[list(SPINE), X] = 0.4 * SPINE_SHARE
        for sh in ((L_SH, R_SH) if both else (sh_j,)):
            a[sh, X] = -(pitch + 0.4)  # arm hanging straight down
        return a

    pitches = np.linspace(0.9, 1.5, 7) if stoop else np.linspace(0.3, 0.9, 7)
    knees = np.linspace(0.1, 0.6, 6) if stoop else np.linspace(1.2, 2.6, 8)
    # The hand (and its floor contact) just touching the floor in front of the feet.
    pitch, knee = _solve(off, lambda p, k: pose(p, k), [(p, k) for p in pitches for k in knees],
                         lambda pos: np.abs(_hand_point(pos, elb_j, wr_j)[:, 1]
                                            - pos[:, [7, 8, 10, 11], 1].min(1) - 0.03))
    dur = _duration(t)
    e = mj_keys(t, [0, 0.3 * dur, 0.55 * dur, 0.85 * dur, dur + 1], [0, 1, 1, 0, 0])
    s.ang[:] = e[:, None, None] * pose(pitch, knee)[None]
    _flat_feet(s)
    _lock_feet(s, off, [L_ANKLE, R_ANKLE])
    if both:
        s.phrases = ["reaches down to the floor with both hands", "bends down and touches the floor",
                     "touches the ground with both hands"]
    else:
        s.phrases = [f"reaches down to the floor with the {side} hand",
                     f"bends down and picks something up with the {side} hand",
                     f"touches the ground with the {side} hand"]
    return s


def act_toe_touch(n, t, rng, off):
    """Windmill: feet wide, bend and twist to touch each foot with the opposite hand."""
    s = _blank(n)
    stance = rng.uniform(0.3, 0.5)
    hips = {}  # (pitch) -> spread hip angles, shared by the grid's poses

    def pose(sgn, pitch, twist, arm, across, knee):  # sgn +1: left hand to right foot
        a = np.zeros((22, 3))
        a[PELVIS, X] = pitch
        if pitch not in hips:
            hips[pitch] = abducted_hip(pitch, stance), abducted_hip(pitch, -stance)
        a[L_HIP], a[R_HIP] = hips[pitch]
        a[[L_HIP, R_HIP], X] -= 0.5 * knee
        a[[L_KNEE, R_KNEE], X] = knee
        a[list(SPINE), Y] = -sgn * twist * SPINE_SHARE
        a[list(SPINE), X] = 0.3 * SPINE_SHARE
        reach, up = (L_SH, R_SH) if sgn > 0 else (R_SH, L_SH)
        a[reach, X] = -arm
        a[reach, Z] = -sgn * across  # adduction: the arm reaches across the body
        a[up, Z] = -sgn * 1.4
        return a

    grid = [(p, tw, a, c, k) for p in np.linspace(1.0, 2.0, 5) for tw in np.linspace(-1.2, 1.2, 7)
            for a in np.linspace(0.8, 2.4, 5) for c in (0.0, 0.4) for k in (0.0, 0.5, 1.0)]
    keys = {}
    for sgn, (elb, wr, foot) in ((1, (L_ELB, 20, 11)), (-1, (R_ELB, 21, 10))):
        keys[sgn] = pose(sgn, *_solve(off, lambda p, tw, a, c, k: pose(sgn, p, tw, a, c, k), grid,
                                      lambda pos: np.linalg.norm(_hand_point(pos, elb, wr)
                                                                 - pos[:, foot], axis=-1)))
    dur = _duration(t)
    n_touch = max(2, int(dur / 1.2))
    times = np.linspace(0, dur, 2 * n_touch + 1)
    seq = [np.zeros((22, 3))] + [keys[1 if k % 2 == 0 else -1] if j % 2 == 0 else
                                 0.5 * (keys[1] + keys[-1]) * 0.6
                                 for k in range(n_touch) for j in range(2)][:2 * n_touch - 1] \
        + [np.zeros((22, 3))]
    s.ang[:] = mj_keys(t, times, np.stack(seq).reshape(len(seq), -1)).reshape(n, 22, 3)
    _flat_feet(s)
    _lock_feet(s, off, [L_ANKLE, R_ANKLE])
    s.phrases = ["touches the opposite foot with each hand", "does windmill toe touches",
                 "bends and twists to touch the toes with the opposite hand"]
    return s


def act_split(n, t, rng, off):
    """Slides the legs apart sideways into a straddle split, the hands on the floor."""
    s = _blank(n)
    dur = _duration(t)
    width = rng.uniform(1.0, 1.45)
    e = mj_keys(t, [0, 0.35 * dur, 0.65 * dur, dur + 1], [0, 1, 1, 0])
    s.ang[:, PELVIS, X] = 0.5 * e
    s.ang[:, L_HIP] = np.stack([abducted_hip(0.5 * v, width * v) for v in e])
    s.ang[:, R_HIP] = np.stack([abducted_hip(0.5 * v, -width * v) for v in e])
    s.ang[:, [L_SH, R_SH], X] = (-1.0 * e)[:, None]
    s.ang[:, [L_ANKLE, R_ANKLE], Z] = np.stack([-width * e, width * e], -1)  # feet flat on their edges
    s.phrases = ["slides down into a side split", "does a straddle split",
                 "stretches the legs apart into a split"]
    return s


WHOLE_BODY = {
    "cartwheel": (act_cartwheel, (1.8, 2.6)),
    "handstand": (act_handstand, (4.2, 6.0)),
    "roll": (act_roll, (2.2, 3.2)),
    "get_up": (act_get_up, (3.5, 5.5)),
    "lie_down": (act_lie_down, (3.0, 5.0)),
    "backflip": (act_backflip, (2.4, 3.2)),
    "spin_kick": (act_spin_kick, (1.8, 2.8)),
    "lunge": (act_lunge, (3.0, 6.0)),
    "reach_floor": (act_reach_floor, (2.5, 4.0)),
    "toe_touch": (act_toe_touch, (3.0, 6.0)),
    "split": (act_split, (3.0, 5.0)),
}
