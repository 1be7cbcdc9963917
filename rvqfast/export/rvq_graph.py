"""The residual quantizer as a plain ONNX graph, built node by node.

Each stage is unrolled (Q is fixed at export time) and uses only Gemm, ArgMin, Gather and
elementwise ops, which every engine runs. The distance is the one of the reference backend,
``‖c−μ‖² − 2 (x−μ)·(c−μ)`` with μ the stage codebook's mean, as a single
``Gemm(x−μ, c−μ, C=‖c−μ‖², alpha=−2, transB=1)``: centring keeps fp32 accurate far from the
origin, and ``ArgMin`` (``select_last_index=0``) resolves exact ties to the lowest index, as the
reference does. ``‖c−μ‖²`` and μ are computed in PyTorch with the reference's own expressions so
they match it bit for bit; ``c−μ`` is left in the graph as a ``Sub`` of two constants (runtimes
fold it at load time) so that with ``fp16=True`` only the fp16 codebook is stored.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from rvqfast._validate import SEARCH_ABS_LIMIT

from .allowlist import DEFAULT_OPSET


def codebooks_of(quantizer: object) -> torch.Tensor:
    """The (Q, K, D) float32 codebooks of a tensor or a ResidualVQ-like module.

    Accepts a (Q, K, D) tensor / array, or a module with a ``codebooks`` property (rvqfast or
    vector-quantize-pytorch ``ResidualVQ``). Modules that transform vectors around the search
    (input/output projections, cosine-similarity codebooks) are refused: the graph would not
    compute what the module computes.
    """
    if isinstance(quantizer, np.ndarray):
        quantizer = torch.from_numpy(quantizer)
    if isinstance(quantizer, torch.Tensor):
        cb = quantizer
    else:
        if not hasattr(quantizer, "codebooks"):
            raise ValueError(
                "quantizer: expected a (Q, K, D) codebooks tensor or a ResidualVQ-like module with a "
                f"'codebooks' property, got {type(quantizer).__name__}"
            )
        for proj in ("project_in", "project_out"):
            mod = getattr(quantizer, proj, None)
            if mod is not None and not isinstance(mod, torch.nn.Identity):
                raise ValueError(
                    f"quantizer: {proj} is {type(mod).__name__}, not Identity; export of projected "
                    "quantizers (codebook_dim != dim) is not supported"
                )
        layers = getattr(quantizer, "layers", [])
        if any(getattr(layer, "use_cosine_sim", False) for layer in layers):
            raise ValueError("quantizer: cosine-similarity codebooks are not supported by the export")
        cb = quantizer.codebooks
    cb = cb.detach()
    if cb.dim() != 3:
        raise ValueError(f"codebooks: expected shape (Q, K, D), got {tuple(cb.shape)}")
    if 0 in cb.shape:
        raise ValueError(f"codebooks: every dimension must be >= 1, got {tuple(cb.shape)}")
    if not cb.is_floating_point():
        raise ValueError(f"codebooks: expected a floating dtype, got {cb.dtype}")
    if not bool(torch.isfinite(cb).all()):
        raise ValueError("codebooks contains NaN or Inf values")
    return cb.float().cpu().contiguous()


def round_fp16(cb: torch.Tensor) -> torch.Tensor:
    """Codebooks rounded to the nearest fp16 value (what an ``fp16=True`` graph stores)."""
    return cb.half().float()


def add_rvq_search(
    graph: onnx.GraphProto,
    x_name: str,
    codebooks: torch.Tensor,
    *,
    prefix: str = "rvq",
    fp16: bool = False,
    mask_name: str | None = None,
) -> tuple[str, str]:
    """Append the unrolled residual search on ``x_name`` (N, D) float32 to ``graph``.

    Returns the names of the (N, Q) int64 indices and the (N, D) float32 quantized tensors.
    ``fp16`` stores the codebooks as fp16 (they are rounded first; all math stays fp32).
    """
    cb = round_fp16(codebooks) if fp16 else codebooks
    q, k, d = cb.shape
    nodes, inits = graph.node, graph.initializer

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    stored = cb.half().numpy() if fp16 else cb.numpy()
    residual = x_name
    quantized = None
    idx_cols = []
    axes1 = init(f"{prefix}/axes1", np.array([1], dtype=np.int64))
    for s in range(q):
        p = f"{prefix}/stage{s}"
        cb_s = cb[s]
        # Same expressions as rvqfast.backends.reference.search, so the constants match it exactly.
        mu = cb_s.mean(0)
        cc = cb_s - mu
        c_norm = (cc * cc).sum(1)
        cb_name = init(f"{p}/codebook" + ("_fp16" if fp16 else ""), np.ascontiguousarray(stored[s]))
        if fp16:
            nodes.append(helper.make_node("Cast", [cb_name], [f"{p}/codebook"], to=TensorProto.FLOAT))
            cb_name = f"{p}/codebook"
        mu_name = init(f"{p}/mean", mu.numpy())
        cnorm_name = init(f"{p}/centred_sqnorm", c_norm.numpy())
        nodes.append(helper.make_node("Sub", [cb_name, mu_name], [f"{p}/centred_codebook"]))
        nodes.append(helper.make_node("Sub", [residual, mu_name], [f"{p}/centred_x"]))
        nodes.append(helper.make_node(
            "Gemm", [f"{p}/centred_x", f"{p}/centred_codebook", cnorm_name], [f"{p}/dist"],
            alpha=-2.0, beta=1.0, transB=1,
        ))
        nodes.append(helper.make_node(
            "ArgMin", [f"{p}/dist"], [f"{p}/index"], axis=1, keepdims=0, select_last_index=0
        ))
        nodes.append(helper.make_node("Gather", [cb_name, f"{p}/index"], [f"{p}/code"], axis=0))
        if s + 1 < q:
            nodes.append(helper.make_node("Sub", [residual, f"{p}/code"], [f"{p}/residual"]))
            residual = f"{p}/residual"
        if quantized is None:
            quantized = f"{p}/code"
        else:
            nodes.append(helper.make_node("Add", [quantized, f"{p}/code"], [f"{p}/quantized"]))
            quantized = f"{p}/quantized"
        nodes.append(helper.make_node("Unsqueeze", [f"{p}/index", axes1], [f"{p}/index_col"]))
        idx_cols.append(f"{p}/index_col")
    if len(idx_cols) == 1:
        nodes.append(helper.make_node("Identity", idx_cols, [f"{prefix}/indices"]))
    else:
        nodes.append(helper.make_node("Concat", idx_cols, [f"{prefix}/indices"], axis=1))
    return f"{prefix}/indices", quantized


def add_input_guard(graph: onnx.GraphProto, x_name: str, limit: float, *, prefix: str) -> tuple[str, str]:
    """Append nodes that make ``x_name`` (N, D) safe to search.

    Returns ``(safe, row_ok)``: ``safe`` is ``x`` with every NaN, Inf or ``|x| > limit`` entry
    replaced by 0, ``row_ok`` (N,) bool is True where a row had no such entry. Uses Abs,
    LessOrEqual (False for NaN), Not, Cast, ReduceSum, Equal and Where, all on the allow-list.
    """
    graph.initializer.extend([
        numpy_helper.from_array(np.array(limit, dtype=np.float32), f"{prefix}/limit"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), f"{prefix}/zero_f"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), f"{prefix}/reduce_axes"),
    ])
    p = prefix
    graph.node.extend([
        helper.make_node("Abs", [x_name], [f"{p}/abs"]),
        helper.make_node("LessOrEqual", [f"{p}/abs", f"{p}/limit"], [f"{p}/ok"]),
        helper.make_node("Where", [f"{p}/ok", x_name, f"{p}/zero_f"], [f"{p}/safe"]),
        helper.make_node("Not", [f"{p}/ok"], [f"{p}/bad"]),
        helper.make_node("Cast", [f"{p}/bad"], [f"{p}/bad_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", [f"{p}/bad_f", f"{p}/reduce_axes"], [f"{p}/bad_count"], keepdims=0),
        helper.make_node("Equal", [f"{p}/bad_count", f"{p}/zero_f"], [f"{p}/row_ok"]),
    ])
    return f"{p}/safe", f"{p}/row_ok"


def build_rvq_model(
    quantizer: object,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    int32_indices: bool = False,
    input_name: str = "vectors",
    indices_name: str = "indices",
    quantized_name: str = "quantized",
) -> onnx.ModelProto:
    """``rvq.onnx``: vectors (N, D) float32 -> indices (N, Q) int64/int32, quantized (N, D) float32,
    valid (N,) int64/int32.

    ``N`` is dynamic. See the module docstring for the arithmetic. The graph guards its input
    (see :func:`add_input_guard`): a row holding NaN, Inf or ``|x| > SEARCH_ABS_LIMIT`` gets
    indices -1, quantized 0 and valid 0 instead of a plausible-looking code.
    """
    cb = codebooks_of(quantizer)
    q, _, d = cb.shape
    graph = helper.make_graph([], "rvq", [], [])
    graph.input.append(helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", d]))
    safe, row_ok = add_input_guard(graph, input_name, SEARCH_ABS_LIMIT, prefix="guard")
    idx, quant = add_rvq_search(graph, safe, cb, fp16=fp16)
    idx_type = TensorProto.INT32 if int32_indices else TensorProto.INT64
    inits = graph.initializer
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "guard/axes1"))
    inits.append(numpy_helper.from_array(np.array(-1, dtype=np.int64), "guard/skipped"))
    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "guard/zero"))
    graph.node.extend([
        helper.make_node("Unsqueeze", [row_ok, "guard/axes1"], ["guard/row_ok_col"]),
        helper.make_node("Where", ["guard/row_ok_col", idx, "guard/skipped"], ["guard/indices"]),
        helper.make_node("Where", ["guard/row_ok_col", quant, "guard/zero"], [quantized_name]),
    ])
    if int32_indices:
        graph.node.append(helper.make_node("Cast", ["guard/indices"], [indices_name], to=TensorProto.INT32))
    else:
        graph.node.append(helper.make_node("Identity", ["guard/indices"], [indices_name]))
    graph.node.append(helper.make_node("Cast", [row_ok], ["valid"], to=idx_type))
    graph.output.append(helper.make_tensor_value_info(indices_name, idx_type, ["N", q]))
    graph.output.append(helper.make_tensor_value_info(quantized_name, TensorProto.FLOAT, ["N", d]))
    graph.output.append(helper.make_tensor_value_info("valid", idx_type, ["N"]))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="rvqfast"
    )
    model.ir_version = min(model.ir_version, 8)  # IR 8 = ONNX 1.10+, read by every engine we target
    return model


__all__ = ["codebooks_of", "round_fp16", "add_rvq_search", "add_input_guard", "build_rvq_model"]
