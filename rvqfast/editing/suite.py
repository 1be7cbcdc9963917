"""The fixed edit suite: 24 (slot, label) requests over the five slot kinds, each applied to
the same test motions on the whole motion and on a 2-second window in the middle.

Per request and mode it reports the means over motions of :func:`rvqfast.editing.metrics.edit_metrics`
(success with the pre-edit rate beside it, unrelated-slot preservation, coupled-slot change,
bone-length error, foot skating, jerk, border acceleration). With an evaluator it adds the FID
of all edited motions of a mode against the test set, beside the FID of the unedited
reconstructions of the whole test set, both with the same evaluator.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from rvqfast.motion.skeleton import FPS

from .apply import edit_many
from .requests import UnreachableEditWarning

SUITE: list[tuple[str, str]] = [
    # angle
    ("angle:left_knee", "bent 90-100 deg"), ("angle:right_knee", "bent 60-70 deg"),
    ("angle:left_knee", "straight"), ("angle:left_elbow", "bent 90-100 deg"),
    ("angle:right_elbow", "straight"), ("angle:right_elbow", "bent 60-70 deg"),
    # distance
    ("distance:left_hand-right_hand", "touching (<0.1 m)"), ("distance:left_hand-right_hand", "far apart (>0.9 m)"),
    ("distance:left_foot-right_foot", "0.5-0.6 m apart"), ("distance:right_hand-right_shoulder", "0.2-0.3 m apart"),
    ("distance:left_knee-right_knee", "0.4-0.5 m apart"),
    # relative position
    ("relpos_y:left_hand-left_shoulder", "above"), ("relpos_y:right_hand-right_shoulder", "above"),
    ("relpos_z:left_hand-torso", "in front of"), ("relpos_x:right_hand-right_shoulder", "right of"),
    ("relpos_y:left_knee-right_knee", "above"), ("relpos_z:right_foot-torso", "in front of"),
    # vertical
    ("vertical:right_forearm", "horizontal"), ("vertical:left_upperarm", "horizontal"),
    ("vertical:left_thigh", "horizontal"), ("vertical:torso", "oblique"), ("vertical:right_thigh", "oblique"),
    # ground
    ("ground:left_foot", "off ground"), ("ground:right_knee", "on ground"),
]
WINDOW_SECONDS = 2.0
MODES = ("whole", "window")


def suite_frames(num_frames: int, mode: str) -> range | None:
    """Frames a suite edit covers: None (whole motion) or 2 s centred in the motion."""
    if mode == "whole":
        return None
    n = int(WINDOW_SECONDS * FPS)
    start = max(0, (num_frames - n) // 2)
    return range(start, min(num_frames, start + n))


def pick_motions(features: list[np.ndarray], count: int, min_seconds: float = 3.0) -> list[int]:
    """The first ``count`` motions at least ``min_seconds`` long (room for the 2 s window and
    its blend ramps)."""
    ids = [i for i, f in enumerate(features) if f.shape[0] >= min_seconds * FPS]
    return ids[:count]


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def run_suite(tokenizer, features: list[np.ndarray], *, requests=None, residual: str = "fit",
              modes=MODES, evaluator=None, fid_reference: list[np.ndarray] | None = None,
              progress: bool = True, keep_edits: bool = False, **edit_kwargs) -> dict:
    """Run the suite on RAW test ``features`` (each cropped to a multiple of 4 frames).

    Returns {"requests": [per request and mode: means], "summary": {mode: means over requests},
    ...}; with ``evaluator`` and ``fid_reference`` (the test set's RAW features) also FIDs;
    ``keep_edits`` adds the edited motions ({mode: [features]}) under "edited".
    """
    requests = list(SUITE if requests is None else requests)
    # A request the training data never showed is recorded as a warning in its row, not fatal.
    edit_kwargs.setdefault("strict", False)
    feats = [f[: f.shape[0] // 4 * 4].astype(np.float32) for f in features]
    rows, edited_by_mode, recon = [], {m: [] for m in modes}, None
    t0 = time.time()
    for k, (slot, label) in enumerate(requests):
        for mode in modes:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UnreachableEditWarning)
                res = edit_many(tokenizer, feats, {slot: label}, [suite_frames(f.shape[0], mode) for f in feats],
                                residual=residual, **edit_kwargs)
            ms = [r.metrics for r in res]
            row = {"slot": slot, "label": label, "mode": mode, "motions": len(res),
                   "solver_met": float(np.mean([r.solver_met for r in res])),
                   "warnings": [str(w.message) for w in caught if issubclass(w.category, UnreachableEditWarning)]}
            for key in ms[0]:
                row[key] = _mean(ms, key)
            rows.append(row)
            edited_by_mode[mode] += [r.features for r in res]
            if recon is None:
                recon = [r.reconstruction for r in res]
        if progress:
            last = rows[-len(modes):]
            print(f"[{k + 1}/{len(requests)}] {slot}={label}: " + ", ".join(
                f"{r['mode']} success {r['success']:.2f} (pre {r['pre_edit_success']:.2f}) "
                f"unrelated {r['unrelated_preservation']:.2f}" for r in last) + f"  [{time.time() - t0:.0f} s]",
                flush=True)
    keys = list(dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, float)))
    summary = {m: {k: _mean([r for r in rows if r["mode"] == m], k) for k in keys} for m in modes}
    out = {"requests": rows, "summary": summary, "residual": residual, "motions": len(feats),
           "seconds": time.time() - t0}
    if evaluator is not None and fid_reference is not None:
        out["fid"] = suite_fid(evaluator, fid_reference, edited_by_mode, tokenizer)
    if keep_edits:
        out["edited"] = edited_by_mode
    return out


def suite_fid(evaluator, reference: list[np.ndarray], edited_by_mode: dict, tokenizer) -> dict:
    """FID (same evaluator) of each mode's edited motions and of the unedited reconstructions
    of all ``reference`` motions, both against ``reference``."""
    from rvqfast.eval import metrics as M
    from rvqfast.eval.report import _embed_motions, reconstruct

    ref = [f[: f.shape[0] // 4 * 4].astype(np.float32) for f in reference]
    ref = [f for f in ref if f.shape[0] >= 4]
    gt = _embed_motions(evaluator, ref)
    rec, _, _ = reconstruct(tokenizer, ref, [None])
    out = {"reconstruction": M.fid(_embed_motions(evaluator, rec[None]), gt), "reference_motions": len(ref)}
    for mode, feats in edited_by_mode.items():
        out[f"edited_{mode}"] = M.fid(_embed_motions(evaluator, feats), gt)
        out[f"edited_{mode}_motions"] = len(feats)
    return out


def suite_markdown(result: dict, title: str = "Edit suite") -> str:
    """A README-ready table of a :func:`run_suite` result."""
    lines = [f"# {title}", "",
             f"{result['motions']} test motions per request, residual policy `{result['residual']}`, "
             f"{result['seconds']:.0f} s.", ""]
    for mode, s in result["summary"].items():
        lines.append(f"- **{mode}**: success {s['success']:.3f} (pre-edit {s['pre_edit_success']:.3f}, "
                     f"solved pose {s['solved_success']:.3f}), unrelated preservation "
                     f"{s['unrelated_preservation']:.3f}, coupled change {s['coupled_change']:.3f}, "
                     f"bone-length error {s['bone_length_error_mm']:.1f} mm (recon {s['bone_length_error_mm_recon']:.1f}), "
                     f"foot skating {s['foot_skating_cm_s']:.1f} cm/s (recon {s['foot_skating_cm_s_recon']:.1f}), "
                     f"jerk {s['jerk_m_s3']:.0f} m/s^3 (recon {s['jerk_m_s3_recon']:.0f})"
                     + (f", border accel {s['border_accel_m_s2']:.2f} m/s^2 (recon {s['border_accel_m_s2_recon']:.2f})"
                        if s.get("border_accel_m_s2") is not None else ""))
    if "fid" in result:
        f = result["fid"]
        lines.append(f"- **FID** (same evaluator, vs {f['reference_motions']} test motions): reconstruction "
                     f"{f['reconstruction']:.3f}; " + "; ".join(
                         f"edited {m} {f[f'edited_{m}']:.3f}" for m in result["summary"]))
    lines += ["", "| slot | label | mode | success | pre-edit | unrelated kept | coupled changed | "
              "bone err mm | skate cm/s | jerk m/s^3 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["requests"]:
        lines.append(f"| {r['slot']} | {r['label']} | {r['mode']} | {r['success']:.2f} | {r['pre_edit_success']:.2f} | "
                     f"{r['unrelated_preservation']:.2f} | {r['coupled_change']:.2f} | {r['bone_length_error_mm']:.1f} | "
                     f"{r['foot_skating_cm_s']:.1f} | {r['jerk_m_s3']:.0f} |")
    return "\n".join(lines) + "\n"


__all__ = ["MODES", "SUITE", "WINDOW_SECONDS", "pick_motions", "run_suite", "suite_fid", "suite_frames",
           "suite_markdown"]
