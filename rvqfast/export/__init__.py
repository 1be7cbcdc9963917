"""ONNX export of the motion tokenizer and the residual quantizer for game engines.

``python -m rvqfast.export RUN --out DIR`` writes ``decoder.onnx``, ``encoder.onnx``, ``rvq.onnx``
and ``manifest.json``. Graphs use opset 15 by default and only the ops in
:data:`~rvqfast.export.allowlist.ALLOWED_OPS` (no loops, If, cdist or einsum).
"""
from __future__ import annotations

from .allowlist import ALLOWED_OPS, DEFAULT_OPSET, GraphCompatibilityError, check_graph, op_types
from .exporter import GRAPH_NAMES, export_graph, export_run, export_tokenizer
from .rvq_graph import build_rvq_model

__all__ = [
    "ALLOWED_OPS", "DEFAULT_OPSET", "GRAPH_NAMES", "GraphCompatibilityError", "build_rvq_model",
    "check_graph", "export_graph", "export_run", "export_tokenizer", "op_types",
]
