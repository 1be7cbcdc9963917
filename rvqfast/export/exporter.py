"""Write ``decoder.onnx``, ``encoder.onnx`` and ``rvq.onnx`` (+ ``manifest.json``) for engines.

The tokenizer graphs go through PyTorch's TorchScript-based ONNX exporter (opset 13-17; the
``torch.export``-based one starts at opset 18, above what Unity Sentis documents), then the
residual search is appended node by node (:mod:`rvqfast.export.rvq_graph`). Every graph is
checked with ``onnx.checker`` and against the op allow-list before it is written.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from rvqfast._io import atomic_write_bytes
from rvqfast.motion import features as feat
from rvqfast.motion.posecodes import NUM_SLOTS, POSECODE_SLOTS, SLOT_SIZES
from rvqfast.motion.skeleton import FEATURE_DIM, FPS, JOINT_NAMES, NUM_JOINTS, PARENTS

from .allowlist import ALLOWED_OPS, DEFAULT_OPSET, check_graph
from .graphs import DecoderGraph, EncoderFront
from .rvq_graph import add_rvq_search, build_rvq_model, codebooks_of
from .transforms import int32_index_io, round_module_fp16, store_fp16

GRAPH_NAMES = ("decoder", "encoder", "rvq", "edit")
MIN_OPSET, MAX_OPSET = 13, 17
MANIFEST_FORMAT = "rvqfast.onnx-export/1"
_DTYPE_NAMES = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64", TensorProto.INT32: "int32",
                TensorProto.FLOAT16: "float16"}


def _check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset: expected an integer in [{MIN_OPSET}, {MAX_OPSET}] "
                         f"(Unity Sentis documents up to 15), got {opset!r}")
    return opset


def _torch_to_onnx(module: torch.nn.Module, args: tuple, input_names: list[str], output_names: list[str],
                   dynamic_axes: dict[str, dict[int, str]], opset: int, name: str) -> onnx.ModelProto:
    kwargs: dict[str, Any] = dict(
        opset_version=opset, input_names=input_names, output_names=output_names,
        dynamic_axes=dynamic_axes, do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation and warns about traced shape
        # arithmetic; the parity tests are what tells us the graph is right.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module.eval(), args, buf, **kwargs)
    model = onnx.load_from_string(buf.getvalue())
    model.graph.name = name
    model.producer_name = "rvqfast"
    return model


def _value_info(vi: onnx.ValueInfoProto) -> dict[str, Any]:
    tt = vi.type.tensor_type
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
    return {"name": vi.name, "dtype": _DTYPE_NAMES.get(tt.elem_type, str(tt.elem_type)), "shape": shape}


def _finish(model: onnx.ModelProto, *, fp16: bool, int32_indices: bool, check: bool, opset: int) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if fp16:
        half, full = store_fp16(model)
        info["weight_bytes"] = {"float16": half, "float32": full}
    if int32_indices:
        int32_index_io(model)
    model.ir_version = min(model.ir_version, 8)
    if check:
        info["ops"] = sorted(check_graph(model, ALLOWED_OPS, max_opset=opset))
    info["inputs"] = [_value_info(v) for v in model.graph.input]
    info["outputs"] = [_value_info(v) for v in model.graph.output]
    return info


def _set_dims(vi: onnx.ValueInfoProto, dims: list[str | int]) -> None:
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def build_decoder_model(tokenizer: torch.nn.Module, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """``decoder.onnx`` as an fp32 / int64 ModelProto (see :class:`~rvqfast.export.graphs.DecoderGraph`)."""
    _check_opset(opset)
    cfg = tokenizer.config
    graph = DecoderGraph(tokenizer)
    b, n = 2, 3
    args, names = [], []
    if cfg.uses_posecodes:
        args.append(torch.zeros(b, n, NUM_SLOTS, dtype=torch.int64))
        names.append("categories")
    if cfg.uses_rvq:
        args.append(torch.zeros(b, n, tokenizer.num_quantizers, dtype=torch.int64))
        names.append("indices")
    axes = {k: {0: "B", 1: "N"} for k in names + ["valid"]}
    axes.update({"features": {0: "B", 1: "T"}, "joints": {0: "B", 1: "T"}})
    model = _torch_to_onnx(graph, tuple(args), names, ["features", "joints", "valid"], axes, opset, "decoder")
    # The exporter cannot know T = 4N; name the output dim so engines see the relation.
    unit = cfg.frames_per_token
    for vi, tail in zip(model.graph.output, ([FEATURE_DIM], [NUM_JOINTS, 3])):
        _set_dims(vi, ["B", f"{unit}*N"] + tail)
    return model


def build_encoder_model(tokenizer: torch.nn.Module, *, opset: int = DEFAULT_OPSET,
                        fp16_codebooks: bool = False) -> onnx.ModelProto:
    """``encoder.onnx``: features (B, T, 263) -> categories (B, T//4, 70) [, indices (B, T//4, Q)]."""
    _check_opset(opset)
    cfg = tokenizer.config
    front = EncoderFront(tokenizer)
    x = torch.zeros(2, 4 * 3, FEATURE_DIM)
    outs = ["categories", "residual", "valid"] if cfg.uses_rvq else ["categories", "valid"]
    axes = {"features": {0: "B", 1: "T"}, "categories": {0: "B", 1: "N"}, "valid": {0: "B", 1: "N"}}
    if cfg.uses_rvq:
        axes["residual"] = {0: "BN"}
    model = _torch_to_onnx(front, (x,), ["features"], outs, axes, opset, "encoder")
    _set_dims(model.graph.output[0], ["B", "N", NUM_SLOTS])
    if not cfg.uses_rvq:
        return model
    g = model.graph
    cb = codebooks_of(tokenizer.rvq)
    idx_flat, _ = add_rvq_search(g, "residual", cb, prefix="rvq", fp16=fp16_codebooks)
    q = cb.shape[0]
    g.initializer.extend([
        numpy_helper.from_array(np.array([0], dtype="int64"), "rvq/shape_start"),
        numpy_helper.from_array(np.array([2], dtype="int64"), "rvq/shape_end"),
        numpy_helper.from_array(np.array([q], dtype="int64"), "rvq/num_stages"),
        numpy_helper.from_array(np.array([2], dtype="int64"), "rvq/axis2"),
        numpy_helper.from_array(np.array(-1, dtype="int64"), "rvq/skipped"),
    ])
    g.node.extend([
        helper.make_node("Shape", ["categories"], ["rvq/categories_shape"]),
        helper.make_node("Slice", ["rvq/categories_shape", "rvq/shape_start", "rvq/shape_end"], ["rvq/bn"]),
        helper.make_node("Concat", ["rvq/bn", "rvq/num_stages"], ["rvq/indices_shape"], axis=0),
        helper.make_node("Reshape", [idx_flat, "rvq/indices_shape"], ["rvq/indices_all"]),
        # Tokens flagged invalid by the front get index -1 (stage skipped) in every stage.
        helper.make_node("Cast", ["valid"], ["rvq/valid_bool"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["rvq/valid_bool", "rvq/axis2"], ["rvq/valid_col"]),
        helper.make_node("Where", ["rvq/valid_col", "rvq/indices_all", "rvq/skipped"], ["indices"]),
    ])
    residual_out = [o for o in g.output if o.name == "residual"][0]
    g.output.remove(residual_out)
    valid_out = [o for o in g.output if o.name == "valid"][0]
    g.output.remove(valid_out)  # re-appended last: outputs are categories, indices, valid
    g.output.append(helper.make_tensor_value_info("indices", TensorProto.INT64, ["B", "N", q]))
    g.output.append(valid_out)
    return model


def _codebooks_fp16_exact(cb: torch.Tensor) -> bool:
    return bool(torch.equal(cb.half().float(), cb))


def export_graph(kind: str, source: Any, path: str | Path, *, opset: int = DEFAULT_OPSET,
                 fp16: bool = False, int32_indices: bool = False, check: bool = True) -> dict[str, Any]:
    """Export one graph and write it to ``path``; returns its manifest entry.

    Args:
        kind: ``"decoder"``, ``"encoder"`` (``source`` is a MotionTokenizer) or ``"rvq"``
            (``source`` is a (Q, K, D) codebooks tensor or a ResidualVQ module).
        fp16: store the large weights as fp16 (the model's weights are rounded to fp16 first; all
            math, inputs and outputs stay fp32; indices stay integers).
        int32_indices: int32 instead of int64 index inputs/outputs.
        check: run onnx.checker and the op allow-list before writing.
    """
    if kind not in GRAPH_NAMES:
        raise ValueError(f"kind: expected one of {GRAPH_NAMES}, got {kind!r}")
    _check_opset(opset)
    if kind == "edit":  # token-level pose-code edits (rvqfast.export.edit_graph)
        from .edit_graph import build_edit_model
        bank = getattr(source, "posecode_bank", None)
        if bank is None:
            raise ValueError("edit: the tokenizer has no pose-code bank (the run folder's posecode_bank.npy, "
                             "written by python -m rvqfast.train); set tokenizer.posecode_bank")
        model = build_edit_model(bank, source.num_quantizers, source.config.codebook_size, opset=opset)
    elif kind == "rvq":
        model = build_rvq_model(source, opset=opset, fp16=fp16)
    else:
        tok = round_module_fp16(source) if fp16 else source
        tok.eval()
        if kind == "decoder":
            model = build_decoder_model(tok, opset=opset)
        else:
            exact = tok.config.uses_rvq and _codebooks_fp16_exact(codebooks_of(tok.rvq))
            model = build_encoder_model(tok, opset=opset, fp16_codebooks=fp16 and exact)
    info = _finish(model, fp16=fp16, int32_indices=int32_indices, check=check, opset=opset)
    data = model.SerializeToString()
    atomic_write_bytes(Path(path), data)
    info["file"] = Path(path).name
    info["sha256"] = hashlib.sha256(data).hexdigest()
    info["bytes"] = len(data)
    return info


def _motion_info(tokenizer: torch.nn.Module) -> dict[str, Any]:
    cfg = tokenizer.config
    layout = {k: [s.start, s.stop] for k, s in (
        ("root_rot_vel", feat.ROOT_ROT_VEL), ("root_lin_vel", feat.ROOT_LIN_VEL), ("root_y", feat.ROOT_Y),
        ("ric", feat.RIC), ("rot6d", feat.ROT6D), ("local_vel", feat.LOCAL_VEL),
        ("foot_contact", feat.FOOT_CONTACT))}
    return {
        "model": cfg.model, "fps": FPS, "frames_per_token": cfg.frames_per_token,
        "units": "metres", "up_axis": "+Y", "forward_axis_frame0": "+Z",
        "feature_dim": FEATURE_DIM, "feature_layout": layout,
        "num_joints": NUM_JOINTS, "joint_names": list(JOINT_NAMES), "parents": list(PARENTS),
        "posecode_slots": list(POSECODE_SLOTS), "posecode_slot_sizes": list(SLOT_SIZES),
        "num_quantizers": tokenizer.num_quantizers, "codebook_size": cfg.codebook_size,
        "skipped_stage_index": -1,
        # decoder.onnx already sets these lengths (None: decoded poses keep the decoder's own).
        "skeleton_bone_lengths_m": tokenizer.skeleton.tolist() if tokenizer.skeleton is not None else None,
    }


def _check_out(out_dir: str | Path) -> None:
    """Refuse a file, or a non-empty folder that is not an earlier export (its files are not ours)."""
    from rvqfast._cli import out_folder_problem

    problem = out_folder_problem(out_dir, "manifest.json", (MANIFEST_FORMAT,), "an rvqfast export folder")
    if problem:
        raise FileExistsError(problem)


def export_run(run_dir: str | Path, out_dir: str | Path, *, graphs: list[str] | tuple[str, ...] | None = None,
               opset: int = DEFAULT_OPSET, fp16: bool = False, int32_indices: bool = False) -> dict[str, Any]:
    """Export the tokenizer of a training run folder; write graphs + ``manifest.json`` to ``out_dir``.

    ``graphs`` defaults to every graph the model variant has (``rvq`` needs a residual quantizer).
    Only files named ``<graph>.onnx`` and ``manifest.json`` are written, all inside ``out_dir``.
    """
    from rvqfast.models.tokenizer import MotionTokenizer

    _check_opset(opset)
    _check_out(out_dir)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: {run_dir} is not a folder; expected a run written by "
                                f"`python -m rvqfast.train --out RUN` (config.json + model.safetensors)")
    tok = MotionTokenizer.load(run_dir, device="cpu").eval()
    from rvqfast.editing.bank import load_bank
    tok.posecode_bank = load_bank(run_dir)  # None for runs without one: no edit.onnx
    return export_tokenizer(tok, out_dir, graphs=graphs, opset=opset, fp16=fp16,
                            int32_indices=int32_indices, source=str(run_dir))


def export_tokenizer(tokenizer: torch.nn.Module, out_dir: str | Path, *, graphs=None, opset: int = DEFAULT_OPSET,
                     fp16: bool = False, int32_indices: bool = False, source: str | None = None) -> dict[str, Any]:
    """Like :func:`export_run` for an in-memory :class:`MotionTokenizer`."""
    import rvqfast

    _check_opset(opset)
    available = [g for g in GRAPH_NAMES if (g != "rvq" or tokenizer.config.uses_rvq)
                 and (g != "edit" or getattr(tokenizer, "posecode_bank", None) is not None)]
    if graphs is None:
        graphs = available
    graphs = list(dict.fromkeys(graphs))
    for g in graphs:
        if g not in GRAPH_NAMES:
            raise ValueError(f"graphs: unknown graph {g!r}; choose from {list(GRAPH_NAMES)}")
        if g not in available:
            raise ValueError(f"graphs: {g!r} is not available for model {tokenizer.config.model!r} "
                             f"(rvq needs a residual quantizer, edit a pose-code bank); available: {available}")
    if not graphs:
        raise ValueError("graphs: expected at least one graph name")
    _check_out(out_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "rvqfast_version": rvqfast.__version__,
        "torch_version": torch.__version__.split("+")[0], "onnx_version": onnx.__version__,
        "opset": opset, "fp16_weights": fp16, "int32_indices": int32_indices,
        "source": source, "motion": _motion_info(tokenizer), "graphs": {},
    }
    for g in graphs:
        src = tokenizer.rvq if g == "rvq" else tokenizer
        if g == "rvq" and fp16:
            src = round_module_fp16(tokenizer).rvq
        manifest["graphs"][g] = export_graph(g, src, out / f"{g}.onnx", opset=opset, fp16=fp16,
                                             int32_indices=int32_indices)
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


__all__ = ["GRAPH_NAMES", "MANIFEST_FORMAT", "build_decoder_model", "build_encoder_model", "export_graph",
           "export_run", "export_tokenizer"]
