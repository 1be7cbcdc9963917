"""Pose-code editing: frame mapping, measured rates, CLI."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rvqfast.edit import edit, main, parse_frames, parse_set
from rvqfast.motion.features import features_to_joints, joints_to_features
from rvqfast.motion.posecodes import POSECODE_SLOTS, category_index, posecode_indices


# Tiny recurrent / conv steps: extra threads only add contention on the shared cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _motion(index: int, frames: int = 40) -> np.ndarray:
    from rvqfast.data.synthetic import generate_motion
    f = joints_to_features(generate_motion(0, index).joints)
    assert f.shape[0] >= frames
    return f[:frames].astype(np.float32)


def _tiny_tokenizer(model="posecode_rvq", seed=0):
    from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig
    torch.manual_seed(seed)
    cfg = TokenizerConfig(model=model, width=32, code_dim=16, num_quantizers=2, codebook_size=8,
                          dilations=(1,), kmeans_init=False)
    return MotionTokenizer(cfg).eval()


class _SwapTokenizer:
    """Stub: decodes to motion A when the categories are A's own, else to motion B.

    Lets the test compute the expected rates independently of any learned model, and records
    the categories it was asked to decode.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray):
        self.config = SimpleNamespace(uses_posecodes=True, model="posecode")
        self.num_quantizers = 0
        self.a, self.b = torch.from_numpy(a)[None], torch.from_numpy(b)[None]
        self.decoded = []

    def encode(self, x):
        cats = posecode_indices(features_to_joints(x[:, ::4]))
        self.cats = cats
        return cats, torch.zeros(1, cats.shape[1], 0, dtype=torch.int64)

    def decode(self, cats, idx, n_quantizers=None):
        self.decoded.append(cats.clone())
        return self.a.clone() if torch.equal(cats, self.cats) else self.b.clone()


def test_edit_maps_motion_frames_to_latent_frames_and_measures_rates():
    a, b = _motion(1), _motion(2)
    stub = _SwapTokenizer(a, b)
    slot = "angle:left_knee"
    s = POSECODE_SLOTS.index(slot)
    ca = posecode_indices(features_to_joints(torch.from_numpy(a))).numpy()
    label = "completely bent"  # a walking knee never is, so the edit changes the codes
    assert not (ca[:, s] == category_index(slot, label)).any()
    res = edit(stub, a, {slot: label}, range(5, 18))
    assert res.latent_frames == [1, 2, 3, 4]  # frames 5..17 -> latent 1..4
    edited = stub.decoded[-1]
    changed = (edited != stub.cats).nonzero().tolist()
    k = category_index(slot, label)
    assert changed and all(c[2] == s and c[1] in (1, 2, 3, 4) for c in changed)
    assert (edited[0, 1:5, s] == k).all()
    # Expected rates from the codes of A (reconstruction) and B (edited output).
    cb = posecode_indices(features_to_joints(torch.from_numpy(b))).numpy()
    fr = np.arange(5, 18)
    assert res.success_rate == pytest.approx((cb[fr, s] == k).mean())
    assert res.baseline_rate == pytest.approx((ca[fr, s] == k).mean())
    other = [i for i in range(70) if i != s]
    assert res.preservation_rate == pytest.approx((cb[np.ix_(fr, other)] == ca[np.ix_(fr, other)]).mean())
    outside = np.setdiff1d(np.arange(40), fr)
    assert res.outside_preservation_rate == pytest.approx((cb[outside] == ca[outside]).mean())
    assert np.array_equal(res.features, b)


def test_noop_edit_reproduces_reconstruction():
    tok = _tiny_tokenizer()
    x = _motion(3)
    cats, _ = tok.encode(torch.from_numpy(x)[None])
    slot = POSECODE_SLOTS[2]
    label_idx = int(cats[0, 0, 2])
    from rvqfast.motion.posecodes import POSECODE_CATEGORIES, SLOT_OFFSETS
    label = POSECODE_CATEGORIES[SLOT_OFFSETS[2] + label_idx][1]
    res = edit(tok, x, {slot: label}, "0:4")
    assert np.allclose(res.features, res.reconstruction)
    assert res.preservation_rate == 1.0 and res.outside_preservation_rate == 1.0
    assert res.success_rate == res.baseline_rate


def test_edit_real_tokenizer_changes_motion_and_requantize_runs():
    tok = _tiny_tokenizer()
    x = _motion(4)
    r1 = edit(tok, x, ["angle:right_knee=completely bent", "vertical:torso=horizontal"], "8:32")
    assert r1.features.shape == (40, 263) and np.isfinite(r1.features).all()
    assert not np.allclose(r1.features, r1.reconstruction)
    for v in (r1.success_rate, r1.preservation_rate, r1.baseline_rate):
        assert 0.0 <= v <= 1.0
    r2 = edit(tok, x, {"angle:right_knee": "completely bent"}, "8:32", requantize=True)
    assert r2.features.shape == (40, 263) and np.isfinite(r2.features).all()


def test_edit_rejects_bad_input():
    tok = _tiny_tokenizer()
    x = _motion(5)
    with pytest.raises(ValueError, match="slot"):
        edit(tok, x, {"angle:left_nose": "straight"})
    with pytest.raises(ValueError, match="label"):
        edit(tok, x, {"angle:left_knee": "wobbly"})
    with pytest.raises(ValueError, match="frames"):
        edit(tok, x, {"angle:left_knee": "straight"}, "30:50")
    with pytest.raises(ValueError, match="features"):
        edit(tok, x[:39], {"angle:left_knee": "straight"})
    with pytest.raises(ValueError, match="tokenizer"):
        edit(_tiny_tokenizer("rvq"), x, {"angle:left_knee": "straight"})
    with pytest.raises(ValueError, match="set"):
        parse_set(["angle:left_knee"])
    assert parse_frames(":8", 40) == range(0, 8) and parse_frames(None, 12) == range(12)


def test_edit_cli(tmp_path, capsys):
    tok = _tiny_tokenizer()
    tok.save(tmp_path / "run")
    np.save(tmp_path / "in.npy", _motion(6, 42)[:42])
    rc = main([str(tmp_path / "run"), "--input", str(tmp_path / "in.npy"), "--set",
               "angle:left_knee=straight", "--frames", "0:20", "--out", str(tmp_path / "out"), "--gif-frames", "5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "success rate" in text and "preservation rate" in text and "cropping 42" in text
    out = np.load(tmp_path / "out" / "edited.npy", allow_pickle=False)
    assert out.shape == (40, 263)
    summary = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert summary["latent_frames"] == [0, 1, 2, 3, 4] and 0 <= summary["success_rate"] <= 1
    assert (tmp_path / "out" / "before_after.gif").stat().st_size > 1000
    np.save(tmp_path / "bad.npy", np.zeros((40, 262), np.float32))
    with pytest.raises(ValueError, match="input"):
        main([str(tmp_path / "run"), "--input", str(tmp_path / "bad.npy"), "--set",
              "angle:left_knee=straight", "--out", str(tmp_path / "o2")])
