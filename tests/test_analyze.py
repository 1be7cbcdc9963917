"""Direction-similarity analysis."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rvqfast import analyze as A
from rvqfast.motion.posecodes import NUM_CATEGORIES, SLOT_OFFSETS, SLOT_SIZES


# Tiny recurrent / conv steps: extra threads only add contention on the shared cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_tokenizer(model="posecode_rvq"):
    from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig
    torch.manual_seed(0)
    return MotionTokenizer(TokenizerConfig(model=model, width=32, code_dim=16, num_quantizers=2,
                                           codebook_size=8, dilations=(1,), kmeans_init=False)).eval()


def test_cosine_matrix_properties():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(10, 5)) + 3.0
    c = A.cosine_matrix(v)
    assert np.allclose(np.diag(c), 1.0) and np.allclose(c, c.T)
    # Centring removes a shared offset: the same matrix with and without it.
    assert np.allclose(c, A.cosine_matrix(v + 100.0))
    assert not np.allclose(A.cosine_matrix(v, center=False), A.cosine_matrix(v + 100.0, center=False))
    z = A.cosine_matrix(np.vstack([np.zeros(5), np.ones(5)]), center=False)
    assert z[0, 0] == 0.0 and z[1, 1] == pytest.approx(1.0)


def test_within_across_on_block_structure():
    # Two slots whose members are identical within a slot and orthogonal across.
    v = np.array([[1, 0], [1, 0], [0, 1], [0, 1.0]])
    s = A.within_across(A.cosine_matrix(v, center=False), np.array([0, 0, 1, 1]))
    assert s["mean_abs_cos_within_slot"] == pytest.approx(1.0)
    assert s["mean_abs_cos_across_slots"] == pytest.approx(0.0)
    assert s["pairs_within"] == 4 and s["pairs_across"] == 8


def test_embedding_similarity_detects_slot_structure():
    rng = np.random.default_rng(1)
    slot_dirs = rng.normal(size=(70, 256))
    emb = np.concatenate([np.repeat(slot_dirs[i:i + 1], n, 0) + 0.05 * rng.normal(size=(n, 256))
                          for i, n in enumerate(SLOT_SIZES)])
    sim = A.embedding_similarity(emb)
    assert sim["cos"].shape == (NUM_CATEGORIES, NUM_CATEGORIES)
    assert sim["centroid_cos"].shape == (70, 70)
    st = sim["stats"]
    assert st["mean_abs_cos_within_slot"] > 0.9 > 0.2 > st["mean_abs_cos_across_slots"]


def test_edit_directions_shapes_latent_identity_and_additivity_range():
    tok = _tiny_tokenizer()
    d = A.edit_directions(tok, pairs=20)
    n = d["stats"]["codes_switched"]
    assert n == NUM_CATEGORIES - 70  # every code except the baseline's own category per slot
    assert d["latent"].shape == (n, 16) and d["motion"].shape == (n, 66)
    # The latent direction is exactly e_code - e_baseline.
    base = d["stats"]["baseline_categories"]
    e = tok.posecode_embedding.detach().numpy()
    c0 = d["codes"][0]
    slot = int(np.searchsorted(SLOT_OFFSETS, c0, side="right") - 1)
    assert np.allclose(d["latent"][0], e[c0] - e[SLOT_OFFSETS[slot] + base[slot]], atol=1e-5)
    assert 0.0 <= d["stats"]["additivity_error_median"] < 2.0
    with pytest.raises(ValueError, match="tokenizer"):
        A.edit_directions(_tiny_tokenizer("rvq"))


def test_analyze_cli(tmp_path, capsys):
    tok = _tiny_tokenizer()
    tok.save(tmp_path / "run")
    assert A.main([str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--pairs", "10"]) == 0
    assert "within a slot" in capsys.readouterr().out
    for f in ("embedding_cosine.png", "slot_centroid_cosine.png", "edit_direction_cosine.png",
              "analysis.md", "analysis.json"):
        assert (tmp_path / "out" / f).stat().st_size > 100
    res = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert res["edit_directions"]["additivity_pairs"] == 10
    assert len(res["most_similar_cross_slot_motion_directions"]) == 10
    assert not res["run"].startswith("/")  # relative to the output folder, not absolute


def test_analyze_without_matplotlib(tmp_path, capsys, monkeypatch):
    import rvqfast.eval.report as R
    monkeypatch.setattr(R, "_have_matplotlib", lambda: False)
    tok = _tiny_tokenizer()
    tok.save(tmp_path / "run")
    assert A.main([str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--pairs", "10"]) == 0
    out = capsys.readouterr().out
    assert "rvqfast[viz]" in out and "no heatmaps" in out
    assert not list((tmp_path / "out").glob("*.png"))
    assert json.loads((tmp_path / "out" / "analysis.json").read_text())["heatmaps"] is False
