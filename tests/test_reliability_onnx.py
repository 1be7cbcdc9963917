"""Issue 18 regressions: the ONNX graphs guard bad input themselves (clamp and flag in ``valid``)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rvqfast.export.allowlist import ALLOWED_OPS, check_graph
from rvqfast.export.exporter import export_tokenizer
from rvqfast.export.rvq_graph import build_rvq_model
from rvqfast.motion.posecodes import SLOT_SIZES
from rvqfast.ops import rvq_encode
from test_export import _features, _tokenizer


def _sess(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tok = _tokenizer("posecode_rvq")
    out = tmp_path_factory.mktemp("export")
    export_tokenizer(tok, out, int32_indices=False)
    return tok, out


def test_decoder_flags_and_clamps_out_of_range_codes(exported):
    # defect 2: indices in [256, 1541] / [-1542, -2] and categories == slot size or -1 spilled
    # into the neighbouring slot/row and decoded to plausible motion without any signal
    tok, out = exported
    cats, idx = tok.encode(_features(1, 32, seed=3))
    cats, idx = cats.numpy().copy(), idx.numpy().copy()
    bad_c, bad_i = cats.copy(), idx.copy()
    bad_c[0, 1, 5] = SLOT_SIZES[5]
    bad_c[0, 2, 0] = -1
    bad_i[0, 4, 1] = 256
    bad_i[0, 5, 2] = -1542
    bad_i[0, 6, 0] = 1541
    f, j, valid = _sess(out / "decoder.onnx").run(None, {"categories": bad_c, "indices": bad_i})
    assert valid.tolist() == [[1, 0, 0, 1, 0, 0, 0, 1]]
    # The flagged tokens decode as category 0 / stage skipped: nothing spills elsewhere.
    safe_c, safe_i = bad_c.copy(), bad_i.copy()
    safe_c[0, 1, 5] = safe_c[0, 2, 0] = 0
    safe_i[0, 4, 1] = safe_i[0, 5, 2] = safe_i[0, 6, 0] = -1
    with torch.no_grad():
        ref = tok.decode(torch.from_numpy(safe_c), torch.from_numpy(safe_i))
    np.testing.assert_allclose(f, ref.numpy(), atol=1e-4, rtol=0)
    assert np.isfinite(j).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e30])
def test_encoder_flags_nan_inf_and_huge_frames(exported, value):
    # defect 2: NaN/Inf features were encoded to index 0 like any other token
    tok, out = exported
    x = _features(2, 16, seed=4).numpy()
    x[1, 5, 100] = value  # frame 5 = token 1 of sample 1
    cats, idx, valid = _sess(out / "encoder.onnx").run(None, {"features": x})
    assert valid.tolist() == [[1, 1, 1, 1], [1, 0, 1, 1]]
    assert (cats[1, 1] == -1).all() and (idx[1, 1] == -1).all()
    assert (cats[valid == 1] >= 0).all() and (idx[valid == 1] >= 0).all()
    ref_c, ref_i = tok.encode(torch.from_numpy(x[:1]))
    np.testing.assert_array_equal(cats[:1], ref_c.numpy())
    np.testing.assert_array_equal(idx[:1], ref_i.numpy())


@pytest.mark.parametrize("int32", [False, True])
def test_rvq_graph_flags_bad_rows(int32):
    # defect 2: rvq.onnx mapped NaN/Inf rows to index 0
    g = torch.Generator().manual_seed(0)
    cb = torch.randn(3, 16, 8, generator=g)
    x = torch.randn(6, 8, generator=g)
    bad = x.clone()
    bad[1, 2] = float("nan")
    bad[3, 0] = float("inf")
    bad[4, 7] = 1e20
    model = build_rvq_model(cb, int32_indices=int32)
    assert check_graph(model, ALLOWED_OPS, max_opset=15)
    idx, quant, valid = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"vectors": bad.numpy()})
    assert valid.tolist() == [1, 0, 1, 0, 0, 1]
    assert valid.dtype == (np.int32 if int32 else np.int64)
    assert (idx[valid == 0] == -1).all() and (quant[valid == 0] == 0).all()
    ref_i, ref_q = rvq_encode(x[[0, 2, 5]], cb, precision="exact")
    np.testing.assert_array_equal(idx[valid == 1], ref_i.numpy())
    np.testing.assert_allclose(quant[valid == 1], ref_q.numpy(), atol=1e-5)


def test_runtime_wrapper_verifies_graph_checksums(exported, tmp_path):
    import shutil

    from rvqfast.export.runtime import OnnxMotionTokenizer
    from rvqfast.models.persist import CheckpointError

    tok, out = exported
    copy = shutil.copytree(out, tmp_path / "e")
    dec = copy / "decoder.onnx"
    data = bytearray(dec.read_bytes())
    data[len(data) // 2] ^= 0x04
    dec.write_bytes(bytes(data))
    rt = OnnxMotionTokenizer(copy)
    rt.encode(_features(1, 8).numpy())  # the intact encoder still loads
    with pytest.raises(CheckpointError, match=r"decoder\.onnx: sha256 .*manifest\.json"):
        rt.decode(np.zeros((1, 2, 70), np.int64), np.zeros((1, 2, 3), np.int64))
