"""Range-of-motion sweeps: every joint driven across its anatomical range.

Each body part (left / right arm, legs, spine, head) independently moves through random target
poses drawn uniformly over its range, with minimum-jerk (bell-shaped velocity) transitions and
random holds, so arm, leg, trunk and head poses occur in combinations no scripted action makes.
``floor_sweep`` does the same lying on the floor, so lying poses do not depend on the scripted
floor actions (a model trained without them still sees the body horizontal: issue 13's
leave-one-family-out check).
The ranges follow the usual clinical joint ranges; knee and elbow flexion go up to 172 deg (heel
to buttock, hand to shoulder) so the "completely bent" pose-code category occurs. Captions name
the most salient movement of each moving part.
"""
from __future__ import annotations

import numpy as np

from .kinematics import (
    HEAD, L_ANKLE, L_COLLAR, L_ELB, L_HIP, L_KNEE, L_SH, NECK, PELVIS, R_ANKLE, R_COLLAR, R_ELB,
    R_HIP, R_KNEE, R_SH, SPINE, SPINE_SHARE, X, Y, Z, Segment, _blank, _duration, _flat_feet,
    _lock_feet, mj_keys, random_key_times,
)

# (joint axis, low, high) for the LEFT side in radians; the right side mirrors Y and Z.
ARM_RANGE = {("sh", X): (-3.0, 0.9), ("sh", Z): (-0.3, 3.0), ("sh", Y): (-1.3, 1.0),
             ("elb", X): (-3.0, 0.0), ("col", Z): (-0.15, 0.35), ("col", Y): (-0.3, 0.3)}
LEG_RANGE = {("hip", X): (-2.1, 0.5), ("hip", Z): (-0.3, 0.9), ("hip", Y): (-0.6, 0.6),
             ("knee", X): (0.0, 3.0), ("ankle", X): (-0.6, 0.8)}
SPINE_RANGE = {X: (-0.5, 1.5), Z: (-0.7, 0.7), Y: (-1.2, 1.2)}
NECK_RANGE = {X: (-0.7, 0.9), Y: (-1.2, 1.2), Z: (-0.5, 0.5)}


# Share of key targets put at the very end of a joint's range (full flexion, full reach):
# uniform draws alone would visit the last few degrees almost never.
END_OF_RANGE_P = 0.12


def _targets(rng, lo, hi, k):
    """k key targets in [lo, hi]: uniform, with END_OF_RANGE_P of them at either end."""
    vals = rng.uniform(lo, hi, size=k)
    ends = rng.random(k) < END_OF_RANGE_P
    vals[ends] = np.where(rng.random(int(ends.sum())) < 0.5, lo, hi)
    return vals


def _channel(t, rng, lo, hi, dur, hold_p=0.3):
    """One channel through random targets in [lo, hi], holding some keys (still phases)."""
    ts = random_key_times(rng, dur)
    vals = _targets(rng, lo, hi, len(ts))
    vals[0] = np.clip(0.0, lo, hi)  # start near the rest pose
    for k in range(1, len(vals)):
        if rng.random() < hold_p:
            vals[k] = vals[k - 1]
    return mj_keys(t, ts, vals)


def _drive_limb(s, t, rng, dur, ranges: dict, joint: dict, side_sign: float) -> None:
    """Drive every (joint, axis) channel of one limb through random targets in its range. The
    channels share key times so the limb moves as one reach, not as independent motors; Y and
    Z angles flip sign on the right side (mirror)."""
    ts = random_key_times(rng, dur)
    for (name, ax), (lo, hi) in ranges.items():
        vals = _targets(rng, lo, hi, len(ts))
        vals[0] = np.clip(0.0, lo, hi)
        sign = side_sign if ax in (Y, Z) else 1.0
        s.ang[:, joint[name], ax] = sign * mj_keys(t, ts, vals)


def _arm(s, t, rng, dur, left: bool):
    g = 1.0 if left else -1.0
    sh, elb, col = (L_SH, L_ELB, L_COLLAR) if left else (R_SH, R_ELB, R_COLLAR)
    _drive_limb(s, t, rng, dur, ARM_RANGE, {"sh": sh, "elb": elb, "col": col}, g)
    side = "left" if left else "right"
    a = s.ang
    if (g * a[:, sh, Z]).max() > 2.3 or a[:, sh, X].min() < -2.5:
        return f"raises the {side} arm above the head"
    if a[:, elb, X].min() < -2.4:
        return f"bends the {side} elbow all the way"
    if a[:, sh, X].min() < -1.3:
        return f"lifts the {side} arm forward"
    if (g * a[:, sh, Z]).max() > 1.2:
        return f"lifts the {side} arm out to the side"
    return f"moves the {side} arm around"


def _free_leg(s, t, rng, dur, left: bool):
    g = 1.0 if left else -1.0
    hip, knee, ankle = (L_HIP, L_KNEE, L_ANKLE) if left else (R_HIP, R_KNEE, R_ANKLE)
    _drive_limb(s, t, rng, dur, LEG_RANGE, {"hip": hip, "knee": knee, "ankle": ankle}, g)
    side = "left" if left else "right"
    a = s.ang
    if a[:, knee, X].max() > 2.7:
        return f"pulls the {side} heel up towards the buttock"
    if a[:, hip, X].min() < -1.3:
        return f"lifts the {side} knee up high"
    if (g * a[:, hip, Z]).max() > 0.6:
        return f"lifts the {side} leg out to the side"
    return f"swings the {side} leg"


def _legs(s, t, rng, dur, off):
    mode = rng.choice(["stand", "one_leg", "squat", "squat"])
    if mode == "stand":
        for hip, knee in ((L_HIP, L_KNEE), (R_HIP, R_KNEE)):
            s.ang[:, hip, X] = _channel(t, rng, -0.3, 0.1, dur)
            s.ang[:, knee, X] = _channel(t, rng, 0.0, 0.35, dur)
        _flat_feet(s)
        _lock_feet(s, off, [L_ANKLE, R_ANKLE])
        return None
    if mode == "one_leg":
        left = rng.random() < 0.5
        stance = (R_HIP, R_KNEE, R_ANKLE) if left else (L_HIP, L_KNEE, L_ANKLE)
        s.ang[:, stance[1], X] = _channel(t, rng, 0.0, 0.5, dur)
        s.ang[:, stance[0], X] = -0.5 * s.ang[:, stance[1], X]
        _flat_feet(s, (stance,))
        phrase = _free_leg(s, t, rng, dur, left)
        _lock_feet(s, off, [stance[2]])
        return phrase
    # Symmetric squat depth (deep squats reach full knee flexion) with feet flat and planted.
    depth = _channel(t, rng, 0.0, 1.0, dur, hold_p=0.2)
    deep = rng.uniform(0.75, 1.0)
    knee = 3.0 * deep * depth
    s.ang[:, [L_KNEE, R_KNEE], X] = knee[:, None]
    s.ang[:, PELVIS, X] = 0.55 * depth
    s.ang[:, [L_HIP, R_HIP], X] = (-0.55 * depth - 0.78 * knee)[:, None]
    _flat_feet(s)
    _lock_feet(s, off, [L_ANKLE, R_ANKLE])
    return "squats down low" if knee.max() > 2.3 else "bends the knees"


def _spine(s, t, rng, dur):
    ts = random_key_times(rng, dur, 0.7, 1.6)
    amt = {}
    for ax, (lo, hi) in SPINE_RANGE.items():
        vals = rng.uniform(lo, hi, size=len(ts))
        vals[0] = 0.0
        amt[ax] = mj_keys(t, ts, vals)
        s.ang[:, list(SPINE), ax] += amt[ax][:, None] * SPINE_SHARE
    if amt[X].max() > 0.9:
        return "bends the upper body forward"
    if np.abs(amt[Y]).max() > 0.8:
        return "twists the upper body"
    if np.abs(amt[Z]).max() > 0.45:
        return "leans the upper body to the side"
    return "moves the upper body"


def _head(s, t, rng, dur):
    for ax, (lo, hi) in NECK_RANGE.items():
        s.ang[:, NECK, ax] = 0.7 * _channel(t, rng, lo, hi, dur)
        s.ang[:, HEAD, ax] = 0.3 * s.ang[:, NECK, ax] / 0.7
    if np.abs(s.ang[:, NECK, Y]).max() > 0.6:
        return "looks around"
    return "moves the head"


def act_sweep(n, t, rng, off):
    """A random combination of independently moving parts (at least one)."""
    s = _blank(n)
    dur = _duration(t)
    parts = [p for p in ("left_arm", "right_arm", "legs", "spine", "head")
             if rng.random() < {"left_arm": 0.6, "right_arm": 0.6, "legs": 0.55,
                                "spine": 0.45, "head": 0.35}[p]]
    if not parts:
        parts = [str(rng.choice(["left_arm", "right_arm", "legs", "spine"]))]
    phrases = []
    for p in parts:
        if p == "left_arm":
            phrases.append(_arm(s, t, rng, dur, True))
        elif p == "right_arm":
            phrases.append(_arm(s, t, rng, dur, False))
        elif p == "legs":
            phrases.append(_legs(s, t, rng, dur, off))
        elif p == "spine":
            phrases.append(_spine(s, t, rng, dur))
        else:
            phrases.append(_head(s, t, rng, dur))
    phrases = [p for p in phrases if p] or ["stands and shifts the weight"]
    first, rest = phrases[0], phrases[1:3]
    s.phrases = [" while ".join([first] + rest[:1]), " and ".join([first] + rest),
                 "stretches and " + first]
    return s


def act_floor_sweep(n, t, rng, off):
    """The root pitched to lying on the back or the stomach (rolled up to ~50 deg onto a side)
    while both arms, most legs and sometimes the trunk and head sweep their ranges; with the
    lowest joint kept on the floor, hip and trunk flexion lift the body into bent-over, kneeling
    and bridge-like shapes in between."""
    s = _blank(n)
    dur = _duration(t)
    face_down = rng.random() < 0.5
    s.ang[:, 0, X] = (1.57 if face_down else -1.57) + _channel(t, rng, -0.25, 0.25, dur)
    s.ang[:, 0, Z] = _channel(t, rng, -0.9, 0.9, dur, hold_p=0.5)
    phrases = [_arm(s, t, rng, dur, True), _arm(s, t, rng, dur, False)]
    for left in (True, False):
        if rng.random() < 0.7:
            phrases.append(_free_leg(s, t, rng, dur, left))
    if rng.random() < 0.4:
        phrases.append(_spine(s, t, rng, dur))
    if rng.random() < 0.4:
        phrases.append(_head(s, t, rng, dur))
    where = "on the stomach" if face_down else "on the back"
    s.phrases = [f"lies {where} and {phrases[0]}", f"lies on the floor and {phrases[-1]}",
                 f"stretches while lying {where}"]
    return s


SWEEPS = {"sweep": (act_sweep, (3.0, 7.0)), "floor_sweep": (act_floor_sweep, (3.0, 7.0))}
