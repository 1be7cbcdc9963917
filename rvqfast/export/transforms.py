"""Graph rewrites applied after export: fp16 weight storage and 32-bit index inputs/outputs.

fp16 works in two steps so that an fp16 graph computes *exactly* what PyTorch computes on the
rounded model: :func:`round_module_fp16` rounds the large weights of the model to fp16 values
(kept in fp32) before export, then :func:`store_fp16` stores every large fp32 initializer whose
values survive the round trip as fp16, followed by a ``Cast`` back to fp32. Initializers that
export-time folding derived from several weights (and so do not round-trip) stay fp32. All
arithmetic stays fp32; graph inputs and outputs are unchanged.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

# Tensors smaller than this (biases, normalisation statistics) stay fp32: they weigh nothing and
# rounding them would move outputs for no gain.
FP16_MIN_NUMEL = 4096


def round_module_fp16(module: torch.nn.Module, min_numel: int = FP16_MIN_NUMEL) -> torch.nn.Module:
    """A deep copy of ``module`` whose float parameters/buffers with >= ``min_numel`` elements
    hold fp16-representable values (stored fp32)."""
    out = copy.deepcopy(module)
    with torch.no_grad():
        for t in list(out.parameters()) + list(out.buffers()):
            if t.is_floating_point() and t.numel() >= min_numel:
                t.copy_(t.half().float())
    return out


def store_fp16(model: onnx.ModelProto, min_numel: int = FP16_MIN_NUMEL) -> tuple[int, int]:
    """Store exactly-representable fp32 initializers (>= ``min_numel`` elements) as fp16 in place.

    Returns (bytes stored as fp16, bytes left as fp32) over all float initializers.
    """
    graph = model.graph
    keep, casts = [], []
    fp16_bytes = fp32_bytes = 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            if init.data_type == TensorProto.FLOAT16:  # stored fp16 by the graph builder already
                fp16_bytes += numpy_helper.to_array(init).nbytes
            keep.append(init)
            continue
        arr = numpy_helper.to_array(init)
        half = arr.astype(np.float16)
        if arr.size >= min_numel and np.array_equal(half.astype(np.float32), arr, equal_nan=False):
            new = numpy_helper.from_array(half, init.name + "/fp16")
            keep.append(new)
            casts.append(helper.make_node("Cast", [new.name], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "/to_fp32"))
            fp16_bytes += half.nbytes
        else:
            keep.append(init)
            fp32_bytes += arr.nbytes
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return fp16_bytes, fp32_bytes


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def int32_index_io(model: onnx.ModelProto) -> list[str]:
    """Make every int64 graph input and output int32 (Unity Sentis tensors are 32-bit).

    Inputs get a ``Cast`` to int64 right after them, outputs a ``Cast`` to int32 right before,
    so the graph body is untouched. Returns the names changed.
    """
    graph = model.graph
    changed = []
    head = []
    for vi in graph.input:
        if vi.type.tensor_type.elem_type == TensorProto.INT64:
            inner = vi.name + "/int64"
            _rename_uses(graph, vi.name, inner)
            head.append(helper.make_node("Cast", [vi.name], [inner], to=TensorProto.INT64,
                                         name=vi.name + "/to_int64"))
            vi.type.tensor_type.elem_type = TensorProto.INT32
            changed.append(vi.name)
    tail = []
    for vi in graph.output:
        if vi.type.tensor_type.elem_type == TensorProto.INT64:
            inner = vi.name + "/int64"
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == vi.name:
                        node.output[i] = inner
            _rename_uses(graph, vi.name, inner)
            tail.append(helper.make_node("Cast", [inner], [vi.name], to=TensorProto.INT32,
                                         name=vi.name + "/to_int32"))
            vi.type.tensor_type.elem_type = TensorProto.INT32
            changed.append(vi.name)
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    return changed


__all__ = ["FP16_MIN_NUMEL", "round_module_fp16", "store_fp16", "int32_index_io"]
