"""Fuzz (issue 18): hostile inputs fed straight to the exported graphs, as an engine would.

For every input: the graph runs (no crash), every output is finite, ``valid`` flags exactly the
tokens/rows with bad input, flagged tokens carry -1 codes (encoder/rvq), unflagged ones match
PyTorch; the Python wrapper refuses the same inputs with a ValueError naming the argument."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rvqfast.export.exporter import export_tokenizer
from rvqfast.export.graphs import FEATURE_LIMIT
from rvqfast.export.runtime import OnnxMotionTokenizer
from rvqfast.export.rvq_graph import build_rvq_model
from rvqfast.motion.posecodes import SLOT_SIZES
from rvqfast.ops import rvq_encode
from reliability_support import fuzz_examples, time_limit
from test_export import _features, _tokenizer

K = 32  # codebook size of test_export._tokenizer
_CACHE: dict[str, object] = {}
BAD_INT = [-2**62, -1542, -2, -1, 256, 1541, 2**31 - 1, 2**62]
BAD_FLOAT = [np.nan, np.inf, -np.inf, 1e30, -3e38, FEATURE_LIMIT * 1.5]


def _exported(factory, int32: bool):
    key = f"e{int32}"
    if key not in _CACHE:
        tok = _tokenizer("posecode_rvq")
        out = factory.mktemp("fuzz_onnx")
        export_tokenizer(tok, out, int32_indices=int32)
        _CACHE[key] = (tok, out, {g: ort.InferenceSession(str(out / f"{g}.onnx"), providers=["CPUExecutionProvider"])
                                  for g in ("encoder", "decoder")})
    return _CACHE[key]


@settings(max_examples=fuzz_examples(25))
@given(data=st.data(), int32=st.booleans())
def test_fuzz_decoder_codes(tmp_path_factory, data, int32):
    tok, out, sess = _exported(tmp_path_factory, int32)
    b, n = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    sizes = np.asarray(SLOT_SIZES)
    cats = (rng.random((b, n, 70)) * sizes).astype(np.int64)
    idx = rng.integers(-1, K, (b, n, 3))
    bad = np.zeros((b, n), bool)
    for _ in range(data.draw(st.integers(0, 3))):
        i, t = data.draw(st.integers(0, b - 1)), data.draw(st.integers(0, n - 1))
        if data.draw(st.booleans()):
            s = data.draw(st.integers(0, 69))
            cats[i, t, s] = data.draw(st.sampled_from(BAD_INT + [int(sizes[s]), K]))
            bad[i, t] |= not 0 <= cats[i, t, s] < sizes[s]
        else:
            cats_or = data.draw(st.sampled_from(BAD_INT + [K]))
            idx[i, t, data.draw(st.integers(0, 2))] = cats_or
            bad[i, t] |= not -1 <= cats_or < K
    dt = np.int32 if int32 else np.int64
    if int32 and (np.abs(cats) >= 2**31).any() | (np.abs(idx) >= 2**31).any():
        cats, idx = np.clip(cats, -2**31, 2**31 - 1), np.clip(idx, -2**31, 2**31 - 1)
    with time_limit(30):
        f, j, valid = sess["decoder"].run(None, {"categories": cats.astype(dt), "indices": idx.astype(dt)})
    assert np.isfinite(f).all() and np.isfinite(j).all()
    np.testing.assert_array_equal(valid, (~bad).astype(dt))
    rt = OnnxMotionTokenizer(out)
    if bad.any():
        with pytest.raises(ValueError, match="categories|indices"):
            rt.decode(cats, idx)


@settings(max_examples=fuzz_examples(25))
@given(data=st.data())
def test_fuzz_encoder_features(tmp_path_factory, data):
    tok, out, sess = _exported(tmp_path_factory, False)
    b, t = data.draw(st.integers(1, 2)), data.draw(st.integers(4, 17))
    x = _features(b, t, seed=data.draw(st.integers(0, 1000))).numpy()
    n = t // 4
    bad = np.zeros((b, n), bool)
    for _ in range(data.draw(st.integers(0, 3))):
        i, fr, c = data.draw(st.integers(0, b - 1)), data.draw(st.integers(0, t - 1)), data.draw(st.integers(0, 262))
        x[i, fr, c] = data.draw(st.sampled_from(BAD_FLOAT))
        if fr < 4 * n:
            bad[i, fr // 4] = True
    with time_limit(30):
        cats, idx, valid = sess["encoder"].run(None, {"features": x})
    np.testing.assert_array_equal(valid, (~bad).astype(np.int64))
    assert (cats[bad] == -1).all() and (idx[bad] == -1).all()
    assert (cats[~bad] >= 0).all() and (idx[~bad] >= 0).all() and (idx < K).all()
    good = ~bad.any(1)
    if good.any():
        ref_c, ref_i = tok.encode(torch.from_numpy(x[good, : 4 * n]))
        np.testing.assert_array_equal(cats[good], ref_c.numpy())
        np.testing.assert_array_equal(idx[good], ref_i.numpy())
    if bad.any():
        with pytest.raises(ValueError, match="features"):
            OnnxMotionTokenizer(out).encode(x[:, : 4 * n])


@settings(max_examples=fuzz_examples(25))
@given(data=st.data())
def test_fuzz_rvq_rows(data):
    if "rvq" not in _CACHE:
        cb = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(0))
        _CACHE["rvq"] = (cb, ort.InferenceSession(build_rvq_model(cb).SerializeToString(),
                                                  providers=["CPUExecutionProvider"]))
    cb, sess = _CACHE["rvq"]
    rows = data.draw(st.integers(1, 6))
    x = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).normal(size=(rows, 8)).astype(np.float32)
    bad = np.zeros(rows, bool)
    for _ in range(data.draw(st.integers(0, 3))):
        r = data.draw(st.integers(0, rows - 1))
        x[r, data.draw(st.integers(0, 7))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e16, -1e20]))
        bad[r] = True
    idx, quant, valid = sess.run(None, {"vectors": x})
    np.testing.assert_array_equal(valid, (~bad).astype(np.int64))
    assert (idx[bad] == -1).all() and (quant[bad] == 0).all() and np.isfinite(quant).all()
    if (~bad).any():
        ref_i, _ = rvq_encode(torch.from_numpy(x[~bad]), cb, precision="exact")
        np.testing.assert_array_equal(idx[~bad], ref_i.numpy())


@settings(max_examples=fuzz_examples(20))
@given(data=st.data())
def test_fuzz_export_manifest(tmp_path_factory, data):
    """A damaged manifest.json: the wrapper refuses it naming the file, or works as before."""
    import json
    import shutil

    from reliability_support import mutate_bytes, mutate_json

    _, out, _ = _exported(tmp_path_factory, False)
    d = shutil.copytree(out, tmp_path_factory.mktemp("man") / "e")
    m = d / "manifest.json"
    if data.draw(st.booleans(), label="as_json"):
        m.write_text(json.dumps(mutate_json(data, json.loads(m.read_text()))))
    else:
        m.write_bytes(mutate_bytes(data, m.read_bytes()))
    x = _features(1, 8).numpy()
    try:
        with time_limit(30):
            rt = OnnxMotionTokenizer(d)
            rt.decode(*rt.encode(x))
    except (ValueError, RuntimeError, OSError) as e:
        assert "manifest.json" in str(e) or "categories" in str(e) or "indices" in str(e) \
            or "features" in str(e) or "graph" in str(e), str(e)
