"""Pose-code edits of one motion through a trained tokenizer.

``edit(tokenizer, features, set={"angle:left_knee": "bent 90-100 deg"}, frames=range(40, 80))``

1. encodes the motion (categories, residual indices) and decodes it unedited;
2. blend weights: 1 on the requested frames, a raised-cosine ramp of ``blend`` frames on each
   side outside them, 0 elsewhere (so the edit fades in and out, no pop at the borders);
3. solves the edit in joint space on the reconstructed pose (``solve_on="input"``: the input
   pose; :func:`rvqfast.editing.solver.solve`: the least bone rotation that reaches the
   requested categories) and applies it scaled by the blend weight; the requested and
   kinematically coupled slots (:func:`~rvqfast.editing.solver.edit_coupled_slots`) of the
   touched tokens take the solved motion's categories -- the consistent assignment -- and
   unrelated slots keep theirs;
4. the residual of the touched latent frames follows ``residual``: ``"fit"`` (default: fitted
   through the decoder so the decoded motion meets the request, :mod:`rvqfast.editing.fit`),
   ``"requantize"`` (re-quantized against the new pose latent from the solved motion),
   ``"keep"`` (old indices; they describe the old pose) or ``"drop"`` (no residual there:
   pose codes alone);
5. decodes the new (categories, indices) -- the pair a game engine hands to ``decoder.onnx`` --
   and measures the edit (:mod:`rvqfast.editing.metrics`).

Only the latent frames touched by a non-zero blend weight change; motion frame ``f`` belongs
to latent frame ``f // 4``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from rvqfast.motion.features import FOOT_CONTACT, RIC, ROOT_Y, features_to_joints, joints_to_features
from rvqfast.motion.posecodes import NUM_SLOTS, POSECODE_SLOTS, category_index, posecode_indices
from rvqfast.motion.skeleton import NUM_JOINTS, frame_bone_lengths

from .requests import (
    FRAMES_PER_TOKEN, UnreachableEditWarning, check_reachable, parse_frames, parse_set,
)
from .solver import edit_coupled_slots, solve

RESIDUAL_POLICIES = ("fit", "requantize", "keep", "drop")
DEFAULT_FIT_ITERS = 80
DEFAULT_FIT_SEARCH = 1     # sweeps of the code search after the gradient steps
DEFAULT_BLEND_FRAMES = 10


@dataclass
class EditResult:
    """Output of :func:`edit` for one motion (RAW features; categories/indices for the engine)."""

    features: np.ndarray            # (T, 263) decoded edited motion
    reconstruction: np.ndarray      # (T, 263) decoded unedited motion
    target: np.ndarray | None       # (T, 263) the solved (joint-space edited) motion
    categories: np.ndarray          # (T/4, 70) edited pose codes (decoder.onnx input)
    indices: np.ndarray             # (T/4, Q) edited residual indices (decoder.onnx input)
    original_categories: np.ndarray
    original_indices: np.ndarray
    frames: range                   # requested motion frames
    weights: np.ndarray             # (T,) blend weight per motion frame
    latent_frames: list[int]        # latent frames whose codes may change
    requested: dict[str, str]
    residual: str
    solver_met: float               # share of requested (frame, slot) pairs the solved pose meets
    metrics: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"requested": self.requested, "frames": [self.frames.start, self.frames.stop],
                "latent_frames": [self.latent_frames[0], self.latent_frames[-1]] if self.latent_frames else [],
                "residual": self.residual, "solver_met": self.solver_met, **self.metrics}

    # Rates under the names the first version of this module used.
    @property
    def success_rate(self) -> float:
        return self.metrics["success"]

    @property
    def baseline_rate(self) -> float:
        return self.metrics["pre_edit_success"]

    @property
    def preservation_rate(self) -> float:
        return self.metrics["unrelated_preservation"]


def blend_weights(num_frames: int, frames: range, blend: int = DEFAULT_BLEND_FRAMES) -> np.ndarray:
    """(T,) weights: 1 on ``frames``, a raised-cosine ramp over ``blend`` frames outside each
    border (C1-continuous, so the edit adds no velocity jump), 0 elsewhere."""
    if blend < 0:
        raise ValueError(f"blend: expected a number of frames >= 0, got {blend}")
    w = np.zeros(num_frames)
    w[frames.start:frames.stop] = 1.0
    for k in range(1, blend + 1):
        v = 0.5 + 0.5 * np.cos(np.pi * k / (blend + 1))
        if frames.start - k >= 0:
            w[frames.start - k] = v
        if frames.stop - 1 + k < num_frames:
            w[frames.stop - 1 + k] = v
    return w


def joints_to_features_same_length(joints: np.ndarray) -> np.ndarray:
    """Features (T, 263) from joints (T, 22, 3), keeping the joints' height (no floor shift).

    :func:`joints_to_features` needs one frame more than it returns; the last is extrapolated.
    """
    j = np.asarray(joints, np.float64)
    nxt = 2 * j[-1:] - j[-2:-1] if j.shape[0] > 1 else j[-1:]
    feats = joints_to_features(np.concatenate([j, nxt]))
    floor = np.concatenate([j, nxt])[..., 1].min()  # joints_to_features put this height at y=0
    feats[:, ROOT_Y] += floor
    feats[:, RIC.start + 1:RIC.stop:3] += floor
    return feats


def splice_features(x: np.ndarray, edited_joints: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``x`` (T, 263) with the rows an edit of the ``active`` frames touches recomputed from
    ``edited_joints`` (row t also holds velocities t -> t+1, so row t-1 changes too)."""
    new = joints_to_features_same_length(edited_joints)
    rows = active.copy()
    rows[:-1] |= active[1:]
    out = x.copy()
    out[rows] = new[rows]
    # Foot contacts are labels of the original data: recompute them only where the pose moved.
    out[rows, FOOT_CONTACT] = new[rows, FOOT_CONTACT]
    return out


def _as_features(features) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[-1] != 263:
        raise ValueError(f"features: expected one motion of shape (T, 263), got {tuple(x.shape)}")
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise ValueError("features: expected finite floating-point values")
    if x.shape[1] < 2 * FRAMES_PER_TOKEN or x.shape[1] % FRAMES_PER_TOKEN:
        raise ValueError(f"features: T={x.shape[1]} must be a multiple of {FRAMES_PER_TOKEN} and >= 8 "
                         f"(crop to {x.shape[1] - x.shape[1] % FRAMES_PER_TOKEN} frames)")
    return x.to(torch.float32)


def seen_categories_of(tokenizer) -> dict[str, list[str]] | None:
    """The per-slot categories seen in training, if the run recorded them."""
    return getattr(tokenizer, "posecode_seen", None)


@torch.no_grad()
def _residual_indices(tok, x: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
    """Residual indices of RAW features ``x`` quantized against the pose latent of ``categories``."""
    from rvqfast import ops
    z = tok.encoder(tok.normalize(x).transpose(1, 2)).transpose(1, 2)
    r = z - tok.pose_latent(categories)
    b, n, d = r.shape
    idx, _ = ops.rvq_encode(r.reshape(b * n, d).contiguous(), tok.rvq.codebooks.detach().contiguous())
    return idx.reshape(b, n, -1)


@torch.no_grad()
def _decode(tok, cats: torch.Tensor, idx: torch.Tensor, n_quantizers) -> torch.Tensor:
    return tok.decode(cats, idx, n_quantizers)


def edit(tokenizer, features, set: dict[str, str] | list[str], frames=None, *,  # noqa: A002
         residual: str = "fit", blend: int = DEFAULT_BLEND_FRAMES,
         n_quantizers: int | None = None, seen: dict[str, list[str]] | None = None,
         strict: bool = True, solver_iters: int = 100, seed: int = 0, measure: bool = True,
         refine: int = 2, requantize: bool | None = None, fit_iters: int = DEFAULT_FIT_ITERS,
         fit_search: int = DEFAULT_FIT_SEARCH, solve_on: str = "reconstruction") -> EditResult:
    """Edit pose codes of one motion (RAW features (T, 263), T a multiple of 4).

    ``set`` maps slot names (``rvqfast.motion.posecodes.POSECODE_SLOTS``) to labels; ``frames``
    selects motion frames (default: all). ``seen`` ({slot: labels seen in training}; default:
    what the run recorded) makes a never-seen category an :class:`UnreachableEditError`
    (``strict=False``: a warning). Requests the solver cannot meet together on some frames
    (contradictory) are warned about with the slot and the share of frames met.
    ``residual`` is what happens to the residual of the edited tokens: ``"fit"`` (default:
    fitted through the decoder so the decoded motion meets the request, :mod:`rvqfast.editing.fit`,
    ``fit_iters`` gradient steps, then ``fit_search`` sweeps of the code search),
    ``"requantize"`` (re-encoded from the solved motion, ``refine`` feedback passes), ``"keep"``
    or ``"drop"``; ``requantize`` is its old boolean spelling.
    ``solve_on`` picks the pose the solver edits: the unedited ``"reconstruction"`` (default:
    the motion as the model reproduces it, so unrelated slots keep the categories the user
    sees) or the ``"input"``.
    """
    return edit_many(tokenizer, [features], set, [frames], residual=residual, blend=blend,
                     n_quantizers=n_quantizers, seen=seen, strict=strict, solver_iters=solver_iters,
                     seed=seed, measure=measure, refine=refine, requantize=requantize, fit_iters=fit_iters,
                     fit_search=fit_search, solve_on=solve_on)[0]


def edit_many(tokenizer, motions: list, set: dict[str, str] | list[str], frames: list | None = None, *,  # noqa: A002
              residual: str = "fit", blend: int = DEFAULT_BLEND_FRAMES,
              n_quantizers: int | None = None, seen: dict[str, list[str]] | None = None,
              strict: bool = True, solver_iters: int = 100, seed: int = 0, measure: bool = True,
              refine: int = 2, requantize: bool | None = None, method: str = "solver",
              bank: np.ndarray | None = None, fit_iters: int = DEFAULT_FIT_ITERS,
              fit_search: int = DEFAULT_FIT_SEARCH, solve_on: str = "reconstruction") -> list[EditResult]:
    """:func:`edit` for several motions with one request; the joint-space solve and the
    residual fit each run once over all of them (``frames``: one entry per motion, None =
    whole motion).

    ``method="bank"`` edits the tokens only, as ``edit.onnx`` does in an engine
    (:mod:`rvqfast.editing.bank`; ``bank`` defaults to the run's ``posecode_bank.npy``;
    residual ``keep`` or ``drop``)."""
    tok = tokenizer
    if method == "bank":
        return _edit_with_bank(tok, motions, set, frames, residual=residual, blend=blend,
                               n_quantizers=n_quantizers, seen=seen, strict=strict, measure=measure, bank=bank)
    if method != "solver":
        raise ValueError(f"method: expected 'solver' or 'bank', got {method!r}")
    if not getattr(tok.config, "uses_posecodes", False):
        raise ValueError(f"tokenizer: model {tok.config.model!r} has no pose codes to edit; "
                         "use a 'posecode' or 'posecode_rvq' run")
    if requantize is not None:
        residual = "requantize" if requantize else "keep"
    if residual not in RESIDUAL_POLICIES:
        raise ValueError(f"residual: expected one of {RESIDUAL_POLICIES}, got {residual!r}")
    if not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine: expected an integer >= 0, got {refine!r}")
    if isinstance(fit_iters, bool) or not isinstance(fit_iters, int) or fit_iters < 0:
        raise ValueError(f"fit_iters: expected an integer >= 0, got {fit_iters!r}")
    if isinstance(fit_search, bool) or not isinstance(fit_search, int) or fit_search < 0:
        raise ValueError(f"fit_search: expected an integer >= 0 (sweeps of the code search), got {fit_search!r}")
    requested = parse_set(set)
    check_reachable(requested, seen if seen is not None else seen_categories_of(tok), strict=strict)
    frames = [None] * len(motions) if frames is None else list(frames)
    if len(frames) != len(motions):
        raise ValueError(f"frames: expected one entry per motion ({len(motions)}), got {len(frames)}")
    targets = {s: category_index(s, lab) for s, lab in requested.items()}
    dev = tok.mean.device
    if solve_on not in ("reconstruction", "input"):
        raise ValueError(f"solve_on: expected 'reconstruction' or 'input', got {solve_on!r}")

    prep = []
    for m, fr_spec in zip(motions, frames):
        x = _as_features(m).to(dev)
        t = x.shape[1]
        fr = parse_frames(fr_spec, t)
        w = blend_weights(t, fr, blend)
        cats, idx = tok.encode(x)
        recon = _decode(tok, cats, idx, n_quantizers)
        base = recon if solve_on == "reconstruction" else x
        joints = features_to_joints(base[0].cpu().to(torch.float64))
        prep.append((x, fr, w, joints, base, cats, idx, recon))
    # One solve over the active frames of every motion (no smoothness across motions).
    act_joints = torch.cat([p[3][torch.from_numpy(p[2] > 0)] for p in prep])
    starts = torch.cat([torch.arange(int((p[2] > 0).sum())) == 0 for p in prep])
    sol = solve(act_joints, targets, segment_starts=starts, iters=solver_iters, seed=seed)
    act_w = torch.from_numpy(np.concatenate([p[2][p[2] > 0] for p in prep]))
    blended = sol.blended(act_joints, act_w)
    inside = act_w >= 1.0
    per_slot = sol.met[inside].double().mean(0)
    bad = [f"{s}={requested[s]!r} met on {float(r):.1%} of the requested frames"
           for s, r in zip(targets, per_slot) if r < 1]
    if bad:
        warnings.warn("edit: the pose cannot reach every request on every frame "
                      f"({'; '.join(bad)}); the requests may contradict each other or the "
                      "motion", UnreachableEditWarning, stacklevel=2)
    # The edit writes the requested and kinematically coupled slots; unrelated slots keep the
    # categories the motion was encoded with.
    written = [POSECODE_SLOTS.index(s) for s in list(requested) + edit_coupled_slots(requested)]

    results = []
    offset = 0
    for x, fr, w, joints, base, cats, idx, recon in prep:
        t = x.shape[1]
        active = w > 0
        n_act = int(active.sum())
        edited_joints = joints.clone()
        edited_joints[torch.from_numpy(active)] = blended[offset:offset + n_act]
        met = sol.met[offset:offset + n_act][inside[offset:offset + n_act]]
        offset += n_act
        x_edit = splice_features(base[0].cpu().numpy(), edited_joints.numpy(), active)
        xe = torch.from_numpy(x_edit).unsqueeze(0).to(dev)
        touched = sorted({int(f) // FRAMES_PER_TOKEN for f in np.flatnonzero(active)})
        cats_new = cats.clone()
        solved_cats = tok.posecode_categories(xe)
        rows = torch.tensor(touched, dtype=torch.int64).view(-1, 1)
        cols = torch.tensor(written, dtype=torch.int64).view(1, -1)
        cats_new[:, rows, cols] = solved_cats[:, rows, cols]
        idx_new = idx.clone()
        if idx.shape[-1] and residual == "drop":
            idx_new[:, touched] = -1
        if idx.shape[-1] and residual == "requantize":
            # Re-quantize the residual against the new pose latent. The decoder misses the
            # solved pose by its reconstruction error, much of it systematic (extreme poses
            # come out damped), so feed its miss back into the encoder input ``refine`` times.
            rows = torch.zeros(t, dtype=torch.bool, device=dev)
            rows[[f for j in touched for f in range(j * FRAMES_PER_TOKEN, (j + 1) * FRAMES_PER_TOKEN)]] = True
            x_enc = xe.clone()
            for k in range(refine + 1):
                idx_new[:, touched] = _residual_indices(tok, x_enc, cats_new)[:, touched]
                if k == refine:
                    break
                out = _decode(tok, cats_new, idx_new, n_quantizers)
                x_enc[:, rows] = x_enc[:, rows] + (xe - out)[:, rows]
        res = EditResult(features=None, reconstruction=recon[0].cpu().numpy(), target=x_edit,
                         categories=cats_new[0].cpu().numpy(), indices=idx_new[0].cpu().numpy(),
                         original_categories=cats[0].cpu().numpy(), original_indices=idx[0].cpu().numpy(),
                         frames=fr, weights=w, latent_frames=touched, requested=requested, residual=residual,
                         solver_met=float(met.double().mean()) if met.numel() else 1.0)
        results.append(res)
    if residual == "fit" and prep[0][6].shape[-1]:
        _fit(tok, results, [p[0] for p in prep], requested, n_quantizers, fit_iters, fit_search)
    for res, p in zip(results, prep):
        cats_new = torch.from_numpy(res.categories)[None].to(dev)
        idx_new = torch.from_numpy(res.indices)[None].to(dev)
        res.features = _decode(tok, cats_new, idx_new, n_quantizers)[0].cpu().numpy()
        if measure:
            from .metrics import edit_metrics
            res.metrics = edit_metrics(res, p[0][0].cpu().numpy())
    return results


def _fit(tok, results: list[EditResult], inputs: list[Tensor], requested: dict[str, str],
         n_quantizers: int | None, iters: int, search_sweeps: int = DEFAULT_FIT_SEARCH) -> None:
    """Fit the residual indices of every result's touched tokens in one batch (in place)."""
    from .fit import CodeSearch, fit_residual

    out = fit_residual(tok, *fit_arguments(tok, results, inputs, requested), n_quantizers=n_quantizers, iters=iters,
                       search=CodeSearch(sweeps=search_sweeps))
    for i, r in enumerate(results):
        r.indices = out[i, :r.categories.shape[0]].cpu().numpy()


def fit_arguments(tok, results: list[EditResult], inputs: list[Tensor], requested: dict[str, str]) -> tuple:
    """The padded batch :func:`rvqfast.editing.fit.fit_residual` takes, from edit results
    (their ``original_indices`` are the starting residual) and the input features."""

    dev = tok.mean.device
    b = len(results)
    n = max(r.categories.shape[0] for r in results)
    q = results[0].indices.shape[-1]
    t = FRAMES_PER_TOKEN * n
    lengths = torch.tensor([r.categories.shape[0] for r in results])
    cats = torch.zeros(b, n, NUM_SLOTS, dtype=torch.int64)
    idx = torch.zeros(b, n, q, dtype=torch.int64)
    touched = torch.zeros(b, n, dtype=torch.bool)
    weights = torch.zeros(b, t)
    target = torch.zeros(b, t, NUM_JOINTS, 3)
    bones = torch.zeros(b, NUM_JOINTS - 1)
    req = torch.tensor([POSECODE_SLOTS.index(s) for s in requested])
    coupled = torch.tensor([POSECODE_SLOTS.index(s) for s in edit_coupled_slots(requested)], dtype=torch.int64)
    unrelated = torch.ones(NUM_SLOTS, dtype=torch.bool)
    unrelated[req] = False
    unrelated[coupled] = False
    goal = torch.zeros(b, t, NUM_SLOTS, dtype=torch.int64)
    tgt_cat = torch.tensor([category_index(s, lab) for s, lab in requested.items()])
    for i, (r, x) in enumerate(zip(results, inputs)):
        ni, ti = r.categories.shape[0], FRAMES_PER_TOKEN * r.categories.shape[0]
        cats[i, :ni] = torch.from_numpy(r.categories)
        idx[i, :ni] = torch.from_numpy(r.original_indices)
        touched[i, r.latent_frames] = True
        weights[i, :ti] = torch.from_numpy(r.weights)
        jt = features_to_joints(torch.from_numpy(np.asarray(r.target, np.float32)))
        jr = features_to_joints(torch.from_numpy(r.reconstruction))
        target[i, :ti] = jt
        bones[i] = frame_bone_lengths(features_to_joints(x[0].cpu().float())).median(0).values
        g = posecode_indices(jr)
        g[:, coupled] = posecode_indices(jt)[:, coupled]
        g[:, req] = tgt_cat
        goal[i, :ti] = g
    return tuple(x.to(dev) for x in (cats, idx, touched, lengths, target, bones, weights, goal, req,
                                     unrelated))


def _edit_with_bank(tok, motions, set, frames, *, residual, blend, n_quantizers, seen, strict, measure,  # noqa: A002
                    bank) -> list[EditResult]:
    from .bank import bank_tensors, complete_codes, request_vector

    if residual not in ("keep", "drop"):
        raise ValueError(f"residual: the bank method has no target motion to re-quantize against; "
                         f"use 'keep' or 'drop', got {residual!r}")
    bank = bank if bank is not None else getattr(tok, "posecode_bank", None)
    if bank is None:
        raise ValueError("bank: this tokenizer has no pose-code bank (posecode_bank.npy in the run folder); "
                         "pass bank= (rvqfast.editing.bank.bank_from_features)")
    requested = parse_set(set)
    check_reachable(requested, seen if seen is not None else seen_categories_of(tok), strict=strict)
    tensors = bank_tensors(bank)
    req = request_vector(requested)
    frames = [None] * len(motions) if frames is None else list(frames)
    results = []
    for m, fr_spec in zip(motions, frames):
        x = _as_features(m).to(tok.mean.device)
        t = x.shape[1]
        fr = parse_frames(fr_spec, t)
        w = blend_weights(t, fr, blend)
        wl = torch.from_numpy(w.reshape(-1, FRAMES_PER_TOKEN).mean(1)).to(torch.float32)[None]
        cats, idx = tok.encode(x)
        cats_new, met = complete_codes(cats.cpu(), req, wl, tensors)
        touched = [int(j) for j in torch.nonzero(wl[0] >= 0.5).flatten()]
        idx_new = idx.clone()
        if residual == "drop" and idx.shape[-1]:
            idx_new[:, touched] = -1
        recon = _decode(tok, cats, idx, n_quantizers)
        edited = _decode(tok, cats_new.to(cats.device), idx_new, n_quantizers)
        x_np = x[0].cpu().numpy()
        res = EditResult(features=edited[0].cpu().numpy(), reconstruction=recon[0].cpu().numpy(), target=None,
                         categories=cats_new[0].numpy(), indices=idx_new[0].cpu().numpy(),
                         original_categories=cats[0].cpu().numpy(), original_indices=idx[0].cpu().numpy(),
                         frames=fr, weights=w, latent_frames=touched, requested=requested, residual=residual,
                         solver_met=float(met[0, touched].mean()) if touched else 1.0)
        if measure:
            from .metrics import edit_metrics
            res.metrics = edit_metrics(res, x_np)
        results.append(res)
    return results


__all__ = ["EditResult", "RESIDUAL_POLICIES", "blend_weights", "edit", "edit_many", "joints_to_features_same_length",
           "splice_features", "POSECODE_SLOTS"]
