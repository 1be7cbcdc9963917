"""The extra training objectives (rvqfast.train.losses) on poses with a known answer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rvqfast.motion.features import RIC, ROOT_ROT_VEL, features_to_joints, joints_to_features
from rvqfast.motion.skeleton import JOINT_INDEX, NUM_JOINTS, PARENTS, REST_OFFSETS, frame_bone_lengths, rest_pose
from rvqfast.train import build_config
from rvqfast.train.losses import bone_length_loss, heading_drift_loss


class _Identity:
    """Stands in for a tokenizer: features are already raw."""

    def denormalize(self, x):
        return x


def _standing(frames: int = 8) -> torch.Tensor:
    joints = np.repeat(rest_pose()[None], frames + 1, axis=0)
    joints[:, :, 0] += np.linspace(0, 0.3, frames + 1)[:, None]  # walk sideways: not a static clip
    return torch.from_numpy(joints_to_features(joints)).float()[None]


def test_frame_bone_lengths_numpy_and_torch_agree_with_the_rest_offsets():
    j = rest_pose()
    want = np.linalg.norm(REST_OFFSETS[1:], axis=-1)
    np.testing.assert_allclose(frame_bone_lengths(j[None])[0], want, atol=1e-12)
    t = frame_bone_lengths(torch.from_numpy(j)[None].requires_grad_())
    np.testing.assert_allclose(t.detach().numpy()[0], want, atol=1e-12)
    t.sum().backward()  # differentiable


def test_frame_bone_lengths_zero_length_bone_has_a_finite_gradient():
    j = torch.zeros(1, NUM_JOINTS, 3, requires_grad=True)
    frame_bone_lengths(j).sum().backward()
    assert torch.isfinite(j.grad).all()


def test_bone_loss_is_zero_on_the_input_and_measures_a_stretched_forearm():
    x = _standing()
    assert float(bone_length_loss(_Identity(), x, x.clone())) == pytest.approx(0.0, abs=1e-7)
    y = x.clone()
    wrist, elbow = JOINT_INDEX["left_wrist"], JOINT_INDEX["left_elbow"]
    ric = y[..., RIC].reshape(*y.shape[:-1], NUM_JOINTS - 1, 3)
    assert PARENTS[wrist] == elbow
    bone = ric[..., wrist - 1, :] - ric[..., elbow - 1, :]
    ric[..., wrist - 1, :] += 0.1 * bone / bone.norm(dim=-1, keepdim=True)  # forearm 10 cm longer
    y[..., RIC] = ric.reshape(*y.shape[:-1], -1)
    y.requires_grad_()
    loss = bone_length_loss(_Identity(), x, y)
    assert float(loss.detach()) == pytest.approx(0.1 / (NUM_JOINTS - 1), rel=1e-4)  # one bone of 21 off by 0.1 m
    loss.backward()
    assert y.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "1"])
def test_bone_loss_weight_is_validated(bad):
    with pytest.raises(ValueError, match="bone_loss_weight"):
        build_config("quick", None, {"bone_loss_weight": bad, "out": "x"})


def test_heading_loss_measures_an_accumulated_turn_not_a_per_frame_error():
    x = _standing(16)
    assert float(heading_drift_loss(_Identity(), x, x.clone())) == pytest.approx(0.0, abs=1e-7)
    bias = 0.01  # rad per frame of rotation velocity: the decoded motion turns 0.02 rad a frame
    y = x.clone()
    y[..., ROOT_ROT_VEL] += bias
    y.requires_grad_()
    loss = heading_drift_loss(_Identity(), x, y)
    t = x.shape[1]
    # the heading error grows 2 * bias a frame: mean over frames of 2 * bias * (1 .. T)
    assert float(loss.detach()) == pytest.approx(2 * bias * (t + 1) / 2, rel=1e-5)
    # ... and is the turn the decoded joints make: the last frame's heading is off by that much
    jx, jy = features_to_joints(x[0].numpy()), features_to_joints(y[0].detach().numpy())
    fx, fy = jx[-1, 2] - jx[-1, 1], jy[-1, 2] - jy[-1, 1]  # left hip -> right hip, horizontal
    turn = np.arctan2(fx[0], fx[2]) - np.arctan2(fy[0], fy[2])
    assert abs(abs(turn) - 2 * bias * (t - 1)) < 1e-4
    loss.backward()
    assert y.grad[..., ROOT_ROT_VEL].abs().sum() > 0 and y.grad[..., RIC].abs().sum() == 0
    # an alternating error of the same size per frame barely accumulates
    z = x.clone()
    z[..., ROOT_ROT_VEL] += bias * torch.tensor([(-1.0) ** i for i in range(t)])[None, :, None]
    assert float(heading_drift_loss(_Identity(), x, z)) < 0.1 * float(loss.detach())


@pytest.mark.parametrize("bad", [-1.0, float("inf")])
def test_heading_loss_weight_is_validated(bad):
    with pytest.raises(ValueError, match="heading_loss_weight"):
        build_config("quick", None, {"heading_loss_weight": bad, "out": "x"})
