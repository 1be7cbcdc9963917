import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rvqfast.data.synthetic import generate_motion
from rvqfast.motion.features import (
    FOOT_CONTACT, RIC, canonicalize, features_to_joints, joints_to_features,
)
from rvqfast.motion.skeleton import FEATURE_DIM, PARENTS, rest_pose


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_round_trip_generated_motion(index):
    joints = generate_motion(123, index).joints
    feats = joints_to_features(joints)
    assert feats.shape == (joints.shape[0] - 1, FEATURE_DIM) and feats.dtype == np.float32
    rec = features_to_joints(feats)
    err = np.abs(rec - canonicalize(joints)[:-1]).max()
    assert err < 1e-4


def test_round_trip_full_turns_and_torch_batch():
    t = 80
    ang = np.linspace(0, 4 * np.pi, t)  # two full turns: heading must unwrap
    base = rest_pose()
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    j = np.stack([c * base[:, 0] + s * base[:, 2], np.broadcast_to(base[:, 1], (t, 22)),
                  -s * base[:, 0] + c * base[:, 2]], -1)
    j[..., 0] += np.linspace(0, 5, t)[:, None]
    f = torch.from_numpy(joints_to_features(j))
    batch = torch.stack([f, f])[None]  # (1, 2, T-1, 263)
    out = features_to_joints(batch)
    assert out.shape == (1, 2, t - 1, 22, 3)
    assert torch.allclose(out[0, 1], torch.from_numpy(canonicalize(j)[:-1]).float(), atol=1e-4)


def test_canonical_frame_and_contacts():
    j = generate_motion(0, 3).joints
    c = canonicalize(j)
    assert abs(c[..., 1].min()) < 1e-9
    assert np.allclose(c[0, 0, [0, 2]], 0)
    across = (c[0, 2] - c[0, 1]) + (c[0, 17] - c[0, 16])
    assert abs(across[2]) < 1e-9 and across[0] < 0  # left side on +X, facing +Z
    still = np.tile(rest_pose(), (10, 1, 1))
    f = joints_to_features(still)
    assert (f[:, FOOT_CONTACT] == 1).all()
    lifted = still.copy()
    lifted[:, [7, 10], 1] += np.linspace(0, 1.0, 10)[:, None]  # left foot rises fast
    assert (joints_to_features(lifted)[2:, FOOT_CONTACT][:, :2] == 0).all()


def test_features_to_joints_is_differentiable():
    f = torch.from_numpy(joints_to_features(generate_motion(0, 1).joints)).double().requires_grad_()
    features_to_joints(f).square().sum().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()
    assert f.grad[:, RIC].abs().sum() > 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="joints"):
        joints_to_features(np.zeros((5, 21, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        joints_to_features(np.zeros((1, 22, 3)))
    with pytest.raises(ValueError, match="features"):
        features_to_joints(torch.zeros(4, 262))
    bad = np.tile(rest_pose(), (3, 1, 1))
    bad[1, 4, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        joints_to_features(bad)


def test_onnx_export_matches_torch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class M(torch.nn.Module):
        def forward(self, x):
            return features_to_joints(x)

    f = torch.from_numpy(joints_to_features(generate_motion(0, 2).joints))[None]
    path = tmp_path / "f2j.onnx"
    torch.onnx.export(M(), (f,), str(path), opset_version=15, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b", 1: "t"}}, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    f2 = torch.cat([f, f.flip(1)])[:, :37]
    got = sess.run(None, {"x": f2.numpy()})[0]
    np.testing.assert_allclose(got, features_to_joints(f2).numpy(), atol=1e-4)
    assert len(PARENTS) == 22


def test_joints_to_features_accepts_torch_tensor():
    j = generate_motion(0, 2).joints
    ref = joints_to_features(j)
    for dtype in (torch.float32, torch.float64):
        out = joints_to_features(torch.from_numpy(j).to(dtype))
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert out.shape == ref.shape
        assert np.allclose(out.numpy(), ref, atol=1e-4 if dtype == torch.float32 else 0)
    with pytest.raises(ValueError, match="joints"):
        joints_to_features(torch.zeros(5, 22, 3, dtype=torch.int64))
