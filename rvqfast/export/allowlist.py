"""Which ONNX ops the exported graphs may use, and a checker that enforces it.

Game engines do not run every ONNX op: Unity Sentis and Unreal NNE each document their own
subset. ``ALLOWED_OPS`` is the conservative intersection we allow (the human-readable copy with
its rationale lives in the repository at ``export/allowed_ops.txt``; a test keeps the two equal).
:func:`check_graph` walks every node of a model, including the bodies of subgraph attributes,
so an op hidden inside a ``Loop`` or ``If`` body is reported too.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import onnx

DEFAULT_OPSET = 15

ALLOWED_OPS: frozenset[str] = frozenset(
    """
    Abs Add Div Mul Neg Sqrt Sub Cos Sin Max Min Clip
    Relu LeakyRelu Sigmoid Tanh
    Conv MatMul Gemm
    ArgMin
    Gather Concat Reshape Transpose Unsqueeze Squeeze Slice Shape Expand Identity Constant
    ConstantOfShape Resize CumSum ReduceSum ReduceMean
    Less Greater LessOrEqual GreaterOrEqual Equal Where Not
    Cast
    """.split()
)


class GraphCompatibilityError(ValueError):
    """An exported graph uses ops, domains or an opset that the target engines do not accept."""


def read_allowlist(path: str | Path) -> frozenset[str]:
    """Op names from an allow-list file: one per line, ``#`` starts a comment."""
    ops = set()
    for line in Path(path).read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            ops.add(name)
    if not ops:
        raise ValueError(f"allow-list {path} lists no ops")
    return frozenset(ops)


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and, recursively, of the graphs held in node attributes."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_nodes(sub)


def op_types(model: onnx.ModelProto) -> set[str]:
    """The set of ``op_type`` names a model uses (subgraphs included); other domains prefixed."""
    out = set()
    for node in iter_nodes(model.graph):
        out.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
    return out


def check_graph(
    model: onnx.ModelProto | str | Path,
    allowed: Iterable[str] | None = None,
    *,
    max_opset: int | None = None,
    full_check: bool = True,
) -> set[str]:
    """Validate a model for engine use; return the ops it uses.

    Runs :func:`onnx.checker.check_model` (with shape inference when ``full_check``), then
    checks that every op (subgraphs included) is in ``allowed`` (default :data:`ALLOWED_OPS`)
    and in the default ONNX domain, and that the default-domain opset is at most ``max_opset``
    when given.

    Raises:
        GraphCompatibilityError: listing every offending op, sorted, with how often it occurs.
        onnx.checker.ValidationError: the model is not valid ONNX.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    onnx.checker.check_model(model, full_check=full_check)
    allowed_set = frozenset(ALLOWED_OPS if allowed is None else allowed)
    counts: dict[str, int] = {}
    for node in iter_nodes(model.graph):
        name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        if name not in allowed_set:
            counts[name] = counts.get(name, 0) + 1
    if counts:
        listing = ", ".join(f"{k} (x{v})" for k, v in sorted(counts.items()))
        raise GraphCompatibilityError(
            f"graph {model.graph.name!r} uses ops outside the engine allow-list: {listing}"
        )
    if max_opset is not None:
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx") and imp.version > max_opset:
                raise GraphCompatibilityError(
                    f"graph {model.graph.name!r} needs opset {imp.version}, above the allowed {max_opset}"
                )
    return op_types(model)


__all__ = [
    "ALLOWED_OPS", "DEFAULT_OPSET", "GraphCompatibilityError", "check_graph", "iter_nodes",
    "op_types", "read_allowlist",
]
