"""ONNX export: parity with PyTorch in onnxruntime, the engine op allow-list, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

ort = pytest.importorskip("onnxruntime")

import rvqfast  # noqa: E402
from rvqfast.export import GraphCompatibilityError, build_rvq_model, check_graph  # noqa: E402
from rvqfast.export.allowlist import ALLOWED_OPS, read_allowlist  # noqa: E402
from rvqfast.export.exporter import export_graph, export_run, export_tokenizer  # noqa: E402
from rvqfast.export.runtime import OnnxMotionTokenizer, make_session  # noqa: E402
from rvqfast.export.transforms import round_module_fp16  # noqa: E402
from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig  # noqa: E402
from rvqfast.motion.retarget import REFERENCE_BONE_LENGTHS  # noqa: E402

from oracle import sqdist64  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALLOWLIST_FILE = REPO / "export" / "allowed_ops.txt"
# (B, T) pairs; T multiple of 4 (encode refuses others, as MotionTokenizer.encode does).
SHAPES = [(1, 4), (2, 12), (3, 24)]


def _run(model: onnx.ModelProto | Path, feed: dict) -> list[np.ndarray]:
    """Outputs of a graph except its last, ``valid``, which must be all 1 for the good inputs
    these tests feed (bad inputs: tests/test_reliability_onnx.py)."""
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names[-1] == "valid", names
    *outs, valid = sess.run(None, feed)
    assert valid.dtype in (np.int64, np.int32) and (valid == 1).all()
    return outs


def _assert_rvq_same_up_to_ties(x: torch.Tensor, cb: torch.Tensor, got: np.ndarray, ref: torch.Tensor) -> None:
    """Stage by stage: rows may differ from the reference only where the stage's residual sits on
    a near-tie (contracts: d_got <= d_ref + 1e-4 (1 + d_ref), fp64); later stages are then moot."""
    got = torch.from_numpy(got.astype(np.int64))
    residual = x.double().clone()
    alive = torch.ones(x.shape[0], dtype=torch.bool)
    for s in range(cb.shape[0]):
        d = sqdist64(residual.float(), cb[s])
        dg = d.gather(1, got[:, s : s + 1]).squeeze(1)
        dr = d.gather(1, ref[:, s : s + 1]).squeeze(1)
        differ = alive & (got[:, s] != ref[:, s])
        assert bool((dg[differ] <= dr[differ] + 1e-4 * (1 + dr[differ])).all()), "index differs off a near-tie"
        alive &= ~differ
        residual -= cb[s].double()[ref[:, s]]
    assert float(alive.float().mean()) > 0.95, "too many near-ties to be a meaningful comparison"


# ----------------------------------------------------------------------------- allow-list


def test_allowlist_file_matches_python_constant():
    assert read_allowlist(ALLOWLIST_FILE) == ALLOWED_OPS
    for banned in ("Loop", "If", "Scan", "Einsum"):
        assert banned not in ALLOWED_OPS


def _tiny_model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])
    m.ir_version = 8
    return m


def test_checker_lists_offending_ops_including_subgraphs():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    then_g = helper.make_graph([helper.make_node("Einsum", ["x"], ["t"], equation="i->i")], "then", [],
                              [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    m = _tiny_model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)], [x, cond], [y])
    with pytest.raises(GraphCompatibilityError, match=r"Einsum \(x1\), If \(x1\)"):
        check_graph(m)
    ok = _tiny_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    assert check_graph(ok) == {"Relu"}
    with pytest.raises(GraphCompatibilityError, match="opset 15"):
        check_graph(ok, max_opset=13)


def test_checker_runs_onnx_checker():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    broken = _tiny_model([helper.make_node("Relu", ["missing"], ["y"])], [x], [y])
    with pytest.raises(onnx.checker.ValidationError):
        check_graph(broken)


# ----------------------------------------------------------------------------- rvq.onnx


@settings(max_examples=12)
@given(
    n=st.integers(1, 300), q=st.integers(1, 4), k=st.sampled_from([1, 2, 16, 64]), d=st.integers(1, 24),
    offset=st.sampled_from([0.0, 100.0]), seed=st.integers(0, 2**16),
)
def test_rvq_graph_matches_rvq_encode(n, q, k, d, offset, seed):
    g = torch.Generator().manual_seed(seed)
    cb = torch.randn(q, k, d, generator=g) + offset
    x = torch.randn(n, d, generator=g) * 2 + offset
    model = build_rvq_model(cb)
    idx, quant = _run(model, {"vectors": x.numpy()})
    ref_idx, ref_q = rvqfast.ops.rvq_encode(x, cb, backend="reference")
    assert idx.dtype == np.int64 and idx.shape == (n, q) and quant.shape == (n, d)
    _assert_rvq_same_up_to_ties(x, cb, idx, ref_idx)
    same = (torch.from_numpy(idx) == ref_idx).all(1).numpy()
    np.testing.assert_allclose(quant[same], ref_q.numpy()[same], atol=1e-4, rtol=0)


def test_rvq_graph_exact_ties_pick_lowest_index():
    cb = torch.zeros(2, 4, 3)
    cb[:, 1] = 1.0
    cb[:, 3] = 1.0  # duplicate of code 1
    x = torch.ones(5, 3)
    idx, quant = _run(build_rvq_model(cb), {"vectors": x.numpy()})
    assert (idx[:, 0] == 1).all()  # first stage: codes 1 and 3 tie exactly
    assert (idx[:, 1] == 0).all()  # residual 0: codes 0 and 2 tie at distance 0
    np.testing.assert_array_equal(quant, x.numpy())


def test_rvq_graph_fp16_int32_is_exact_on_rounded_codebooks():
    g = torch.Generator().manual_seed(3)
    cb = torch.randn(3, 128, 32, generator=g)
    x = torch.randn(500, 32, generator=g)
    m32 = build_rvq_model(cb)
    m16 = build_rvq_model(cb, fp16=True, int32_indices=True)
    assert check_graph(m16) >= {"Cast", "Gemm", "ArgMin", "Gather"}
    assert m16.ByteSize() < 0.6 * m32.ByteSize()
    idx, quant = _run(m16, {"vectors": x.numpy()})
    assert idx.dtype == np.int32 and quant.dtype == np.float32
    rounded = cb.half().float()
    ref_idx, ref_q = rvqfast.ops.rvq_encode(x, rounded, backend="reference")
    _assert_rvq_same_up_to_ties(x, rounded, idx, ref_idx)
    np.testing.assert_allclose(quant, ref_q.numpy(), atol=1e-4, rtol=0)


def test_rvq_graph_from_residualvq_module(tmp_path):
    from rvqfast.models._quantizer import ResidualVQ

    torch.manual_seed(0)
    rvq = ResidualVQ(dim=16, num_quantizers=3, codebook_size=32, kmeans_init=False).eval()
    info = export_graph("rvq", rvq, tmp_path / "rvq.onnx", opset=13)
    assert [i["shape"] for i in info["inputs"]] == [["N", 16]]
    x = torch.randn(64, 16)
    idx, quant = _run(tmp_path / "rvq.onnx", {"vectors": x.numpy()})
    cb = rvq.codebooks.detach()
    ref_idx, ref_q = rvqfast.ops.rvq_encode(x, cb, backend="reference")
    _assert_rvq_same_up_to_ties(x, cb, idx, ref_idx)
    with torch.no_grad():
        mod_q, mod_idx, _ = rvq(x[None])
    np.testing.assert_array_equal(idx, mod_idx[0].numpy())
    np.testing.assert_allclose(quant, mod_q[0].numpy(), atol=1e-4, rtol=0)
    assert onnx.load(str(tmp_path / "rvq.onnx")).opset_import[0].version == 13


def test_rvq_graph_rejects_bad_codebooks():
    with pytest.raises(ValueError, match=r"codebooks: expected shape \(Q, K, D\)"):
        build_rvq_model(torch.randn(4, 8))
    with pytest.raises(ValueError, match="NaN or Inf"):
        build_rvq_model(torch.full((1, 2, 3), float("nan")))
    with pytest.raises(ValueError, match="quantizer"):
        build_rvq_model(object())
    with pytest.raises(ValueError, match="opset"):
        export_graph("rvq", torch.randn(1, 2, 3), "unused.onnx", opset=11)


# ----------------------------------------------------------------------------- tokenizer graphs


def _tokenizer(model: str, width: int = 48) -> MotionTokenizer:
    torch.manual_seed(0)
    cfg = TokenizerConfig(model=model, width=width, code_dim=16, num_quantizers=3, codebook_size=32,
                          dilations=(1,), kmeans_init=False)
    tok = MotionTokenizer(cfg).eval()
    # Non-trivial normalisation so the (de)normalise steps are exercised.
    g = torch.Generator().manual_seed(1)
    tok.set_normalization(torch.randn(263, generator=g) * 0.1, torch.rand(263, generator=g) + 0.5)
    return tok


def _features(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, 263, generator=torch.Generator().manual_seed(seed)) * 0.3


@pytest.fixture(scope="module", params=["posecode_rvq", "posecode", "rvq"])
def exported(request, tmp_path_factory):
    tok = _tokenizer(request.param)
    if request.param != "posecode":  # decoder.onnx must set the bone lengths as decode() does
        tok.set_skeleton(torch.as_tensor(REFERENCE_BONE_LENGTHS[1:]))
    out = tmp_path_factory.mktemp(f"export_{request.param}")
    manifest = export_tokenizer(tok, out)
    return tok, out, manifest


def test_manifest_records_the_skeleton(exported):
    tok, _, manifest = exported
    got = manifest["motion"]["skeleton_bone_lengths_m"]
    if tok.skeleton is None:
        assert got is None
    else:
        np.testing.assert_allclose(got, REFERENCE_BONE_LENGTHS[1:], rtol=1e-6)


def test_exported_graphs_pass_allowlist_and_checker(exported):
    _, out, manifest = exported
    allowed = read_allowlist(ALLOWLIST_FILE)
    for name, info in manifest["graphs"].items():
        model = onnx.load(str(out / info["file"]))
        ops = check_graph(model, allowed, max_opset=15)
        assert not ops & {"Loop", "If", "Scan", "Einsum"}
        assert model.opset_import[0].version == 15
        assert info["sha256"] and (out / info["file"]).stat().st_size == info["bytes"]


@pytest.mark.parametrize("b,t", SHAPES)
def test_encoder_matches_pytorch(exported, b, t):
    tok, out, _ = exported
    x = _features(b, t, seed=t)
    cats, idx = tok.encode(x)
    got = _run(out / "encoder.onnx", {"features": x.numpy()})
    np.testing.assert_array_equal(got[0], cats.numpy())
    if tok.config.uses_rvq:
        assert got[1].shape == (b, t // 4, 3)
        np.testing.assert_array_equal(got[1], idx.numpy())
    else:
        assert len(got) == 1


@pytest.mark.parametrize("b,t", SHAPES)
def test_decoder_matches_pytorch(exported, b, t):
    tok, out, _ = exported
    cats, idx = tok.encode(_features(b, t, seed=t + 1))
    if tok.config.uses_rvq:
        idx[..., -1] = -1  # a skipped last stage for the first sample: decode must ignore it
        idx[1:] = torch.randint(0, 32, idx[1:].shape)
    feed = {}
    if tok.config.uses_posecodes:
        feed["categories"] = cats.numpy()
    if tok.config.uses_rvq:
        feed["indices"] = idx.numpy()
    features, joints = _run(out / "decoder.onnx", feed)
    with torch.no_grad():
        ref_f = tok.decode(cats, idx)
        ref_j = tok.decode_joints(cats, idx)
    assert features.shape == (b, t, 263) and joints.shape == (b, t, 22, 3)
    np.testing.assert_allclose(features, ref_f.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(joints, ref_j.numpy(), atol=1e-4, rtol=0)


def test_decoder_skipped_stages_equal_fewer_quantizers(exported):
    tok, out, _ = exported
    cats, idx = tok.encode(_features(2, 8))
    if not tok.config.uses_rvq:
        # Pose codes only: no residual stage to skip; the tokens carry Q=0 stages.
        assert tok.num_quantizers == 0 and idx.shape[-1] == 0
        return
    skipped = idx.clone()
    skipped[..., 1:] = -1
    feed = {"indices": skipped.numpy()}
    if tok.config.uses_posecodes:
        feed["categories"] = cats.numpy()
    f, _ = _run(out / "decoder.onnx", feed)
    with torch.no_grad():
        ref = tok.decode(cats, idx, n_quantizers=1)
    np.testing.assert_allclose(f, ref.numpy(), atol=1e-4, rtol=0)


def test_fp16_int32_export_is_exact_on_rounded_model(tmp_path):
    tok = _tokenizer("posecode_rvq")
    manifest = export_tokenizer(tok, tmp_path, fp16=True, int32_indices=True)
    for info in manifest["graphs"].values():
        assert info["weight_bytes"]["float16"] > 0
        for io in info["inputs"] + info["outputs"]:
            assert io["dtype"] in ("float32", "int32")
    ref = round_module_fp16(tok)
    x = _features(2, 16, seed=5)
    cats, idx = ref.encode(x)
    got_c, got_i = _run(tmp_path / "encoder.onnx", {"features": x.numpy()})
    assert got_c.dtype == np.int32 and got_i.dtype == np.int32
    np.testing.assert_array_equal(got_c, cats.numpy())
    np.testing.assert_array_equal(got_i, idx.numpy())
    f, j = _run(tmp_path / "decoder.onnx", {"categories": got_c, "indices": got_i})
    with torch.no_grad():
        np.testing.assert_allclose(f, ref.decode(cats, idx).numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(j, ref.decode_joints(cats, idx).numpy(), atol=1e-4, rtol=0)


def test_runtime_wrapper_refuses_bad_lengths_and_codes(exported):
    tok, out, _ = exported
    rt = OnnxMotionTokenizer(out, threads=1)
    with pytest.raises(ValueError, match="multiple of 4"):
        rt.encode(_features(1, 10).numpy())
    codes = rt.encode(_features(1, 8).numpy())
    cats = codes[0]
    idx = codes[1] if tok.config.uses_rvq else None
    features, joints = rt.decode(cats, idx)
    assert features.shape == (1, 8, 263) and joints.shape == (1, 8, 22, 3)
    if tok.config.uses_posecodes:
        bad = cats.copy()
        bad[0, 0, 0] = 99
        with pytest.raises(ValueError, match="categories"):
            rt.decode(bad, idx)
    if tok.config.uses_rvq:
        with pytest.raises(ValueError, match="indices"):
            rt.decode(cats, np.full_like(idx, 32))


def test_encoder_graph_drops_trailing_frames_instead_of_broadcasting(exported):
    """Fed directly (no wrapper), a T that is not a multiple of 4 is cropped in-graph: the result is
    the encoding of the first 4*(T//4) frames, never a broadcast of mismatched lengths."""
    tok, out, _ = exported
    x = _features(2, 14, seed=9)
    got = _run(out / "encoder.onnx", {"features": x.numpy()})
    ref = tok.encode(x[:, :12])
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r.numpy())


# ----------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-W", "ignore", "-m", "rvqfast.export", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_exports_run_and_writes_only_inside_out(tmp_path):
    tok = _tokenizer("posecode_rvq", width=32)
    run = tmp_path / "run"
    tok.save(run)
    before = set(tmp_path.iterdir())
    out = tmp_path / "deep" / "out"
    r = _cli(str(run), "--out", str(out), "--graphs", "decoder,rvq", "--int32-indices")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "manifest.json", "rvq.onnx"]
    assert set(tmp_path.iterdir()) - before == {tmp_path / "deep"}
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.safetensors"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["opset"] == 15 and manifest["int32_indices"] is True
    assert manifest["rvqfast_version"] == rvqfast.__version__
    assert manifest["motion"]["fps"] == 20 and manifest["motion"]["frames_per_token"] == 4
    dec = manifest["graphs"]["decoder"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in dec["inputs"]] == [
        ("categories", "int32", ["B", "N", 70]), ("indices", "int32", ["B", "N", 3])]
    assert [(o["name"], o["shape"]) for o in dec["outputs"]] == [
        ("features", ["B", "4*N", 263]), ("joints", ["B", "4*N", 22, 3]), ("valid", ["B", "N"])]
    # The exported run decodes the same as the saved model reloaded.
    loaded = MotionTokenizer.load(run)
    cats, idx = loaded.encode(_features(1, 8))
    f, _ = _run(out / "decoder.onnx", {"categories": cats.numpy().astype(np.int32),
                                       "indices": idx.numpy().astype(np.int32)})
    with torch.no_grad():
        np.testing.assert_allclose(f, loaded.decode(cats, idx).numpy(), atol=1e-4, rtol=0)


def test_cli_clear_errors(tmp_path):
    r = _cli(str(tmp_path / "missing"), "--out", str(tmp_path / "o1"))
    assert r.returncode == 2 and "run_dir" in r.stderr and "not a folder" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{")
    (bad / "model.safetensors").write_bytes(b"junk")
    r = _cli(str(bad), "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "config.json" in r.stderr
    r = _cli(str(bad), "--out", str(tmp_path / "o3"), "--graphs", "decoder,nope")
    assert r.returncode == 2 and "--graphs" in r.stderr
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))


def test_export_run_rejects_unavailable_graph(tmp_path):
    tok = _tokenizer("posecode", width=32)
    tok.save(tmp_path / "run")
    with pytest.raises(ValueError, match="'rvq' is not available"):
        export_run(tmp_path / "run", tmp_path / "out", graphs=["rvq"])
    with pytest.raises(ValueError, match="opset"):
        export_run(tmp_path / "run", tmp_path / "out", opset=19)


def test_make_session_single_thread(exported):
    _, out, _ = exported
    s = make_session(out / "decoder.onnx", threads=1)
    assert {i.name for i in s.get_inputs()} <= {"categories", "indices"}


# ----------------------------------------------------------------------------- streaming demo


def _stream_demo():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stream_demo", REPO / "export" / "stream_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stream_root_tracker_matches_whole_sequence_joints():
    from rvqfast.motion.features import features_to_joints

    demo = _stream_demo()
    feats = _features(1, 40, seed=11)[0].numpy()
    tracker = demo.RootTracker()
    chunked = np.concatenate([tracker.joints(feats[s:s + 12]) for s in range(0, 40, 12)])
    np.testing.assert_allclose(chunked, features_to_joints(feats), atol=1e-4)


def test_stream_decoder_emits_every_frame_once_and_matches_one_shot_with_full_context(exported):
    tok, out, _ = exported
    demo = _stream_demo()
    rt = OnnxMotionTokenizer(out)
    rng = np.random.default_rng(0)
    n = 12
    cats = (rng.random((n, 70)) * rt.slot_sizes).astype(np.int64)
    idx = rng.integers(0, 32, (n, 3), dtype=np.int64)
    full = rt.decode(cats[None] if rt.uses_posecodes else None, idx[None] if rt.uses_rvq else None)[0][0]
    # Context covering the whole past and no lookahead: the final window is the whole sequence,
    # and every frame must come out exactly once.
    stream = demo.StreamDecoder(rt, context=n, lookahead=2)
    parts = [stream.push(cats[s:s + 4], idx[s:s + 4], final=s + 4 >= n) for s in range(0, n, 4)]
    got = np.concatenate(parts)
    assert got.shape == full.shape
    # The last window sees everything, so its un-crossfaded tail equals the one-shot decode.
    np.testing.assert_allclose(parts[-1][8:], full[-len(parts[-1]) + 8:], atol=1e-4)
