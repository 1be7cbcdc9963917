"""``edit.onnx``: pose-code edits inside a game engine, next to ``decoder.onnx``.

Inputs: ``categories`` (B, N, 70) int64 and ``indices`` (B, N, Q) int64 (the tokens the engine
holds), ``request`` (70,) int64 (target category per slot, -1 = leave free; several slots at
once) and ``weight`` (B, N) float32 (latent frames to edit: >= 0.5; an engine turns a motion-frame
window [a, b) into latent frames a//4 .. (b-1)//4). Outputs: ``categories`` and ``indices`` to
feed ``decoder.onnx`` (edited frames get the consistent bank completion of
:mod:`rvqfast.editing.bank` and residual index -1 -- pose codes only -- on the edited frames; keep
the original indices instead to keep the old residual) and ``met`` (B, N) float32 (1 where
every request holds in the chosen assignment, 0 where no seen pose meets them all) and ``valid``
(B, N) int64 (0 where the token's input was bad: an out-of-range category or residual index, a
NaN weight, or an out-of-range entry in ``request``; bad categories are read as 0, bad indices
as -1, bad request entries as free and a NaN/Inf weight as "not edited", so the graph never reads
outside its tables -- the same guard as ``decoder.onnx``).

The bank (pose-code assignments seen in training) is a constant of the graph: the run folder's
``posecode_bank.npy``, written by ``python -m rvqfast.train``.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from rvqfast.editing.bank import bank_tensors, complete_codes
from rvqfast.motion.posecodes import NUM_SLOTS, SLOT_SIZES


class EditGraph(nn.Module):
    """Token-level edit (see the module docstring); the math is :func:`complete_codes`."""

    def __init__(self, bank: np.ndarray, codebook_size: int) -> None:
        super().__init__()
        for name, value in bank_tensors(bank).items():
            self.register_buffer(name, value)
        self.register_buffer("slot_sizes", torch.as_tensor(SLOT_SIZES, dtype=torch.int64))
        self.codebook_size = int(codebook_size)

    def forward(self, categories: Tensor, indices: Tensor, request: Tensor, weight: Tensor):
        # Integer sums and comparisons rather than Or / IsNaN: those are not on the op allow-list.
        bad_cat = ((categories < 0).to(torch.int64) + (categories >= self.slot_sizes).to(torch.int64)) > 0
        categories = torch.where(bad_cat, torch.zeros_like(categories), categories)
        bad_idx = ((indices < -1).to(torch.int64) + (indices >= self.codebook_size).to(torch.int64)) > 0
        indices = torch.where(bad_idx, torch.full_like(indices, -1), indices)
        bad_req = ((request < -1).to(torch.int64) + (request >= self.slot_sizes).to(torch.int64)) > 0
        request = torch.where(bad_req, torch.full_like(request, -1), request)
        ok_w = weight.abs() <= 1e30  # False for NaN and +-Inf
        weight = torch.where(ok_w, weight, torch.zeros_like(weight))
        bad = (bad_cat.to(torch.float32).sum(-1) + bad_idx.to(torch.float32).sum(-1)
               + (~ok_w).to(torch.float32) + bad_req.to(torch.float32).sum())
        t = {n: getattr(self, n) for n in ("bank", "bank_onehot_t", "coupling", "slot_of_cat", "cat_offset", "cat_ids")}
        cats, met = complete_codes(categories, request, weight, t)
        edited = (weight >= 0.5).unsqueeze(-1)
        idx = torch.where(edited, torch.full_like(indices, -1), indices)
        return cats, idx, met, (bad == 0).to(torch.int64)


def build_edit_model(bank: np.ndarray, num_quantizers: int, codebook_size: int, *, opset: int) -> onnx.ModelProto:
    """The ONNX model of :class:`EditGraph` for ``bank`` (K, 70) and Q residual stages of K codes."""
    graph = EditGraph(bank, codebook_size).eval()
    cats = torch.zeros(1, 3, NUM_SLOTS, dtype=torch.int64)
    idx = torch.zeros(1, 3, max(num_quantizers, 1), dtype=torch.int64)
    req = torch.full((NUM_SLOTS,), -1, dtype=torch.int64)
    w = torch.ones(1, 3)
    buf = io.BytesIO()
    torch.onnx.export(graph, (cats, idx, req, w), buf, opset_version=opset,
                      input_names=["categories", "indices", "request", "weight"],
                      output_names=["categories_out", "indices_out", "met", "valid"],
                      dynamic_axes={"categories": {0: "B", 1: "N"}, "indices": {0: "B", 1: "N", 2: "Q"},
                                    "weight": {0: "B", 1: "N"}, "categories_out": {0: "B", 1: "N"},
                                    "indices_out": {0: "B", 1: "N", 2: "Q"}, "met": {0: "B", 1: "N"},
                                    "valid": {0: "B", 1: "N"}},
                      dynamo=False)
    return onnx.load_from_string(buf.getvalue())


__all__ = ["EditGraph", "build_edit_model"]
