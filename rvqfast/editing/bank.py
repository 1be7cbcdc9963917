"""Code-bank completion: consistent edits from pose codes alone (what a game engine can run).

The joint-space solver needs the decoded pose and an optimiser; an engine holding only the
tokens (categories, indices) gets a simpler, exportable completion instead. The *bank* holds
pose-code assignments (70 categories) seen in the training data, so every row is a
consistent whole-body assignment. For a request (target category per slot, -1 = free) on a
latent frame, :func:`complete_codes` picks the bank row that

1. meets every requested slot (a mismatch costs 1000 per slot), then
2. agrees best with the frame's current codes: unrelated slots weigh 1, slots coupled to a
   requested one (sharing a joint, ``POSECODE_SLOT_JOINTS``) weigh 0.1;

and writes its requested and coupled slots into the frame; unrelated slots keep their codes.
Written with allow-listed ONNX ops only (Gather, Equal, Cast, MatMul, ArgMin, Where, ...), so
:mod:`rvqfast.export.edit_graph` exports this very function as ``edit.onnx``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rvqfast.motion.posecodes import (
    NUM_CATEGORIES, NUM_SLOTS, POSECODE_SLOT_JOINTS, POSECODE_SLOTS, SLOT_OFFSETS, SLOT_SIZES,
)

BANK_FILE = "posecode_bank.npy"
MAX_BANK_CODES = 4096
REQUEST_COST = 1000.0
COUPLED_WEIGHT = 0.1


def coupling_matrix() -> np.ndarray:
    """(70, 70) float32: 1 where two different slots read a common joint."""
    sets = [set(POSECODE_SLOT_JOINTS[s]) for s in POSECODE_SLOTS]
    m = np.array([[float(i != k and bool(a & b)) for k, b in enumerate(sets)] for i, a in enumerate(sets)])
    return m.astype(np.float32)


def slot_of_category() -> np.ndarray:
    """(392,) int64: the slot each global category belongs to."""
    return np.repeat(np.arange(NUM_SLOTS), SLOT_SIZES).astype(np.int64)


def build_bank(categories: np.ndarray, max_codes: int = MAX_BANK_CODES, seed: int = 0) -> np.ndarray:
    """Distinct rows of ``categories`` (M, 70) (e.g. every latent frame of the training set),
    at most ``max_codes`` of them (a seeded random subset, the rarest-category rows first so
    every seen category stays in the bank), as (K, 70) uint8."""
    cats = np.asarray(categories).reshape(-1, NUM_SLOTS)
    uniq = np.unique(cats, axis=0)
    if uniq.shape[0] > max_codes:
        rng = np.random.default_rng(seed)
        flat = uniq + np.asarray(SLOT_OFFSETS)
        counts = np.bincount(flat.ravel(), minlength=NUM_CATEGORIES)
        rarity = counts[flat].min(axis=1)  # rows holding a rare category go first
        order = np.lexsort((rng.random(uniq.shape[0]), rarity))
        uniq = uniq[np.sort(order[:max_codes])]
    return uniq.astype(np.uint8)


def bank_from_features(features, max_codes: int = MAX_BANK_CODES, frames_per_token: int = 4) -> np.ndarray:
    """The bank of a list of RAW feature arrays (T, 263): codes of every ``frames_per_token``-th frame."""
    from rvqfast.motion.features import features_to_joints
    from rvqfast.motion.posecodes import posecode_indices
    joints = [np.asarray(features_to_joints(np.asarray(f, np.float32)[::frames_per_token])) for f in features]
    if not joints:
        raise ValueError("features: expected at least one motion to build the pose-code bank from")
    return build_bank(posecode_indices(torch.from_numpy(np.concatenate(joints))).numpy(), max_codes)


def load_bank(run_dir: str | Path) -> np.ndarray | None:
    """The bank a training run wrote (``posecode_bank.npy``), validated; None when absent."""
    p = Path(run_dir) / BANK_FILE
    if not p.is_file():
        return None
    try:
        bank = np.load(p, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{p}: not a plain numeric .npy array ({e})") from e
    if bank.ndim != 2 or bank.shape[1] != NUM_SLOTS or bank.shape[0] == 0 or not np.issubdtype(bank.dtype, np.integer):
        raise ValueError(f"{p}: expected integer pose codes of shape (K, {NUM_SLOTS}), got {bank.shape} {bank.dtype}")
    if ((bank < 0) | (bank >= np.asarray(SLOT_SIZES))).any():
        raise ValueError(f"{p}: entries must lie in [0, SLOT_SIZES[slot])")
    return bank.astype(np.int64)


def bank_tensors(bank: np.ndarray) -> dict[str, Tensor]:
    """Constant tensors of :func:`complete_codes` for ``bank`` (K, 70)."""
    b = torch.as_tensor(np.asarray(bank, np.int64))
    onehot = torch.zeros(b.shape[0], NUM_CATEGORIES)
    onehot.scatter_(1, b + torch.tensor(SLOT_OFFSETS), 1.0)
    return {"bank": b, "bank_onehot_t": onehot.t().contiguous(),  # (392, K)
            "coupling": torch.from_numpy(coupling_matrix()),
            "slot_of_cat": torch.from_numpy(slot_of_category()),
            "cat_offset": torch.tensor(SLOT_OFFSETS, dtype=torch.int64)[torch.from_numpy(slot_of_category())],
            "cat_ids": torch.arange(NUM_CATEGORIES, dtype=torch.int64)}


def complete_codes(categories: Tensor, request: Tensor, weight: Tensor, t: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Edited categories (B, N, 70) and ``met`` (B, N) float (1 where the chosen bank row meets
    every request) for ``categories`` (B, N, 70) int64, ``request`` (70,) int64 (target
    category per slot, -1 = free) and ``weight`` (B, N) float (frames with weight >= 0.5 are
    edited). ``t`` comes from :func:`bank_tensors`."""
    soc, off, ids = t["slot_of_cat"], t["cat_offset"], t["cat_ids"]
    cur = (torch.index_select(categories, 2, soc) + off == ids).to(torch.float32)          # (B, N, 392)
    req_on = (request >= 0).to(torch.float32)                                               # (70,)
    req_cat = ((torch.index_select(request, 0, soc) + off == ids).to(torch.float32)
               * torch.index_select(req_on, 0, soc))                                        # (392,)
    coupled = ((torch.matmul(req_on, t["coupling"]) > 0).to(torch.float32)) * (1.0 - req_on)
    w_slot = (1.0 - req_on) * (1.0 - coupled) + COUPLED_WEIGHT * coupled                    # (70,)
    agree = torch.matmul(cur * torch.index_select(w_slot, 0, soc), t["bank_onehot_t"])     # (B, N, K)
    req_miss = req_on.sum() - torch.matmul(req_cat, t["bank_onehot_t"])                     # (K,)
    best = torch.argmin(REQUEST_COST * req_miss - agree, dim=-1)                            # (B, N)
    row = torch.index_select(t["bank"], 0, best.reshape(-1)).reshape(categories.shape)      # (B, N, 70)
    # Products of 0/1 floats instead of a boolean And (not on the engine op allow-list).
    take = ((req_on + coupled).reshape(1, 1, -1) * (weight >= 0.5).to(torch.float32).unsqueeze(-1)) > 0.5
    met = (torch.index_select(req_miss, 0, best.reshape(-1)).reshape(best.shape) < 0.5).to(torch.float32)
    return torch.where(take, row, categories), met


def request_vector(requested: dict[str, str]) -> Tensor:
    """{slot: label} -> (70,) int64 target categories, -1 for free slots."""
    from rvqfast.motion.posecodes import category_index
    req = torch.full((NUM_SLOTS,), -1, dtype=torch.int64)
    for slot, label in requested.items():
        req[POSECODE_SLOTS.index(slot)] = category_index(slot, label)
    return req


__all__ = ["BANK_FILE", "MAX_BANK_CODES", "bank_from_features", "bank_tensors", "build_bank", "complete_codes",
           "coupling_matrix", "load_bank", "request_vector"]
