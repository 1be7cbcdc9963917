"""End to end: train a tiny evaluator, evaluate tiny tokenizer runs, write the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rvqfast.eval import evaluator as E
from rvqfast.eval import report as R


# Tiny recurrent / conv steps: extra threads only add contention on the shared cores.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from rvqfast.data import generate_dataset
    root = tmp_path_factory.mktemp("data") / "ds"
    generate_dataset(root, n_motions=230, seed=0)
    return root


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_data):
    from rvqfast.data import HumanML3D
    from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig
    ds = HumanML3D(tiny_data, "train")
    base = tmp_path_factory.mktemp("runs")
    out = []
    for model in ("posecode_rvq", "posecode"):
        torch.manual_seed(0)
        tok = MotionTokenizer(TokenizerConfig(model=model, width=32, code_dim=16, num_quantizers=2,
                                              codebook_size=8, dilations=(1,), kmeans_init=False))
        tok.set_normalization(torch.from_numpy(ds.mean), torch.from_numpy(ds.std))
        tok.save(base / model)
        out.append(base / model)
    return out


def test_train_evaluator_tiny_and_reload(tiny_data, tmp_path):
    cfg = E.TrainConfig(epochs=1, batch_size=16, preset="tiny", lr=1e-3)
    ev = E.train_evaluator(tiny_data, tmp_path / "ev", cfg, progress=False)
    assert ev.provenance["kind"] == "trained" and ev.provenance["steps"] >= 5
    assert np.isfinite(ev.provenance["final_loss"])
    got = E.load_evaluator(tmp_path / "ev")
    x = torch.randn(2, 16, 263)
    assert torch.allclose(got.encode_motion(x), ev.encode_motion(x), atol=1e-6)
    # Training is deterministic given the seed.
    ev2 = E.train_evaluator(tiny_data, None, cfg, progress=False)
    assert torch.allclose(ev2.encode_motion(x), ev.encode_motion(x), atol=1e-5)


def test_embedding_metrics_ground_truth_and_identity():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(70, 8))
    texts = [gt[i:i + 1] + 0.01 * rng.normal(size=(2, 8)) for i in range(70)]
    m_gt = R.embedding_metrics(gt, None, texts, repeats=3, diversity_times=50)
    assert "fid" not in m_gt and m_gt["motions_per_repeat"] == 64
    assert m_gt["top1"]["mean"] == 1.0  # texts sit on their motions
    same = R.embedding_metrics(gt, gt.copy(), texts, repeats=3, diversity_times=50)
    assert same["fid"]["mean"] == pytest.approx(0.0, abs=1e-6)
    worse = R.embedding_metrics(gt, gt + rng.normal(size=gt.shape), texts, repeats=3, diversity_times=50)
    assert worse["fid"]["mean"] > 0.1 and worse["top1"]["mean"] < 1.0
    with pytest.raises(ValueError, match="repeats"):
        R.embedding_metrics(gt, None, texts, repeats=0)


def test_evaluate_runs_writes_report(tiny_data, tiny_runs, tmp_path):
    torch.manual_seed(0)
    ev = E.T2MEvaluator(E.PRESETS["tiny"], E.random_word_vectors(["person", "walk"], 300),
                        np.zeros(263), np.ones(263), provenance={"kind": "trained", "data": "tiny"})
    res = R.evaluate_runs(tiny_runs, ev, tmp_path / "rep", data=tiny_data, repeats=2, progress=False,
                            gif_frames=6)
    assert res["data"]["motions"] >= 32
    names = [r["name"] for r in res["runs"]]
    assert names == ["posecode_rvq", "posecode"]
    prvq = res["runs"][0]
    assert [s["n_quantizers"] for s in prvq["stage_sweep"]] == [0, 1, 2]
    assert prvq["stage_sweep"][-1]["joints"]["mpjpe_mm"] == pytest.approx(prvq["joints"]["mpjpe_mm"])
    assert len(prvq["codebooks"]) == 2 and 0 < prvq["codebooks"][0]["usage"] <= 1
    assert res["runs"][1]["codebooks"] == [] and "stage_sweep" not in res["runs"][1]
    for r in res["runs"]:
        assert r["joints"]["mpjpe_mm"] > 0 and r["embedding"]["fid"]["repeats"] == 2
        assert np.isfinite(r["joints"]["mpjpe_root_rel_mm"])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "ground truth" in md and "trained by rvqfast" in md and "posecode_rvq" in md
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["repeats"] == 2
    assert (tmp_path / "rep" / "stages.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "reconstruction.gif").stat().st_size > 1000


def test_reconstruct_matches_per_motion_decoding(tiny_runs):
    from rvqfast.models.tokenizer import MotionTokenizer
    tok = MotionTokenizer.load(tiny_runs[0])
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(n, 263)).astype(np.float32) * 0.1 for n in (16, 24, 16)]
    recs, idx, cats = R.reconstruct(tok, feats, [None, 0])
    assert idx.shape == (14, 2) and cats.shape == (14, 70)
    for f, r in zip(feats, recs[None]):
        c, i = tok.encode(torch.from_numpy(f)[None])
        with torch.no_grad():
            assert np.allclose(r, tok.decode(c, i)[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 4"):
        R.reconstruct(tok, [feats[0][:15]], [None])


def test_command_lines(tiny_data, tiny_runs, tmp_path, capsys):
    from rvqfast.eval.cli import evaluate_main, evaluator_main
    assert evaluator_main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "ev"),
                           "--epochs", "1", "--batch-size", "16", "--preset", "tiny",
                           "--no-progress"]) == 0
    assert '"kind": "trained"' in capsys.readouterr().out
    assert evaluator_main(["info", str(tmp_path / "ev")]) == 0
    assert "weights_sha256" in capsys.readouterr().out
    rc = evaluate_main([str(tiny_runs[0]), "--evaluator", str(tmp_path / "ev"), "--out",
                        str(tmp_path / "rep"), "--data", str(tiny_data), "--repeats", "1", "--no-gif"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| posecode_rvq | posecode_rvq |" in out and "Residual stages used at decode" in out
    with pytest.raises(SystemExit):  # other data than the default needs an evaluator
        evaluate_main([str(tiny_runs[0]), "--out", str(tmp_path / "r2"), "--data", str(tiny_data)])
    # Reports carry no absolute path of this machine (the evaluator was given by absolute path).
    _assert_no_absolute_paths(tmp_path / "rep")


def _assert_no_absolute_paths(rep):
    import os

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                yield from walk(x)
        elif isinstance(v, list):
            for x in v:
                yield from walk(x)
        elif isinstance(v, str):
            yield v

    res = json.loads((rep / "report.json").read_text())
    assert not [v for v in walk(res) if os.path.isabs(v)]
    md = (rep / "report.md").read_text()
    assert str(rep.parent) not in md and "`/" not in md


def test_default_evaluator_is_trained_once_then_cached(tiny_data, tiny_runs, tmp_path, monkeypatch,
                                                        capsys):
    import rvqfast.data as data
    from rvqfast.eval.cli import evaluate_main
    monkeypatch.setenv("RVQFAST_DATA", str(tiny_data))
    monkeypatch.setattr(data, "default_dataset", lambda progress=True: tiny_data)
    tiny = E.TrainConfig(epochs=1, batch_size=16, preset="tiny", lr=1e-3, threads=1)
    real = E.default_evaluator
    monkeypatch.setattr(E, "default_evaluator",
                        lambda device="cpu", **kw: real(device, progress=False, config=tiny))
    rc = evaluate_main([str(tiny_runs[0]), "--out", str(tmp_path / "rep"), "--repeats", "1",
                        "--no-gif", "--no-stage-sweep", "--limit", "40"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "training the default evaluator" in out
    d = E.default_evaluator_dir()
    assert d == tiny_data.with_name(tiny_data.name + "_evaluator") and (d / E.META_FILE).is_file()
    stamp = (d / E.WEIGHTS_FILE).stat().st_mtime_ns
    E.default_evaluator(progress=False)
    assert "using the cached default evaluator" in capsys.readouterr().out
    assert (d / E.WEIGHTS_FILE).stat().st_mtime_ns == stamp


def test_report_without_matplotlib(tiny_data, tiny_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(R, "_have_matplotlib", lambda: False)
    ev = E.T2MEvaluator(E.PRESETS["tiny"], E.random_word_vectors(["person", "walk"], 300),
                        np.zeros(263), np.ones(263), provenance={"kind": "trained", "data": "tiny"})
    res = R.evaluate_runs(tiny_runs[:1], ev, tmp_path / "rep", data=tiny_data, repeats=1,
                          limit=40)
    assert "rvqfast[viz]" in res["plots_skipped"] and "rvqfast[viz]" in capsys.readouterr().out
    assert not (tmp_path / "rep" / "stages.png").exists()
    assert not (tmp_path / "rep" / "reconstruction.gif").exists()
    assert (tmp_path / "rep" / "report.md").is_file()


def test_joint_metrics_separate_root_drift_from_pose_error():
    from rvqfast.data.synthetic import generate_motion
    from rvqfast.motion.features import features_to_joints, joints_to_features
    f = joints_to_features(generate_motion(0, 3).joints)[:40].astype(np.float32)
    gt = np.asarray(features_to_joints(f), np.float64)
    drifted = f.copy()
    drifted[:, 1] += 0.01  # root linear velocity: the whole body drifts, the pose is unchanged
    j = R.joint_metrics([drifted], [gt])
    assert j["mpjpe_mm"] > 50.0
    assert j["mpjpe_root_rel_mm"] < 1e-3 and j["pa_mpjpe_mm"] < 1e-3
    assert R.joint_metrics([f], [gt])["mpjpe_mm"] < 1e-3
