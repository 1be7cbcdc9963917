"""The pose-code vocabulary as the studio shows it: slots grouped by body part, with words.

Every phrase comes from :func:`rvqfast.motion.posecodes.describe`, so the page says exactly what
the library says about a pose.
"""
from __future__ import annotations

import numpy as np

from rvqfast.motion.posecodes import NUM_SLOTS, POSECODE_SLOTS, SLOT_SIZES, describe

# Body parts in display order, and the joint names (and virtual joints / segments) of each.
BODY_PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("left arm", ("left_collar", "left_shoulder", "left_elbow", "left_wrist", "left_hand",
                  "left_upperarm", "left_forearm")),
    ("right arm", ("right_collar", "right_shoulder", "right_elbow", "right_wrist", "right_hand",
                   "right_upperarm", "right_forearm")),
    ("left leg", ("left_hip", "left_knee", "left_ankle", "left_foot", "left_thigh", "left_shin",
                  "left_calf")),
    ("right leg", ("right_hip", "right_knee", "right_ankle", "right_foot", "right_thigh",
                   "right_shin", "right_calf")),
    ("torso and head", ("pelvis", "spine1", "spine2", "spine3", "neck", "head", "torso",
                        "left_backdiag", "right_backdiag")),
]
# Slots that relate several body parts, named by the kinds of limb they join.
_PAIR_GROUPS = {frozenset({"arm"}): "both arms", frozenset({"leg"}): "both legs",
                frozenset({"arm", "leg"}): "arms and legs"}
CROSS_BODY = "limbs and torso"
_SEGMENT_PAIRS = {"hands": ("left_hand", "right_hand"), "feet": ("left_foot", "right_foot")}
GROUP_ORDER = ["left arm", "right arm", "both arms", "left leg", "right leg", "both legs",
               "arms and legs", "torso and head", CROSS_BODY]


def _parts(slot: str) -> list[str]:
    """Joint / segment names a slot mentions (``"distance:left_hand-right_hand"`` -> both hands)."""
    names = slot.split(":", 1)[1].split("-")
    return [n for name in names for n in _SEGMENT_PAIRS.get(name, (name,))]


def slot_group(slot: str) -> str:
    """The body part of a slot: the one part all its joints belong to, else :data:`CROSS_BODY`."""
    found = set()
    for name in _parts(slot):
        found.add(next((part for part, names in BODY_PARTS if name in names), "torso and head"))
    if len(found) == 1:
        return found.pop()
    kinds = frozenset(p.split()[-1] if p.endswith(("arm", "leg")) else "torso" for p in found)
    return _PAIR_GROUPS.get(kinds, CROSS_BODY)


def slot_phrases() -> list[list[str]]:
    """``phrases[slot][category]``: the words :func:`describe` gives for each category."""
    out: list[list[str]] = [[] for _ in range(NUM_SLOTS)]
    for k in range(max(SLOT_SIZES)):
        codes = np.minimum(k, np.asarray(SLOT_SIZES) - 1).astype(np.int64)
        for s, phrase in enumerate(describe(codes)):
            if k < SLOT_SIZES[s]:
                out[s].append(phrase)
    return out


def vocabulary() -> dict:
    """JSON-ready description of the 70 slots: name, kind, body part, size, words per category,
    and the display order (grouped by body part)."""
    phrases = slot_phrases()
    slots = [{"index": i, "name": name, "kind": name.split(":", 1)[0], "group": slot_group(name),
              "size": SLOT_SIZES[i], "phrases": phrases[i]} for i, name in enumerate(POSECODE_SLOTS)]
    order = [s["index"] for g in GROUP_ORDER for s in slots if s["group"] == g]
    assert len(order) == NUM_SLOTS, "every slot belongs to one display group"
    return {"slots": slots, "groups": [g for g in GROUP_ORDER if any(s["group"] == g for s in slots)],
            "display_order": order}


__all__ = ["BODY_PARTS", "CROSS_BODY", "GROUP_ORDER", "slot_group", "slot_phrases", "vocabulary"]
