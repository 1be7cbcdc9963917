"""MotionTokenizer: shapes, the pose latent, residual stages, persistence, ONNX-friendly decode."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rvqfast.models import MotionTokenizer, TokenizerConfig
from rvqfast.motion.features import features_to_joints
from rvqfast.motion.posecodes import SLOT_SIZES, indices_to_multihot, posecode_indices
from rvqfast.train.checkpoint import CheckpointError

TINY = dict(width=32, code_dim=32, codebook_size=16, num_quantizers=3)


def _motion_features(b: int, t: int, seed: int = 0) -> torch.Tensor:
    """Plausible RAW features: real synthetic motions from the data generator."""
    from rvqfast.data.synthetic import generate_motion
    from rvqfast.motion.features import joints_to_features

    out = []
    k = 0
    while len(out) < b:  # the first b motions with at least t feature frames
        f = joints_to_features(generate_motion(seed, k).joints)
        k += 1
        if f.shape[0] >= t:
            out.append(f[:t])
        assert k < 10 * b, "the generator keeps making motions shorter than t"
    return torch.from_numpy(np.stack(out))


@pytest.fixture(scope="module")
def raw() -> torch.Tensor:
    return _motion_features(3, 40)


def _model(model: str = "posecode_rvq", seed: int = 0, **kw) -> MotionTokenizer:
    torch.manual_seed(seed)
    m = MotionTokenizer(TokenizerConfig(model=model, **{**TINY, **kw}))
    return m


def _trained(raw: torch.Tensor, model: str = "posecode_rvq", steps: int = 2, **kw) -> MotionTokenizer:
    """A model whose codebooks were initialised (k-means on a training pass) and normalised."""
    m = _model(model, **kw)
    m.set_normalization(raw.reshape(-1, 263).mean(0), raw.reshape(-1, 263).std(0).clamp(min=1e-3))
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    m.train()
    for s in range(steps):
        out = m(m.normalize(raw), generator=torch.Generator().manual_seed(s),
                sample_generator=torch.Generator().manual_seed(s))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def trained(raw) -> MotionTokenizer:
    """Shared posecode_rvq model; tests must not modify it."""
    return _trained(raw)


@pytest.mark.parametrize("model", ["posecode", "posecode_rvq", "rvq"])
def test_encode_decode_shapes(raw, model):
    m = _trained(raw, model)
    cats, idx = m.encode(raw)
    q = 0 if model == "posecode" else 3
    assert cats.shape == (3, 10, 70) and cats.dtype == torch.int64
    assert idx.shape == (3, 10, q) and idx.dtype == torch.int64
    assert (idx >= 0).all() and (idx < 16).all()
    y = m.decode(cats, idx)
    assert y.shape == (3, 40, 263) and torch.isfinite(y).all()
    assert m.decode_joints(cats, idx).shape == (3, 40, 22, 3)
    assert (m.encoder is None) == (model == "posecode")
    assert (m.rvq is None) == (model == "posecode")
    assert (m.posecode_embedding is None) == (model == "rvq")


def test_categories_come_from_every_fourth_frame(raw, trained):
    m = trained
    cats, _ = m.encode(raw)
    expected = posecode_indices(features_to_joints(raw)[:, ::4])
    assert torch.equal(cats, expected)


def test_pose_latent_is_multihot_times_codebook(raw, trained):
    m = trained
    cats, _ = m.encode(raw)
    multihot = indices_to_multihot(cats).float()
    assert multihot.sum(-1).eq(70).all()
    ref = multihot @ m.posecode_embedding
    assert torch.allclose(m.pose_latent(cats), ref, atol=1e-5)
    assert m.pose_latent(cats).shape == (3, 10, 32)


def test_encode_matches_training_path_indices(raw, trained):
    """encode (rvqfast.ops.rvq_encode on the codebooks) picks the same codes as the module."""
    m = trained
    cats, idx = m.encode(raw)
    with torch.no_grad():
        out = m(m.normalize(raw))
    assert torch.equal(out["indices"], idx)
    # and the eval forward reconstruction equals decode of those indices
    assert torch.allclose(m.denormalize(out["output"]), m.decode(cats, idx), atol=1e-4)


def test_fewer_stages(raw, trained):
    m = trained
    cats, idx = m.encode(raw)
    outs = [m.decode(cats, idx, n_quantizers=n) for n in range(4)]
    for n in range(4):
        dropped = idx.clone()
        dropped[..., n:] = -1
        assert torch.allclose(outs[n], m.decode(cats, dropped), atol=1e-5)
        assert torch.allclose(outs[n], m.decode(cats, idx[..., :n]), atol=1e-5)
    assert torch.allclose(outs[0], m.denormalize(m.decoder(m.pose_latent(cats).transpose(1, 2)).transpose(1, 2)),
                          atol=1e-5)
    assert not torch.allclose(outs[0], outs[3])
    # more stages reconstruct the encoder's latent better (greedy RVQ: residual norm never grows)
    with torch.no_grad():
        z = m.encoder(m.normalize(raw).transpose(1, 2)).transpose(1, 2) - m.pose_latent(cats)
        errs = [float((z - m._residual_from_indices(idx, n)).norm()) for n in range(4)]
    assert errs == sorted(errs, reverse=True)


def test_bad_inputs(raw, trained):
    m = trained
    with pytest.raises(ValueError, match="multiple of 4"):
        m.encode(raw[:, :39])
    with pytest.raises(ValueError, match=r"\(B, T, 263\)"):
        m.encode(raw[..., :200])
    with pytest.raises(ValueError, match="NaN"):
        bad = raw.clone()
        bad[0, 0, 0] = float("nan")
        m.encode(bad)
    cats, idx = m.encode(raw)
    with pytest.raises(ValueError, match="n_quantizers"):
        m.decode(cats, idx, n_quantizers=4)
    with pytest.raises(ValueError, match="categories"):
        c2 = cats.clone()
        c2[0, 0, 0] = SLOT_SIZES[0]
        m.decode(c2, idx)
    with pytest.raises(ValueError, match="indices"):
        m.decode(cats, idx + 16)
    with pytest.raises(ValueError, match="indices"):
        m.decode(cats, idx[:, :5])
    with pytest.raises(ValueError, match="model"):
        TokenizerConfig(model="vqvae")
    with pytest.raises(ValueError, match="width"):
        TokenizerConfig(width=0)
    with pytest.raises(ValueError, match="quantize_dropout"):
        TokenizerConfig(quantize_dropout=1.5)


def test_quantize_dropout_probability(raw):
    """quantize_dropout=p: a step keeps fewer stages with probability ~p; all stages otherwise."""
    def dropped_fraction(p: float, trials: int = 30) -> float:
        m = _model(quantize_dropout=p, residual_dropout=0.0)
        m.train()
        x = torch.randn(2, 16, 263)
        n = 0
        for s in range(trials):
            with torch.no_grad():
                out = m(x, generator=torch.Generator().manual_seed(s))
            n += int((out["indices"] == -1).any())
        return n / trials

    assert dropped_fraction(0.0) == 0.0
    # with p=0.6 the kept depth is uniform in 1..3, so 2/3 of drops skip a stage: ~0.4
    assert 0.15 < dropped_fraction(0.6) < 0.7


def test_residual_dropout_drops_whole_branch(raw):
    m = _trained(raw, steps=1)
    m.config.residual_dropout = 0.999  # every sample loses r_hat
    m.config.quantize_dropout = 0.0
    m.train()
    xn = m.normalize(raw)
    with torch.no_grad():
        out = m(xn, generator=torch.Generator().manual_seed(0), sample_generator=torch.Generator().manual_seed(0))
    m.eval()
    cats, _ = m.encode(raw)
    pose_only = m.decoder(m.pose_latent(cats).transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(out["output"], pose_only, atol=1e-5)


def test_gradients_stop_at_pose_latent(raw):
    """r = z - sg(p): the pose embedding learns only through the decoder."""
    m = _model()
    m.train()
    xn = torch.randn(2, 16, 263)
    out = m(xn, generator=torch.Generator().manual_seed(0), sample_generator=torch.Generator().manual_seed(1))
    g_commit = torch.autograd.grad(out["commit"], [m.posecode_embedding, *m.encoder.parameters()],
                                   allow_unused=True, retain_graph=True)
    assert g_commit[0] is None or float(g_commit[0].abs().sum()) == 0.0
    assert any(g is not None and float(g.abs().sum()) > 0 for g in g_commit[1:])
    out["loss"].backward()
    assert float(m.posecode_embedding.grad.abs().sum()) > 0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(0, 3))
def test_decode_any_length_and_depth(b, n, q):
    m = _model().eval()
    cats = torch.stack([torch.randint(0, s, (b, n)) for s in SLOT_SIZES], -1)
    idx = torch.randint(-1, 16, (b, n, 3))
    y = m.decode(cats, idx, n_quantizers=q)
    assert y.shape == (b, 4 * n, 263) and torch.isfinite(y).all()


def test_save_load_roundtrip_and_errors(raw, trained, tmp_path):
    m = trained
    m.save(tmp_path / "run")
    m2 = MotionTokenizer.load(tmp_path / "run")
    cats, idx = m.encode(raw)
    cats2, idx2 = m2.encode(raw)
    assert torch.equal(cats, cats2) and torch.equal(idx, idx2)
    assert torch.equal(m.decode(cats, idx), m2.decode(cats, idx))
    assert torch.equal(m2.mean, m.mean) and torch.equal(m2.std, m.std)

    # architecture in config.json no longer matches the weights
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["tokenizer"]["width"] = 48
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match"):
        MotionTokenizer.load(tmp_path / "run")
    cfg["tokenizer"]["width"] = 32
    cfg["tokenizer"]["bogus"] = 1
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json: invalid tokenizer settings.*unknown keys"):
        MotionTokenizer.load(tmp_path / "run")
    del cfg["tokenizer"]["bogus"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    # truncated weights
    w = (tmp_path / "run" / "model.safetensors").read_bytes()
    (tmp_path / "run" / "model.safetensors").write_bytes(w[: len(w) // 2])
    with pytest.raises(CheckpointError, match="sha256 .* does not match .*damaged"):
        MotionTokenizer.load(tmp_path / "run")
    # without the recorded checksum the safetensors reader itself reports the truncation
    del cfg["weights"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="corrupt"):
        MotionTokenizer.load(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="config.json"):
        MotionTokenizer.load(tmp_path / "nothing")


def test_decode_exports_to_onnx(raw, trained):
    onnx = pytest.importorskip("onnx")  # noqa: F841
    ort = pytest.importorskip("onnxruntime")
    m = trained

    class Decode(torch.nn.Module):
        def __init__(self, tok: MotionTokenizer) -> None:
            super().__init__()
            self.tok = tok

        def forward(self, c: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return self.tok.decode(c, i)

    cats, idx = m.encode(raw[:1, :16])
    buf = io.BytesIO()
    torch.onnx.export(Decode(m), (cats, idx), buf, dynamo=False, opset_version=17,
                      input_names=["c", "i"], output_names=["y"],
                      dynamic_axes={"c": {0: "b", 1: "n"}, "i": {0: "b", 1: "n"}, "y": {0: "b", 1: "t"}})
    sess = ort.InferenceSession(buf.getvalue())
    cats, idx = m.encode(raw)  # other batch size and length than traced
    idx[0, :, 2] = -1
    (y,) = sess.run(None, {"c": cats.numpy(), "i": idx.numpy()})
    np.testing.assert_allclose(y, m.decode(cats, idx).detach().numpy(), atol=1e-4, rtol=1e-4)
