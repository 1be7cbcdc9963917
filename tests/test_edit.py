"""Pose-code editing: joint-space solver on hand-built poses, consistent assignment, residual
policies, windowed blending, unreachable requests, CLI."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from rvqfast.edit import UnreachableEditError, UnreachableEditWarning, edit, main, parse_frames, parse_set
from rvqfast.editing.apply import blend_weights
from rvqfast.motion.skeleton import frame_bone_lengths as bone_lengths
from rvqfast.editing.solver import edit_coupled_slots, solve
from rvqfast.motion.features import features_to_joints, joints_to_features
from rvqfast.motion.posecodes import POSECODE_SLOTS, category_index, posecode_indices, slot_values
from rvqfast.motion.skeleton import JOINT_INDEX, rest_pose

# Tiny recurrent / conv steps: extra threads only add contention on the shared cores.
pytestmark = pytest.mark.usefixtures("one_thread")

RIGHT_LEG = [JOINT_INDEX[n] for n in ("right_hip", "right_knee", "right_ankle", "right_foot")]


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


def test_standing_pose_left_knee_bent_90():
    pose = torch.from_numpy(rest_pose())[None]
    slot, label = "angle:left_knee", "bent 90-100 deg"
    sol = solve(pose, {slot: category_index(slot, label)}, iters=80)
    knee = float(slot_values(sol.joints)[0, POSECODE_SLOTS.index(slot)])
    assert 90.0 < knee < 100.0
    assert bool(sol.met.all())
    # the right leg does not move at all, and no bone changes length
    assert torch.allclose(sol.joints[0, RIGHT_LEG], pose[0, RIGHT_LEG], atol=1e-9)
    assert np.allclose(bone_lengths(sol.joints.numpy()), bone_lengths(pose.numpy()), atol=1e-9)
    # the consistent assignment: the right leg's and the arms' slots keep their categories
    before, after = posecode_indices(pose)[0], sol.categories[0]
    for s in ("angle:right_knee", "vertical:right_thigh", "vertical:right_calf", "ground:right_foot",
              "angle:left_elbow", "angle:right_elbow", "vertical:torso"):
        i = POSECODE_SLOTS.index(s)
        assert after[i] == before[i], s
    assert after[POSECODE_SLOTS.index("vertical:left_calf")] != before[POSECODE_SLOTS.index("vertical:left_calf")]


def test_blend_weights_ramp():
    w = blend_weights(40, range(12, 24), blend=4)
    assert (w[12:24] == 1).all() and (w[:8] == 0).all() and (w[28:] == 0).all()
    assert np.all(np.diff(w[7:13]) > 0) and np.all(np.diff(w[23:29]) < 0)
    assert (blend_weights(10, range(0, 10), 5) == 1).all()


def test_windowed_edit_is_continuous_and_leaves_outside_codes():
    tok = _tiny_tokenizer()
    x = _motion(4, 64)
    blend = 6
    # Solved on the input pose: its geometry is known (the untrained model's reconstruction is not).
    res = edit(tok, x, {"vertical:right_forearm": "horizontal"}, "24:44", blend=blend, solver_iters=80,
               solve_on="input", residual="keep")
    # The solved motion reaches the request inside the window ...
    assert res.solver_met == 1.0 and res.metrics["solved_success"] == 1.0
    # ... and fades in and out: the acceleration at the borders is that of a raised-cosine
    # move of the edit's size over the blend (a pop would give the whole move in one frame).
    jt = np.asarray(features_to_joints(res.target), np.float64)
    j0 = np.asarray(features_to_joints(x), np.float64)
    move = np.linalg.norm(jt - j0, axis=-1).max()
    assert move > 0.2
    acc = np.linalg.norm(jt[2:] - 2 * jt[1:-1] + jt[:-2], axis=-1).max(-1)
    acc0 = np.linalg.norm(j0[2:] - 2 * j0[1:-1] + j0[:-2], axis=-1).max(-1)
    smooth_bound = np.pi ** 2 / 2 * move / (blend + 1) ** 2
    assert acc.max() < 1.3 * smooth_bound + acc0.max() < 0.5 * move
    inside = slice(25, 40)  # no frame-to-frame dither of the solution inside the window
    assert acc[inside].max() < 0.02
    # latent frames away from the window keep their codes and residual indices
    outside = [j for j in range(16) if j not in res.latent_frames]
    assert res.latent_frames == list(range(4, 13))
    assert np.array_equal(res.categories[outside], res.original_categories[outside])
    assert np.array_equal(res.indices[outside], res.original_indices[outside])
    # the assignment on touched frames: requested and coupled slots are the solved motion's,
    # unrelated slots keep the encoded categories
    solved = posecode_indices(features_to_joints(torch.from_numpy(res.target[::4]))).numpy()
    written = [POSECODE_SLOTS.index(s) for s in ["vertical:right_forearm"] + edit_coupled_slots(["vertical:right_forearm"])]
    other = [i for i in range(len(POSECODE_SLOTS)) if i not in written]
    lf = res.latent_frames
    assert np.array_equal(res.categories[np.ix_(lf, written)], solved[np.ix_(lf, written)])
    assert np.array_equal(res.categories[np.ix_(lf, other)], res.original_categories[np.ix_(lf, other)])


def test_residual_policies_and_engine_pair():
    tok = _tiny_tokenizer()
    x = _motion(3, 40)
    req = {"angle:left_elbow": "bent 90-100 deg", "relpos_y:right_hand-right_shoulder": "above"}
    drop = edit(tok, x, req, "8:24", residual="drop", solver_iters=60, blend=2)
    keep = edit(tok, x, req, "8:24", residual="keep", solver_iters=60, blend=2)
    req_q = edit(tok, x, req, "8:24", residual="requantize", solver_iters=60, blend=2, refine=1)
    fit = edit(tok, x, req, "8:24", residual="fit", solver_iters=60, blend=2, fit_iters=5)
    assert (drop.indices[drop.latent_frames] == -1).all()
    assert np.array_equal(keep.indices, keep.original_indices)
    assert np.array_equal(drop.categories, keep.categories) and np.array_equal(keep.categories, req_q.categories)
    assert np.array_equal(fit.categories, keep.categories)
    untouched = [j for j in range(x.shape[0] // 4) if j not in fit.latent_frames]
    assert np.array_equal(fit.indices[untouched], fit.original_indices[untouched])
    # (categories, indices) decode to the edited motion: what an engine feeds decoder.onnx
    for r in (drop, keep, req_q, fit):
        y = tok.decode(torch.from_numpy(r.categories)[None], torch.from_numpy(r.indices)[None])
        assert np.allclose(y[0].detach().numpy(), r.features, atol=1e-5)
    with pytest.raises(ValueError, match="residual"):
        edit(tok, x, req, residual="forget")
    with pytest.raises(ValueError, match="fit_iters"):
        edit(tok, x, req, fit_iters=-1)
    with pytest.raises(ValueError, match="solve_on"):
        edit(tok, x, req, solve_on="target")


def test_unreachable_and_contradictory_requests():
    tok = _tiny_tokenizer()
    x = _motion(5, 40)
    seen = {"angle:left_knee": ["bent 90-100 deg", "straight"]}
    with pytest.raises(UnreachableEditError, match=r"angle:left_knee.*completely bent.*reachable labels.*straight"):
        edit(tok, x, {"angle:left_knee": "completely bent"}, seen=seen)
    with pytest.warns(UnreachableEditWarning, match="angle:left_knee"):
        edit(tok, x, {"angle:left_knee": "completely bent"}, "0:8", seen=seen, strict=False, solver_iters=5)
    tok.posecode_seen = seen  # what MotionTokenizer.load reads from the run folder
    with pytest.raises(UnreachableEditError, match="never occurs in the training data"):
        edit(tok, x, {"angle:left_knee": "completely bent"})
    # a straight knee with a horizontal thigh and a vertical calf cannot hold together
    contra = {"angle:left_knee": "straight", "vertical:left_thigh": "horizontal", "vertical:left_calf": "vertical"}
    with pytest.warns(UnreachableEditWarning, match=r"cannot reach every request.*vertical:left_"):
        edit(tok, x, contra, "0:8", seen={}, solver_iters=60)
    with pytest.raises(ValueError, match="given twice"):
        parse_set(["angle:left_knee=straight", "angle:left_knee=bent 90-100 deg"])


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


def test_edit_cli_and_suite(tmp_path, capsys):
    tok = _tiny_tokenizer()
    tok.save(tmp_path / "run")
    np.save(tmp_path / "in.npy", _motion(6, 42)[:42])
    rc = main([str(tmp_path / "run"), "--input", str(tmp_path / "in.npy"), "--set",
               "angle:left_knee=straight", "--set", "ground:right_foot=off ground", "--frames", "0:20",
               "--out", str(tmp_path / "out"), "--gif-frames", "5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "success rate" in text and "unrelated slots" in text and "cropping 42" in text
    out = np.load(tmp_path / "out" / "edited.npy", allow_pickle=False)
    assert out.shape == (40, 263)
    assert np.load(tmp_path / "out" / "categories.npy").shape == (10, 70)
    summary = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert summary["latent_frames"] == [0, 7] and 0 <= summary["success"] <= 1  # 0:20 + 10-frame ramp
    assert (tmp_path / "out" / "before_after.gif").stat().st_size > 1000
    np.save(tmp_path / "bad.npy", np.zeros((40, 262), np.float32))
    with pytest.raises(ValueError, match="input"):
        main([str(tmp_path / "run"), "--input", str(tmp_path / "bad.npy"), "--set",
              "angle:left_knee=straight", "--out", str(tmp_path / "o2"), "--debug"])  # --debug: raise

    from rvqfast.editing.suite import SUITE, run_suite, suite_markdown
    kinds = {s.split(":")[0].split("_")[0] for s, _ in SUITE}
    assert len(SUITE) >= 24 and kinds == {"angle", "distance", "relpos", "vertical", "ground"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreachableEditWarning)
        res = run_suite(tok, [_motion(7, 64)], requests=SUITE[:1], progress=False, solver_iters=20)
    assert [r["mode"] for r in res["requests"]] == ["whole", "window"]
    assert "border_accel_m_s2" in res["requests"][1] and "| angle:left_knee |" in suite_markdown(res)
