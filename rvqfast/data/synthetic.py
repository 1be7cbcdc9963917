"""Deterministic generator of the embedded default dataset (HumanML3D layout).

Motions come from a parametric kinematic model: per-subject scaled bone lengths, forward
kinematics over the 22-joint tree, per-joint Euler angles driven by smooth periodic or
key-framed functions of time per action, a root trajectory integrated from speed, sideways
speed and yaw rate, and floor placement that keeps the lowest joint on y=0 (plus a lift
term while airborne). Each motion is one or two action segments, blended smoothly, and gets
three template captions that match its actions and parameters.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..motion.features import features_to_joints, joints_to_features
from ..motion.skeleton import FEATURE_DIM, FPS, NUM_JOINTS, PARENTS, REST_OFFSETS

# Bump whenever generated files change: the default cache folder is named after it, so a stale
# cache from an older generator is regenerated instead of reused.
GENERATOR_VERSION = 2
MANIFEST = "rvqfast_dataset.json"
DEFAULT_N_MOTIONS = 2400
STD_EPS = 1e-3

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


def act_walk(n, t, rng, kind="walk"):
    s = _blank(n)
    f = rng.uniform(0.7, 1.3)
    adv, adv2 = _speed_word(rng, f)
    base = {"walk": 1.2, "run": 3.0, "jog": 2.0, "backwards": 0.8, "crouch_walk": 0.6}[kind]
    v = base * f
    if kind in ("run", "jog"):
        _gait(s, t, 1.2 * np.sqrt(f) + (0.25 if kind == "run" else 0.1), 0.55 + 0.1 * f,
              1.5 if kind == "run" else 1.2, 0.6, 1.4, 0.12 if kind == "run" else 0.07)
        hop = 0.04 if kind == "run" else 0.02
        # One flight phase per step, with a stance phase (foot on the floor) in between.
        s.lift[:] = hop * np.clip(np.sin(4 * np.pi * (1.2 * np.sqrt(f) + 0.2) * t), 0, None)
    elif kind == "crouch_walk":
        _gait(s, t, 0.8 * f, 0.3, 0.5, 0.2, 0.5, 0.4)
        s.ang[:, [L_HIP, R_HIP], X] -= 1.0
        s.ang[:, [L_KNEE, R_KNEE], X] += 1.4
    else:
        _gait(s, t, 0.85 * np.sqrt(f), 0.35 + 0.1 * f, 0.6 + 0.2 * f, 0.3 * f, 0.2, 0.02)
    turn = rng.choice(["straight", "straight", "curve_left", "curve_right", "circle"])
    direction = "backwards" if kind == "backwards" else "forward"
    if kind == "backwards":
        v = -v
    s.speed[:] = v
    verb = {"walk": "walks", "run": "runs", "jog": "jogs", "backwards": "walks",
            "crouch_walk": "sneaks"}[kind]
    where = direction
    if turn == "curve_left":
        s.yaw_rate[:] = rng.uniform(0.3, 0.6)
        where = f"{direction} while curving to the left"
    elif turn == "curve_right":
        s.yaw_rate[:] = -rng.uniform(0.3, 0.6)
        where = f"{direction} while curving to the right"
    elif turn == "circle":
        s.yaw_rate[:] = rng.choice([-1, 1]) * 2 * np.pi / max(t[-1], 1.0)
        where = "in a circle"
    extra = " while crouching" if kind == "crouch_walk" else ""
    s.phrases = [f"{verb} {where} {adv}".strip() + extra, f"{verb} {where} {adv2}".strip() + extra,
                 f"is {verb[:-1] if verb.endswith('s') else verb}ing {where}".replace("eing", "ing") + extra]
    if kind == "run":
        s.phrases[2] = f"is running {where}"
    if kind == "jog":
        s.phrases[2] = f"is jogging {where}"
    if kind == "crouch_walk":
        s.phrases[2] = f"moves {where} in a low crouch"
    return s


def act_sidestep(n, t, rng):
    s = _blank(n)
    side, sign = _pick_side(rng)
    f = rng.uniform(0.8, 1.3)
    ph = 2 * np.pi * f * t
    s.ang[:, L_HIP, Z] = 0.25 * np.clip(np.sin(ph), 0, None)
    s.ang[:, R_HIP, Z] = -0.25 * np.clip(-np.sin(ph), 0, None)
    s.ang[:, [L_KNEE, R_KNEE], X] = (0.15 + 0.1 * np.abs(np.sin(ph)))[:, None]
    s.ang[:, [L_HIP, R_HIP], X] = -0.1
    _arms_relaxed(s, rng)
    _flat_feet(s)
    s.lateral[:] = sign * 0.45 * f
    s.phrases = [f"side steps to the {side}", f"steps sideways to the {side}",
                 f"shuffles to the {side}"]
    return s


def act_turn(n, t, rng):
    s = _blank(n)
    amount = rng.choice([90, 180, 360])
    side, sign = _pick_side(rng)
    dur = _duration(t)
    s.yaw_rate[:] = sign * np.radians(amount) / dur
    ph = 2 * np.pi * 1.0 * t
    s.ang[:, L_HIP, X] = -0.2 * np.clip(np.sin(ph), 0, None)
    s.ang[:, R_HIP, X] = -0.2 * np.clip(-np.sin(ph), 0, None)
    s.ang[:, L_KNEE, X] = 0.4 * np.clip(np.sin(ph), 0, None)
    s.ang[:, R_KNEE, X] = 0.4 * np.clip(-np.sin(ph), 0, None)
    _arms_relaxed(s, rng)
    if amount == 180:
        s.phrases = ["turns around", f"turns around to the {side}", "turns to face the other way"]
    elif amount == 360:
        s.phrases = ["spins all the way around", f"turns in a full circle to the {side}",
                     "turns around completely"]
    else:
        s.phrases = [f"turns {side}", f"turns to the {side}", f"rotates to the {side}"]
    return s


def act_jump(n, t, rng):
    s = _blank(n)
    dur = _duration(t)
    height = rng.uniform(0.15, 0.45)
    forward = rng.random() < 0.5
    t0 = 0.35 * dur
    air = 0.25 + height * 0.6
    crouch = _smoothstep((t - 0.1) / 0.3) * _smoothstep((t0 - t) / 0.1)
    land = _smoothstep((t - t0 - air) / 0.08) * _smoothstep((t0 + air + 0.5 - t) / 0.3)
    bend = np.maximum(crouch, land)
    in_air = (t >= t0) & (t < t0 + air)
    tau = (t - t0) / air
    s.lift[:] = np.where(in_air, 4 * height * tau * (1 - tau), 0.0)
    s.ang[:, [L_HIP, R_HIP], X] = -0.9 * bend[:, None]
    s.ang[:, [L_KNEE, R_KNEE], X] = 1.5 * bend[:, None]
    s.ang[:, PELVIS, X] = 0.3 * bend
    swing = np.where(in_air, -2.2 * np.sin(np.pi * np.clip(tau, 0, 1)), 0.6 * bend)
    s.ang[:, [L_SH, R_SH], X] = swing[:, None]
    _flat_feet(s)
    if forward:
        s.speed[:] = np.where(in_air, rng.uniform(1.0, 2.5), 0.0)
    size = "high" if height > 0.3 else ""
    if forward:
        s.phrases = ["jumps forward", "leaps forward", "does a long jump forward"]
    else:
        s.phrases = [f"jumps {size} in place".replace("  ", " "), "jumps up and down once",
                     "hops up into the air"]
    return s


def act_jumping_jacks(n, t, rng):
    s = _blank(n)
    f = rng.uniform(0.8, 1.3)
    ph = 0.5 - 0.5 * np.cos(2 * np.pi * f * t)
    s.ang[:, L_SH, Z] = 2.6 * ph + 0.1
    s.ang[:, R_SH, Z] = -2.6 * ph - 0.1
    s.ang[:, L_HIP, Z] = 0.35 * ph
    s.ang[:, R_HIP, Z] = -0.35 * ph
    # Two hops per cycle (out and in), each followed by a landing with the feet on the floor.
    s.lift[:] = 0.08 * np.clip(np.sin(4 * np.pi * f * t), 0, None)
    s.phrases = ["does jumping jacks", "performs jumping jacks", "does star jumps"]
    return s


def act_sit(n, t, rng):
    s = _blank(n)
    dur = _duration(t)
    stand_up = rng.random() < 0.5
    down = _smoothstep((t - 0.3) / 1.0)
    if stand_up:
        down = down * _smoothstep((dur - 0.3 - t) / 1.0)
    lean = 0.5 * down * (1 - down) * 4
    s.ang[:, [L_HIP, R_HIP], X] = -1.55 * down[:, None] - 0.3 * lean[:, None]
    s.ang[:, [L_KNEE, R_KNEE], X] = 1.55 * down[:, None]
    s.ang[:, PELVIS, X] = 0.3 * lean
    s.ang[:, SPINE2, X] = 0.2 * lean
    s.ang[:, [L_SH, R_SH], X] = -0.5 * down[:, None]
    s.ang[:, [L_ELB, R_ELB], X] = -1.0 * down[:, None]
    _flat_feet(s)
    if stand_up:
        s.phrases = ["sits down and then stands back up", "sits on a chair and gets up again",
                     "sits down briefly before standing up"]
    else:
        s.phrases = ["sits down", "sits down on a chair", "takes a seat"]
    return s


def act_squat(n, t, rng, deep: bool = False):
    s = _blank(n)
    f = rng.uniform(0.3, 0.6)
    reps = rng.integers(1, 4)
    dur = _duration(t)
    if deep:
        d = _envelope(t, dur, 0.8)
    else:
        d = (0.5 - 0.5 * np.cos(2 * np.pi * f * t)) * (t < reps / f)
    depth = rng.uniform(0.7, 1.0) * (1.3 if deep else 1.0)
    s.ang[:, PELVIS, X] = 0.45 * depth * d
    s.ang[:, [L_HIP, R_HIP], X] = -1.5 * depth * d[:, None]
    s.ang[:, [L_KNEE, R_KNEE], X] = 1.9 * depth * d[:, None]
    arms = rng.random() < 0.5
    if arms:
        s.ang[:, [L_SH, R_SH], X] = -1.5 * d[:, None]
    _flat_feet(s)
    if deep:
        s.phrases = ["crouches down low", "crouches down and stays low for a moment",
                     "gets down into a crouch"]
    else:
        word = {1: "once", 2: "twice", 3: "three times"}[int(reps)]
        s.phrases = [f"squats down {word}", f"does squats {word}",
                     "squats with arms held out in front" if arms else "does a few squats"]
    return s


def act_wave(n, t, rng):
    s = _blank(n)
    side, sign = _pick_side(rng)
    sh, elb = (L_SH, L_ELB) if side == "left" else (R_SH, R_ELB)
    e = _envelope(t, _duration(t), 0.5)
    f = rng.uniform(1.5, 2.5)
    both = rng.random() < 0.25
    sides = [(L_SH, L_ELB, 1.0), (R_SH, R_ELB, -1.0)] if both else [(sh, elb, sign)]
    for sj, ej, sg in sides:
        s.ang[:, sj, Z] = sg * 2.3 * e
        s.ang[:, ej, X] = -(0.6 + 0.4 * np.sin(2 * np.pi * f * t)) * e
    if both:
        s.phrases = ["waves with both hands", "waves both arms above the head",
                     "raises both arms and waves"]
    else:
        s.phrases = [f"waves with the {side} hand", f"raises the {side} hand and waves",
                     f"waves hello with the {side} arm"]
    return s


def act_kick(n, t, rng):
    s = _blank(n)
    side = rng.choice(["left", "right"])
    hip, knee = (L_HIP, L_KNEE) if side == "left" else (R_HIP, R_KNEE)
    dur = _duration(t)
    k = np.exp(-0.5 * ((t - 0.5 * dur) / 0.18) ** 2)
    chamber = np.exp(-0.5 * ((t - 0.5 * dur + 0.2) / 0.15) ** 2)
    s.ang[:, hip, X] = -rng.uniform(1.0, 1.6) * k
    s.ang[:, knee, X] = 1.6 * chamber * (1 - k)
    s.ang[:, PELVIS, X] = -0.2 * k
    s.ang[:, [L_SH, R_SH], Z] = np.array([0.5, -0.5]) * k[:, None]
    s.phrases = [f"kicks with the {side} leg", f"kicks forward with the {side} foot",
                 f"does a {side} front kick"]
    return s


def act_punch(n, t, rng):
    s = _blank(n)
    f = rng.uniform(0.8, 1.6)
    ph = 2 * np.pi * f * t
    pl = np.clip(np.sin(ph), 0, None) ** 2
    pr = np.clip(-np.sin(ph), 0, None) ** 2
    for sh, elb, p in ((L_SH, L_ELB, pl), (R_SH, R_ELB, pr)):
        s.ang[:, sh, X] = -0.7 - 0.85 * p
        s.ang[:, elb, X] = -2.2 * (1 - p)
    s.ang[:, [L_HIP, R_HIP], X] = -0.2
    s.ang[:, [L_KNEE, R_KNEE], X] = 0.3
    s.ang[:, SPINE2, Y] = 0.25 * (pr - pl)
    _flat_feet(s)
    s.phrases = ["throws punches", "punches with both fists", "boxes, punching forward"]
    return s


def act_crawl(n, t, rng, off):
    s = _blank(n)
    f = rng.uniform(0.5, 0.9)
    # Trunk pitch that puts the wrists level with the knees (thighs and arms vertical), so
    # hands and knees rest on the floor together whatever the subject's arm/leg proportions.
    trunk = off[[SPINE1, SPINE2, SPINE3, L_COLLAR, L_SH]].sum(0) - off[L_HIP]
    arm = np.linalg.norm(off[L_ELB]) + np.linalg.norm(off[L_WRIST])
    reach = arm - np.linalg.norm(off[L_KNEE])
    p = float(np.arccos(np.clip(reach / np.hypot(trunk[1], trunk[2]), -1, 1))
              - np.arctan2(trunk[2], trunk[1]))
    ph = 2 * np.pi * f * t
    s.ang[:, PELVIS, X] = p
    s.ang[:, L_HIP, X] = -p - 0.25 * np.sin(ph)
    s.ang[:, R_HIP, X] = -p + 0.25 * np.sin(ph)
    s.ang[:, [L_KNEE, R_KNEE], X] = 1.8  # shins slope up behind the knees; toes trail
    s.ang[:, L_SH, X] = -p + 0.3 * np.sin(ph)
    s.ang[:, R_SH, X] = -p - 0.3 * np.sin(ph)
    s.ang[:, NECK, X] = -0.9
    s.speed[:] = rng.uniform(0.2, 0.45)
    s.phrases = ["crawls forward on hands and knees", "crawls forward", "is crawling on the floor"]
    return s


def act_dance(n, t, rng):
    s = _blank(n)
    f = rng.uniform(0.8, 1.6)
    ph = 2 * np.pi * f * t
    amp = rng.uniform(0.6, 1.0)
    s.ang[:, L_SH, Z] = amp * (1.3 + 0.9 * np.sin(ph))
    s.ang[:, R_SH, Z] = -amp * (1.3 + 0.9 * np.sin(ph + np.pi / 2))
    s.ang[:, [L_ELB, R_ELB], X] = -0.8 - 0.5 * np.sin(2 * ph)[:, None]
    s.ang[:, [L_KNEE, R_KNEE], X] = 0.25 + 0.2 * np.sin(2 * ph)[:, None]
    s.ang[:, [L_HIP, R_HIP], X] = -0.15 - 0.1 * np.sin(2 * ph)[:, None]
    s.ang[:, SPINE2, Z] = 0.2 * np.sin(ph)
    s.ang[:, HEAD, X] = 0.15 * np.sin(2 * ph)
    s.lateral[:] = 0.3 * np.cos(ph)
    spin = rng.random() < 0.3
    if spin:
        s.yaw_rate[:] = 2 * np.pi / max(t[-1], 1.0)
    _flat_feet(s)
    s.phrases = ["dances energetically" + (" while spinning" if spin else ""),
                 "dances with arms in the air", "sways and dances to music"]
    return s


def act_idle(n, t, rng):
    s = _blank(n)
    look = rng.random() < 0.5
    s.ang[:, SPINE2, X] = 0.02 * np.sin(2 * np.pi * 0.25 * t)
    if look:
        s.ang[:, NECK, Y] = 0.8 * np.sin(2 * np.pi * 0.3 * t)
    _arms_relaxed(s, rng)
    s.phrases = (["stands and looks around", "looks left and right", "stands still looking around"]
                 if look else ["stands still", "stands in place", "waits without moving"])
    return s


def act_raise_arms(n, t, rng):
    s = _blank(n)
    e = _envelope(t, _duration(t), 0.7)
    front = rng.random() < 0.5
    if front:
        s.ang[:, [L_SH, R_SH], X] = -1.55 * e[:, None]
        s.phrases = ["raises both arms in front", "holds both arms straight out in front",
                     "lifts the arms forward"]
    else:
        s.ang[:, L_SH, Z] = 2.9 * e
        s.ang[:, R_SH, Z] = -2.9 * e
        s.phrases = ["raises both arms over the head", "stretches both arms up high",
                     "lifts the arms above the head"]
    return s


def act_bend_over(n, t, rng):
    s = _blank(n)
    e = _envelope(t, _duration(t), 0.8)
    p = rng.uniform(1.0, 1.5)
    s.ang[:, PELVIS, X] = p * e
    s.ang[:, [L_HIP, R_HIP], X] = -p * e[:, None]
    s.ang[:, [L_SH, R_SH], X] = -0.3 * e[:, None]
    _flat_feet(s)
    s.phrases = ["bends over to touch the toes", "bends forward at the waist",
                 "leans down to pick something up"]
    return s


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


def act_kneel(n, t, rng, off):
    s = _blank(n)
    dur = _duration(t)
    one = rng.random() < 0.5
    stand_up = rng.random() < 0.4
    d = _smoothstep((t - 0.3) / 1.2)
    if stand_up:
        d = d * _smoothstep((dur - 0.3 - t) / 1.2)
    bump = 4 * d * (1 - d)  # lean forward and bend the hips on the way down and up
    s.ang[:, PELVIS, X] = 0.35 * bump
    side = rng.choice(["left", "right"])
    if one:
        front, back = ((L_HIP, L_KNEE, L_ANKLE), (R_HIP, R_KNEE, R_ANKLE)) if side == "left" \
            else ((R_HIP, R_KNEE, R_ANKLE), (L_HIP, L_KNEE, L_ANKLE))
        # Front thigh just above horizontal, shin vertical, foot flat: the hip is then as
        # high above the front foot as above the back knee, so both rest on the floor.
        s.ang[:, front[0], X] = -1.68 * d - 0.35 * bump
        s.ang[:, front[1], X] = 1.68 * d
        s.ang[:, back[0], X] = -0.5 * bump
        s.ang[:, back[1], X] = 1.62 * d + 0.3 * bump
        _flat_feet(s, (front, back))
        s.ang[:, back[2], X] += 1.9 * d  # back toes tucked under
        feet = [front[2]]
    else:
        s.ang[:, [L_HIP, R_HIP], X] = -0.7 * bump[:, None]
        s.ang[:, [L_KNEE, R_KNEE], X] = (np.pi / 2 * d + 0.5 * bump)[:, None]
        _flat_feet(s)
        for ankle in (L_ANKLE, R_ANKLE):
            s.ang[:, ankle, X] += 2.7 * d  # feet stretched back, insteps on the floor
        feet = [L_ANKLE, R_ANKLE]
    s.ang[:, [L_SH, R_SH], X] = (-0.4 * bump)[:, None]
    _arms_relaxed(s, rng)
    _lock_feet(s, off, feet)
    what = f"down on the {side} knee" if one else "down on both knees"
    if stand_up:
        s.phrases = [f"kneels {what} and then stands back up", "kneels briefly and gets up again",
                     f"goes {what} before standing up"]
    elif one:
        s.phrases = [f"kneels {what}", "goes down on one knee", f"kneels on the {side} knee"]
    else:
        s.phrases = ["kneels down on both knees", "kneels on the floor", "gets down on the knees"]
    return s


def act_side_bend(n, t, rng):
    s = _blank(n)
    dur = _duration(t)
    both = rng.random() < 0.4
    side, sign = _pick_side(rng)
    depth = rng.uniform(0.45, 0.8)  # total lateral flexion of the trunk (radians)
    if both:
        f = rng.uniform(0.2, 0.35)
        e = _sway(t, dur, f)
    else:
        e = sign * _envelope(t, dur, 0.9)
    # Positive Z on a spine joint tilts the trunk towards -X (the subject's right).
    s.ang[:, list(SPINE), Z] = -depth * e[:, None] * SPINE_SHARE
    s.ang[:, NECK, Z] = 0.15 * depth * e  # keep the head roughly level
    overhead = rng.random() < 0.6
    if overhead:  # the arm opposite the bend reaches over the head
        s.ang[:, R_SH, Z] = -2.6 * np.clip(e, 0, None) - 0.08
        s.ang[:, L_SH, Z] = 2.6 * np.clip(-e, 0, None) + 0.08
        s.ang[:, [L_ELB, R_ELB], X] = -0.2
    else:
        _arms_relaxed(s, rng)
    if both:
        s.phrases = ["bends the upper body from side to side", "stretches to the left and right",
                     "does side bends to both sides"]
    elif overhead:
        s.phrases = [f"does a side stretch to the {side}",
                     f"reaches over the head and bends to the {side}",
                     f"stretches the side by bending to the {side}"]
    else:
        s.phrases = [f"leans to the {side}", f"bends sideways to the {side}",
                     f"tilts the upper body to the {side}"]
    return s


def _twist(s: Segment, amount: np.ndarray) -> None:
    """Turn the shoulders relative to the hips (positive: to the left), sharing the rotation
    over the spine and drawing the scapulae along, as in a real trunk rotation."""
    s.ang[:, list(SPINE), Y] += amount[:, None] * SPINE_SHARE
    s.ang[:, [L_COLLAR, R_COLLAR], Y] += 0.35 * amount[:, None]


def act_twist(n, t, rng):
    s = _blank(n)
    dur = _duration(t)
    look = rng.random() < 0.4
    side, sign = _pick_side(rng)
    amp = rng.uniform(0.7, 1.25)
    if look:  # looking behind takes the trunk to the end of its range
        amp = rng.uniform(1.0, 1.3)
        e = sign * _envelope(t, dur, 0.8)
        _twist(s, amp * e)
        s.ang[:, NECK, Y] = 0.5 * e
        _arms_relaxed(s, rng)
        s.phrases = [f"turns the upper body to look back over the {side} shoulder",
                     f"twists around to the {side} to look behind",
                     f"looks behind over the {side} shoulder"]
        return s
    f = rng.uniform(0.3, 0.6)
    e = _sway(t, dur, f)
    _twist(s, amp * e)
    arms_out = rng.random() < 0.5
    if arms_out:
        s.ang[:, L_SH, Z] = 1.5
        s.ang[:, R_SH, Z] = -1.5
        s.phrases = ["twists the torso left and right with arms out",
                     "rotates the upper body from side to side", "does torso twists"]
    else:
        s.ang[:, [L_SH, R_SH], X] = -0.9
        s.ang[:, [L_ELB, R_ELB], X] = -1.6
        s.phrases = ["twists the upper body from side to side", "does standing torso twists",
                     "rotates the torso left and right"]
    return s


def act_cross_arms(n, t, rng):
    s = _blank(n)
    e = _envelope(t, _duration(t), 0.7)
    # Upper arms slightly forward and rotated inwards, elbows bent so each forearm lies across
    # the chest; the left arm sits a little higher so the forearms do not intersect.
    for sh, elb, sg, flex in ((L_SH, L_ELB, 1.0, 0.5), (R_SH, R_ELB, -1.0, 0.35)):
        s.ang[:, sh, X] = -flex * e
        s.ang[:, sh, Y] = -sg * 1.3 * e
        s.ang[:, sh, Z] = sg * (0.08 + 0.12 * e)
        s.ang[:, elb, X] = -1.75 * e
    s.phrases = ["crosses the arms over the chest", "folds the arms in front of the body",
                 "stands with arms crossed"]
    return s


def act_clap(n, t, rng):
    s = _blank(n)
    e = _envelope(t, _duration(t), 0.5)
    f = rng.uniform(1.5, 2.5)
    high = rng.random() < 0.3
    opening = 0.5 - 0.5 * np.cos(2 * np.pi * f * t)  # 0: palms together
    # Closed, the palms meet on the midline without the hands crossing over.
    for sh, elb, sg in ((L_SH, L_ELB, 1.0), (R_SH, R_ELB, -1.0)):
        if high:
            s.ang[:, sh, X] = -2.6 * e
            s.ang[:, sh, Z] = sg * (0.3 - 0.35 * opening) * e
            s.ang[:, elb, X] = -0.3 * e
        else:
            s.ang[:, sh, X] = -1.2 * e
            s.ang[:, sh, Y] = -sg * (0.3 - 0.45 * opening) * e
            s.ang[:, elb, X] = -0.5 * e
    if high:
        s.phrases = ["claps the hands above the head", "claps overhead", "raises the arms and claps"]
    else:
        s.phrases = ["claps the hands", "claps in front of the chest", "applauds"]
    return s


def act_throw(n, t, rng):
    s = _blank(n)
    dur = _duration(t)
    side = rng.choice(["left", "right"])
    g = -1.0 if side == "right" else 1.0  # mirror sign of the throwing side (Y and Z flip)
    sh, elb, osh = (R_SH, R_ELB, L_SH) if side == "right" else (L_SH, L_ELB, R_SH)
    lead_hip, lead_knee = (L_HIP, L_KNEE) if side == "right" else (R_HIP, R_KNEE)
    amp = rng.uniform(0.8, 1.25)
    tw = 0.4 * dur
    keys = [0.0, tw - 0.5, tw, tw + 0.25, tw + 0.6, dur]
    # Twist away from the target on the wind-up, whip through towards it; the trunk tilts
    # away from the throwing arm at release (overhand delivery).
    _twist(s, _keys(t, keys, [0, 0.3 * g, g * amp, -0.5 * g * amp, -0.3 * g * amp, 0]))
    s.ang[:, list(SPINE), Z] = _keys(t, keys, [0, 0, 0, -0.6 * g, -0.3 * g, 0])[:, None] * SPINE_SHARE
    s.ang[:, PELVIS, X] = _keys(t, keys, [0, 0, -0.05, 0.35, 0.25, 0])
    s.ang[:, sh, X] = _keys(t, keys, [0, 0.2, 0.5, -2.2, -1.0, 0])
    s.ang[:, sh, Z] = _keys(t, keys, [0.1, 0.8, 1.6, 0.6, -0.3, 0.1]) * -g
    s.ang[:, elb, X] = _keys(t, keys, [-0.1, -0.8, -1.6, -0.3, -0.2, -0.1])
    s.ang[:, osh, X] = _keys(t, keys, [0, -0.6, -1.3, -0.6, -0.2, 0])
    s.ang[:, osh, Z] = _keys(t, keys, [0.1, 0.1, 0.2, 0.3, 0.2, 0.1]) * g
    s.ang[:, lead_hip, X] = _keys(t, keys, [0, -0.2, -0.45, -0.35, -0.25, 0])
    s.ang[:, lead_knee, X] = _keys(t, keys, [0, 0.3, 0.2, 0.35, 0.3, 0])
    _flat_feet(s)
    s.phrases = [f"throws something with the {side} hand", f"winds up and throws with the {side} arm",
                 f"throws a ball overhand with the {side} hand"]
    return s


ACTIONS: dict[str, tuple[Callable, tuple[float, float]]] = {
    "walk": (lambda n, t, r: act_walk(n, t, r, "walk"), (3.0, 7.0)),
    "run": (lambda n, t, r: act_walk(n, t, r, "run"), (2.0, 5.0)),
    "jog": (lambda n, t, r: act_walk(n, t, r, "jog"), (2.5, 6.0)),
    "walk_backwards": (lambda n, t, r: act_walk(n, t, r, "backwards"), (2.5, 5.0)),
    "crouch_walk": (lambda n, t, r: act_walk(n, t, r, "crouch_walk"), (3.0, 6.0)),
    "side_step": (act_sidestep, (2.0, 4.5)),
    "turn": (act_turn, (1.2, 3.0)),
    "jump": (act_jump, (2.0, 3.0)),
    "jumping_jacks": (act_jumping_jacks, (2.5, 5.0)),
    "sit": (act_sit, (3.0, 6.0)),
    "squat": (act_squat, (3.0, 6.0)),
    "crouch": (lambda n, t, r: act_squat(n, t, r, deep=True), (2.5, 5.0)),
    "wave": (act_wave, (2.0, 4.0)),
    "kick": (act_kick, (1.5, 2.5)),
    "punch": (act_punch, (2.0, 4.0)),
    "crawl": (act_crawl, (3.0, 6.0)),
    "kneel": (act_kneel, (3.0, 5.5)),
    "side_bend": (act_side_bend, (3.0, 6.0)),
    "twist": (act_twist, (3.0, 6.0)),
    "cross_arms": (act_cross_arms, (2.5, 5.0)),
    "clap": (act_clap, (2.0, 4.0)),
    "throw": (act_throw, (2.0, 3.5)),
    "dance": (act_dance, (3.0, 7.0)),
    "idle": (act_idle, (2.0, 4.0)),
    "raise_arms": (act_raise_arms, (2.0, 4.0)),
    "bend_over": (act_bend_over, (2.5, 4.5)),
}
ACTION_NAMES = list(ACTIONS)
# Actions whose pose depends on the subject's proportions get the bone offsets too.
_NEEDS_OFFSETS = {"crawl", "kneel"}

SUBJECTS = ["a person", "someone", "a man", "a woman", "the person", "a figure"]


def _subject_offsets(rng: np.random.Generator) -> np.ndarray:
    off = REST_OFFSETS.copy()
    off *= rng.uniform(0.88, 1.1)
    legs = [L_KNEE, R_KNEE, L_ANKLE, R_ANKLE]
    arms = [L_ELB, R_ELB, 20, 21]
    torso = [SPINE1, SPINE2, SPINE3, NECK, HEAD]
    off[legs] *= rng.uniform(0.92, 1.08)
    off[arms] *= rng.uniform(0.92, 1.08)
    off[torso] *= rng.uniform(0.92, 1.08)
    off[[L_HIP, R_HIP, L_SH, R_SH, L_COLLAR, R_COLLAR], 0] *= rng.uniform(0.9, 1.12)
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


@dataclass
class Motion:
    joints: np.ndarray        # (T, 22, 3) world positions, metres, Y up
    actions: list[str]
    captions: list[str]


def generate_motion(seed: int, index: int) -> Motion:
    """One motion, fully determined by (seed, index)."""
    rng = np.random.default_rng([seed, index])
    offsets = _subject_offsets(rng)
    n_seg = 1 if rng.random() < 0.6 else 2
    names = [ACTION_NAMES[int(rng.integers(len(ACTION_NAMES)))] for _ in range(n_seg)]
    segs = []
    for name in names:
        fn, (lo, hi) = ACTIONS[name]
        dur = rng.uniform(lo, hi) if n_seg == 1 else rng.uniform(lo, 0.5 * (lo + hi))
        n = max(int(round(dur * FPS)), 50 if n_seg == 1 else 30)
        t = np.arange(n) / FPS
        segs.append(fn(n, t, rng, offsets) if name in _NEEDS_OFFSETS else fn(n, t, rng))
    ang = np.concatenate([s.ang for s in segs])
    drivers = np.stack([np.concatenate([getattr(s, k) for s in segs])
                        for k in ("speed", "lateral", "yaw_rate", "lift")], -1)
    # Smooth across segment boundaries so poses and velocities stay continuous.
    ang = _gaussian_smooth(ang, 2.5)
    drivers = _gaussian_smooth(drivers, 2.5)
    speed, lateral, yaw_rate, _ = drivers.T
    # Lift is smoothed less so that landings keep frames with the feet on the floor; the few
    # millimetres the smoothing leaves on those frames are dropped.
    lift = _gaussian_smooth(np.concatenate([s.lift for s in segs]), 1.0)
    lift = np.where(lift < 0.004, 0.0, lift)
    heading = rng.uniform(-np.pi, np.pi) + np.cumsum(yaw_rate) / FPS
    ang[:, 0, Y] += heading
    pos = forward_kinematics(ang, offsets)
    vx = speed * np.sin(heading) + lateral * np.cos(heading)
    vz = speed * np.cos(heading) - lateral * np.sin(heading)
    root = np.stack([np.cumsum(vx) / FPS, np.zeros_like(vx), np.cumsum(vz) / FPS], -1)
    root[:, 1] = -pos[..., 1].min(axis=1) + np.maximum(lift, 0.0)
    root[:, [0, 2]] += rng.uniform(-2, 2, size=2)
    joints = pos + root[:, None, :]

    captions = []
    for k in range(3):
        subj = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
        parts = [segs[i].phrases[(k + i) % len(segs[i].phrases)] for i in range(n_seg)]
        glue = [" then ", " and then ", ", after that "][k]
        captions.append(f"{subj} {glue.join(parts)}".replace("  ", " ").strip())
    return Motion(joints.astype(np.float64), names, captions)


# --- captions: a small rule-based POS tagger producing HumanML3D-style tokens ---------------
_POS = {
    "a": "DET", "an": "DET", "the": "DET", "both": "DET", "all": "DET", "few": "ADJ",
    "person": "NOUN", "man": "NOUN", "woman": "NOUN", "figure": "NOUN", "someone": "PRON",
    "something": "PRON", "hand": "NOUN", "hands": "NOUN", "arm": "NOUN", "arms": "NOUN",
    "leg": "NOUN", "foot": "NOUN", "head": "NOUN", "knees": "NOUN", "floor": "NOUN",
    "chair": "NOUN", "circle": "NOUN", "seat": "NOUN", "toes": "NOUN", "waist": "NOUN",
    "music": "NOUN", "air": "NOUN", "way": "NOUN", "moment": "NOUN", "pace": "NOUN",
    "fists": "NOUN", "punches": "NOUN", "squats": "NOUN", "jacks": "NOUN", "jumps": "VERB",
    "jump": "NOUN", "kick": "NOUN", "crouch": "NOUN", "times": "NOUN",
    "left": "ADJ", "right": "ADJ", "other": "ADJ", "full": "ADJ", "long": "ADJ", "low": "ADJ",
    "high": "ADV", "slow": "ADJ", "brisk": "ADJ", "front": "NOUN", "jumping": "VERB",
    "star": "NOUN", "hello": "INTJ", "once": "ADV", "twice": "ADV", "three": "NUM",
    "quickly": "ADV", "slowly": "ADV", "fast": "ADV", "carefully": "ADV", "normally": "ADV",
    "steadily": "ADV", "forward": "ADV", "backwards": "ADV", "sideways": "ADV", "then": "ADV",
    "around": "ADV", "down": "ADV", "up": "ADP", "back": "ADV", "again": "ADV", "still": "ADV",
    "briefly": "ADV", "energetically": "ADV", "completely": "ADV", "straight": "ADV",
    "out": "ADV", "after": "ADP", "that": "PRON", "in": "ADP", "on": "ADP", "to": "ADP",
    "with": "ADP", "over": "ADP", "into": "ADP", "of": "ADP", "at": "ADP", "above": "ADP",
    "before": "ADP", "without": "ADP", "for": "ADP", "while": "SCONJ", "and": "CCONJ", "is": "AUX",
    "place": "NOUN", "knee": "NOUN", "chest": "NOUN", "body": "NOUN", "torso": "NOUN",
    "shoulder": "NOUN", "ball": "NOUN", "side": "NOUN", "twists": "NOUN", "bends": "NOUN",
    "one": "NUM", "upper": "ADJ", "overhand": "ADV", "overhead": "ADV", "behind": "ADV",
    "across": "ADP", "crossed": "VERB",
}
_VERB_LEMMA = {
    "walks": "walk", "runs": "run", "jogs": "jog", "sneaks": "sneak", "curving": "curve",
    "running": "run", "jogging": "jog", "walking": "walk", "moves": "move", "crouching": "crouch",
    "steps": "step", "shuffles": "shuffle", "turns": "turn", "rotates": "rotate", "spins": "spin",
    "leaps": "leap", "does": "do", "hops": "hop", "performs": "perform", "sits": "sit",
    "takes": "take", "gets": "get", "standing": "stand", "stands": "stand", "squats": "squat",
    "crouches": "crouch", "stays": "stay", "held": "hold", "waves": "wave", "raises": "raise",
    "kicks": "kick", "throws": "throw", "boxes": "box", "punching": "punch", "crawls": "crawl",
    "crawling": "crawl", "dances": "dance", "spinning": "spin", "sways": "sway", "looks": "look",
    "looking": "look", "waits": "wait", "moving": "move", "holds": "hold", "lifts": "lift",
    "stretches": "stretch", "bends": "bend", "touch": "touch", "leans": "lean", "pick": "pick",
    "face": "face", "side": "side", "punches": "punch", "kneels": "kneel", "goes": "go",
    "tilts": "tilt", "reaches": "reach", "twists": "twist", "claps": "clap", "applauds": "applaud",
    "crosses": "cross", "folds": "fold", "winds": "wind",
}


def tokenize(caption: str) -> str:
    """HumanML3D-style ``word/POS`` tokens (lemmatised verbs) for a caption."""
    toks = []
    words = caption.lower().replace(",", " ").split()
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        if w in _VERB_LEMMA and (w not in _POS or prev in ("person", "someone", "man", "woman",
                                                             "figure", "then", "and", "is")):
            toks.append(f"{_VERB_LEMMA[w]}/VERB")
        else:
            toks.append(f"{w}/{_POS.get(w, 'NOUN')}")
    return " ".join(toks)


def caption_lines(captions: list[str]) -> str:
    return "".join(f"{c}#{tokenize(c)}#0.0#0.0\n" for c in captions)


def split_names(names: list[str], seed: int) -> dict[str, list[str]]:
    """Deterministic ~80/5/15 train/val/test split."""
    order = np.random.default_rng([seed, 7]).permutation(len(names))
    n_val = max(1, round(0.05 * len(names)))
    n_test = max(1, round(0.15 * len(names)))
    test = sorted(names[i] for i in order[:n_test])
    val = sorted(names[i] for i in order[n_test:n_test + n_val])
    train = sorted(names[i] for i in order[n_test + n_val:])
    return {"train": train, "val": val, "test": test}


def write_stats(out: Path, train_features: list[np.ndarray]) -> None:
    """Mean.npy / Std.npy over the training features (std floored at STD_EPS)."""
    allf = np.concatenate(train_features, 0).astype(np.float64)
    np.save(out / "Mean.npy", allf.mean(0).astype(np.float32))
    np.save(out / "Std.npy", np.maximum(allf.std(0), STD_EPS).astype(np.float32))


def generate_dataset(out: str | Path, *, n_motions: int = DEFAULT_N_MOTIONS, seed: int = 0,
                     progress: bool = False) -> Path:
    """Write a synthetic HumanML3D-layout dataset into the folder ``out`` (created; must be
    empty or absent). Same (n_motions, seed) gives byte-identical files."""
    if not isinstance(n_motions, int) or n_motions < 3:
        raise ValueError(f"n_motions: expected an integer >= 3, got {n_motions!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"out: {out} exists and is not empty; choose a new folder")
    for sub in ("new_joints", "new_joint_vecs", "texts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}" for i in range(n_motions)]
    splits = split_names(names, seed)
    train = set(splits["train"])
    train_feats = []
    it = range(n_motions)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="generating motions", unit="motion")
    action_counts: dict[str, int] = {}
    for i in it:
        m = generate_motion(seed, i)
        feats = joints_to_features(m.joints)
        joints = features_to_joints(feats)
        np.save(out / "new_joint_vecs" / f"{names[i]}.npy", feats)
        np.save(out / "new_joints" / f"{names[i]}.npy", joints.astype(np.float32))
        (out / "texts" / f"{names[i]}.txt").write_text(caption_lines(m.captions))
        for a in m.actions:
            action_counts[a] = action_counts.get(a, 0) + 1
        if names[i] in train:
            train_feats.append(feats)
    for split, lst in splits.items():
        (out / f"{split}.txt").write_text("".join(n + "\n" for n in lst))
    (out / "all.txt").write_text("".join(n + "\n" for n in names))
    write_stats(out, train_feats)
    manifest = {
        "generator": "rvqfast.data.synthetic", "version": GENERATOR_VERSION, "seed": seed,
        "n_motions": n_motions, "fps": FPS, "feature_dim": FEATURE_DIM,
        "splits": {k: len(v) for k, v in splits.items()},
        "actions": dict(sorted(action_counts.items())),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out
