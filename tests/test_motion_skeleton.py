"""Decoding onto one skeleton: set_bone_lengths, features_with_bone_lengths, shared_skeleton and
the tokenizer's skeleton (decode, save/load, training)."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rvqfast.models.tokenizer import MotionTokenizer, TokenizerConfig
from rvqfast.motion import features_to_joints, features_with_bone_lengths, set_bone_lengths, shared_skeleton
from rvqfast.motion.retarget import REFERENCE_BONE_LENGTHS, retarget
from rvqfast.motion.skeleton import PARENTS, REST_OFFSETS, frame_bone_lengths, rest_pose
from rvqfast.train.checkpoint import CheckpointError

REF = REFERENCE_BONE_LENGTHS[1:]


def _random_pose(seed: int, t: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.3, (t, 22, 3))


def _units(j: np.ndarray) -> np.ndarray:
    d = j[..., 1:, :] - j[..., PARENTS[1:], :]
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_stretched_rest_pose_comes_back_exactly():
    stretched = np.zeros((22, 3))
    for j, p in enumerate(PARENTS):  # every bone 30% longer, the root where it was
        stretched[j] = REST_OFFSETS[j] if p < 0 else stretched[p] + 1.3 * REST_OFFSETS[j]
    np.testing.assert_allclose(set_bone_lengths(stretched, REF), rest_pose(), atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.5, 2.0))
def test_lengths_set_directions_and_root_kept(seed, scale):
    j = _random_pose(seed)
    lengths = REF * scale
    got = set_bone_lengths(j, lengths)
    np.testing.assert_allclose(frame_bone_lengths(got), np.broadcast_to(lengths, (5, 21)), atol=1e-12)
    np.testing.assert_allclose(_units(got), _units(j), atol=1e-9)
    np.testing.assert_array_equal(got[:, 0], j[:, 0])
    np.testing.assert_allclose(set_bone_lengths(got, lengths), got, atol=1e-12)  # idempotent


def test_torch_matches_numpy_and_has_finite_gradients():
    j = _random_pose(3)
    j[0, 4] = j[0, 1]  # a zero-length thigh: the rest direction, and no NaN gradient
    x = torch.from_numpy(j).requires_grad_(True)
    got = set_bone_lengths(x, torch.from_numpy(REF))
    np.testing.assert_allclose(got.detach().numpy(), set_bone_lengths(j, REF), atol=1e-12)
    rest_dir = REST_OFFSETS[4] / np.linalg.norm(REST_OFFSETS[4])
    np.testing.assert_allclose(got[0, 4].detach().numpy() - got[0, 1].detach().numpy(), rest_dir * REF[3], atol=1e-12)
    got.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_per_frame_lengths_broadcast():
    j = _random_pose(4, t=3)
    lengths = REF[None] * np.array([[1.0], [1.5], [0.5]])
    np.testing.assert_allclose(frame_bone_lengths(set_bone_lengths(j, lengths)), lengths, atol=1e-12)


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="joints"):
        set_bone_lengths(np.zeros((5, 21, 3)), REF)
    with pytest.raises(ValueError, match="lengths"):
        set_bone_lengths(np.zeros((5, 22, 3)), REF[:20])
    with pytest.raises(ValueError, match="features"):
        features_with_bone_lengths(torch.zeros(4, 262), torch.from_numpy(REF))


def _motion_features(seed: int = 0) -> torch.Tensor:
    from rvqfast.data.synthetic import generate_motion
    from rvqfast.motion.features import joints_to_features

    return torch.from_numpy(joints_to_features(generate_motion(seed, 0).joints)).double()


def test_features_version_equals_setting_the_joints():
    f = _motion_features() + torch.randn(1, 263, dtype=torch.float64).mul(0.02)  # lengths now off
    got = features_with_bone_lengths(f, torch.from_numpy(REF))
    want = set_bone_lengths(features_to_joints(f), torch.from_numpy(REF))
    np.testing.assert_allclose(features_to_joints(got).numpy(), want.numpy(), atol=1e-9)
    keep = torch.ones(263, dtype=torch.bool)
    keep[4:67] = False
    assert torch.equal(got[:, keep], f[:, keep])  # only RIC changes


def test_shared_skeleton():
    a, b = _random_pose(1, t=6), _random_pose(2, t=6)
    np.testing.assert_allclose(shared_skeleton([retarget(a), retarget(b)]), REF, atol=1e-12)
    assert shared_skeleton([retarget(a), retarget(b) * 1.1]) is None  # a 10% larger subject
    with pytest.raises(ValueError, match="motions"):
        shared_skeleton([])


def _tiny(model: str = "posecode_rvq") -> MotionTokenizer:
    torch.manual_seed(0)
    return MotionTokenizer(TokenizerConfig(model=model, width=32, code_dim=32, codebook_size=16,
                                           num_quantizers=3)).eval()


@pytest.mark.parametrize("model", ["posecode_rvq", "rvq"])
@torch.no_grad()
def test_decode_sets_the_models_bone_lengths(model):
    tok = _tiny(model)
    f = _motion_features()[None, :40].float()
    cats, idx = tok.encode(f)
    plain = tok.decode(cats, idx)
    assert tok.skeleton is None
    tok.set_skeleton(torch.from_numpy(REF))
    got = tok.decode(cats, idx)
    bones = frame_bone_lengths(tok.decode_joints(cats, idx)[0].double())
    np.testing.assert_allclose(bones.numpy(), np.broadcast_to(REF, bones.shape), atol=1e-5)
    np.testing.assert_allclose(got.numpy(), features_with_bone_lengths(plain, tok.skeleton).numpy(), atol=1e-6)
    tok.set_skeleton(None)
    assert tok.skeleton is None and torch.equal(tok.decode(cats, idx), plain)


def test_set_skeleton_rejects_bad_lengths():
    tok = _tiny()
    for bad in (torch.ones(20), torch.full((21,), float("nan")), torch.zeros(21)):
        with pytest.raises(ValueError, match="bone_lengths"):
            tok.set_skeleton(bad)


def test_skeleton_survives_save_and_load_and_is_checked(tmp_path):
    tok = _tiny()
    tok.save(tmp_path / "none")
    assert MotionTokenizer.load(tmp_path / "none").skeleton is None
    tok.set_skeleton(torch.from_numpy(REF))
    tok.save(tmp_path / "run")
    np.testing.assert_allclose(MotionTokenizer.load(tmp_path / "run").skeleton.numpy(), REF, rtol=1e-6)
    cfg = tmp_path / "run" / "config.json"
    meta = json.loads(cfg.read_text())
    for bad in ([1.0] * 20, ["x"] * 21, [-1.0] * 21):
        meta["skeleton_bone_lengths_m"] = bad
        cfg.write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="skeleton_bone_lengths_m"):
            MotionTokenizer.load(tmp_path / "run")
    del meta["skeleton_bone_lengths_m"]  # runs saved before the skeleton existed
    cfg.write_text(json.dumps(meta))
    assert MotionTokenizer.load(tmp_path / "run").skeleton is None
