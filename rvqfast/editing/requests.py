"""Validated edit requests: ``slot=label`` pairs, frame ranges, reachability.

A request is *unreachable* when its category never occurred for that slot in the training
data (the decoder has never been asked to produce it, so it will not), and *contradictory*
when two requested categories cannot hold in one pose (the solver reports those frames). Both
are reported with the slot and what is reachable, never silently ignored.
"""
from __future__ import annotations

import warnings

from rvqfast.motion.posecodes import POSECODE_CATEGORIES, SLOT_OFFSETS, SLOT_SIZES, POSECODE_SLOTS, category_index

FRAMES_PER_TOKEN = 4


class UnreachableEditError(ValueError):
    """A requested category cannot be produced (never seen in training, or contradictory)."""


class UnreachableEditWarning(UserWarning):
    """Some requested categories could not be met on some frames."""


def slot_labels(slot: str) -> list[str]:
    """All category labels of ``slot``, in index order."""
    s = POSECODE_SLOTS.index(slot)
    return [lab for _, lab in POSECODE_CATEGORIES[SLOT_OFFSETS[s]:SLOT_OFFSETS[s] + SLOT_SIZES[s]]]


def parse_set(items) -> dict[str, str]:
    """``["angle:left_knee=straight", ...]`` or a dict -> validated {slot: label}."""
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        if isinstance(items, str):
            items = [items]
        pairs = []
        for it in items:
            if not isinstance(it, str) or "=" not in it:
                raise ValueError(f"set: expected 'slot=label' (e.g. angle:left_knee=straight), got {it!r}")
            slot, label = it.split("=", 1)
            pairs.append((slot.strip(), label.strip()))
    if not pairs:
        raise ValueError("set: give at least one slot=label to change")
    out: dict[str, str] = {}
    for slot, label in pairs:
        category_index(slot, label)  # raises ValueError naming slot / label
        if slot in out:
            raise ValueError(f"set: slot {slot!r} given twice ({out[slot]!r} and {label!r}): "
                             "a slot holds one category per frame")
        out[slot] = label
    return out


def parse_frames(frames, num_frames: int) -> range:
    """None (all), a range, a slice, (start, stop) or "start:stop" -> validated range."""
    if frames is None:
        r = range(0, num_frames)
    elif isinstance(frames, range):
        r = frames
    elif isinstance(frames, slice):
        r = range(num_frames)[frames]
    elif isinstance(frames, str):
        parts = frames.split(":")
        if len(parts) != 2:
            raise ValueError(f"frames: expected 'start:stop', got {frames!r}")
        try:
            lo = int(parts[0]) if parts[0] else 0
            hi = int(parts[1]) if parts[1] else num_frames
        except ValueError:
            raise ValueError(f"frames: expected integers in 'start:stop', got {frames!r}") from None
        r = range(lo, hi)
    elif isinstance(frames, (tuple, list)) and len(frames) == 2:
        r = range(int(frames[0]), int(frames[1]))
    else:
        raise ValueError(f"frames: expected None, a range, a slice or 'start:stop', got {frames!r}")
    if r.step != 1 or len(r) == 0 or r.start < 0 or r.stop > num_frames:
        raise ValueError(f"frames: expected a non-empty contiguous range within [0, {num_frames}), got {r}")
    return r


def check_reachable(requested: dict[str, str], seen: dict[str, list[str]] | None, *,
                    strict: bool = True) -> list[str]:
    """Problems with ``requested`` given the categories ``seen`` per slot in training.

    With ``strict`` a problem raises :class:`UnreachableEditError`; otherwise it is warned
    (:class:`UnreachableEditWarning`) and returned. ``seen=None`` checks nothing.
    """
    problems = []
    if seen:
        for slot, label in requested.items():
            ok = seen.get(slot)
            if ok is not None and label not in ok:
                problems.append(f"{slot}={label!r} never occurs in the training data, so the decoder "
                                f"cannot produce it; reachable labels for {slot}: {ok}")
    if problems:
        msg = "unreachable edit: " + "; ".join(problems)
        if strict:
            raise UnreachableEditError(msg)
        warnings.warn(msg, UnreachableEditWarning, stacklevel=3)
    return problems


__all__ = ["FRAMES_PER_TOKEN", "UnreachableEditError", "UnreachableEditWarning", "check_reachable",
           "parse_frames", "parse_set", "slot_labels"]
