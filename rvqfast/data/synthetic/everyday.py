"""The scripted everyday actions (walk, run, jump, sit, squat, kneel, wave, kick, punch, crawl,
throw, dance, ...): each maps (frames, times, rng) to a :class:`~.kinematics.Segment` with
three alternative verb phrases."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...motion.skeleton import FPS
from .kinematics import *  # noqa: F401,F403  (joint indices and helpers)
from .kinematics import (
    SPINE, SPINE_SHARE, Segment, _arms_relaxed, _blank, _duration, _envelope, _flat_feet, _gait,
    _keys, _lock_feet, _pick_side, _smoothstep, _speed_word, _sway, _twist, forward_kinematics,
)

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




EVERYDAY: dict[str, tuple[Callable, tuple[float, float]]] = {
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
# Actions whose pose depends on the subject's proportions get the bone offsets too.
_NEEDS_OFFSETS = {"crawl", "kneel"}
