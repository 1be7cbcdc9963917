"""rvqfast.train.augment: exact mirror in feature space, speed and noise copies, the training
pool hook and its validation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rvqfast.data.synthetic import generate_motion, mirror_joints
from rvqfast.motion.features import ROOT_LIN_VEL, features_to_joints, joints_to_features
from rvqfast.motion.retarget import REFERENCE_BONE_LENGTHS, bone_lengths
from rvqfast.train import build_config, train
from rvqfast.train.augment import (
    add_noise, augment_pool, change_speed, mirror_features, parse_augment,
)


@pytest.fixture(scope="module")
def feats():
    return [joints_to_features(generate_motion(0, i).joints) for i in range(4)]


def test_mirror_is_exact_and_an_involution(feats):
    for i, f in enumerate(feats):
        want = joints_to_features(mirror_joints(generate_motion(0, i).joints))
        assert np.allclose(mirror_features(f), want, atol=1e-6)
        assert np.array_equal(mirror_features(mirror_features(f)), f)
    with pytest.raises(ValueError, match="features"):
        mirror_features(np.zeros((3, 262)))


def test_speed_changes_duration_not_path(feats):
    f = feats[0]
    fast = change_speed(f, 2.0)
    assert abs(fast.shape[0] - (f.shape[0] - 1) / 2) <= 2
    a, b = features_to_joints(f), features_to_joints(fast)
    path = lambda j: np.linalg.norm(np.diff(j[:, 0, [0, 2]], axis=0), axis=-1).sum()  # noqa: E731
    assert np.isclose(path(a), path(b), rtol=0.1, atol=0.02)
    assert np.abs(fast[:, ROOT_LIN_VEL]).mean() > 1.5 * np.abs(f[:, ROOT_LIN_VEL]).mean() or \
        np.abs(f[:, ROOT_LIN_VEL]).mean() < 1e-3


def test_noise_keeps_the_canonical_skeleton_and_is_seeded(feats):
    f = feats[1]
    a = add_noise(f, np.random.default_rng(3))
    b = add_noise(f, np.random.default_rng(3))
    assert np.array_equal(a, b)
    j = features_to_joints(a).astype(np.float64)
    assert np.allclose(bone_lengths(j)[1:], REFERENCE_BONE_LENGTHS[1:], atol=1e-5)
    from rvqfast.eval.metrics import pa_mpjpe
    n = j.shape[0]  # one frame shorter: features of T joints have T - 1 rows
    assert 1.0 < pa_mpjpe(j, features_to_joints(f)[:n]) < 30.0  # mm: jitter, not another motion


def test_pool_is_deterministic_and_sized(feats):
    a = augment_pool(feats, "mirror,speed,noise", seed=1, fraction=1.5)
    b = augment_pool(feats, "mirror,speed,noise", seed=1, fraction=1.5)
    assert len(a) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert augment_pool(feats, "", seed=1) == []
    assert parse_augment(" mirror , noise") == ("mirror", "noise")
    for bad, msg in (("yaw", "heading frame"), ("flip", "unknown"), ("noise,noise", "twice")):
        with pytest.raises(ValueError, match=msg):
            parse_augment(bad)


def test_training_uses_the_augmented_pool(tmp_path):
    from rvqfast.data import generate_dataset
    data = generate_dataset(tmp_path / "d", n_motions=8, seed=0)
    tiny = {"width": 32, "code_dim": 32, "codebook_size": 16, "num_quantizers": 2,
            "batch_size": 4, "window": 32, "warmup_steps": 1, "log_every": 1, "val_every": 0,
            "ckpt_every": 0, "val_max_windows": 4, "num_threads": 1, "gif": False, "steps": 2}
    cfg = build_config("quick", None, {**tiny, "data": str(data), "out": str(tmp_path / "r"),
                                       "augment": "mirror,speed"})
    train(cfg, progress=False)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert "mirror,speed" in json.dumps(saved)
    with pytest.raises(ValueError, match="augment"):
        build_config("quick", None, {"out": "x", "augment": "yaw"})
