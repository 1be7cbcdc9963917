import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rvqfast.data.synthetic import forward_kinematics, generate_motion
from rvqfast.motion import posecodes as pc
from rvqfast.motion.skeleton import REST_OFFSETS, rest_pose


def _pose(**angles):
    """Rest pose with Euler overrides: joint index -> (x, y, z) radians; feet on the floor."""
    ang = np.zeros((1, 22, 3))
    for j, v in angles.items():
        ang[0, int(j[1:])] = v
    pos = forward_kinematics(ang, REST_OFFSETS)[0]
    pos[:, 1] -= pos[:, 1].min()
    return pos


def _code(pose, slot):
    return pc.posecode_indices(pose)[pc.POSECODE_SLOTS.index(slot)]


def test_table_counts():
    assert len(pc.POSECODE_SLOTS) == 70 and len(set(pc.POSECODE_SLOTS)) == 70
    assert len(pc.POSECODE_CATEGORIES) == 392 and sum(pc.SLOT_SIZES) == 392
    assert pc.SLOT_OFFSETS[0] == 0 and pc.SLOT_OFFSETS[-1] + pc.SLOT_SIZES[-1] == 392
    kinds = [s.split(":")[0] for s in pc.POSECODE_SLOTS]
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {"angle": 4, "distance": 18, "relpos_x": 6, "relpos_y": 16, "relpos_z": 9,
                      "vertical": 13, "ground": 4}
    for s, off, size in zip(pc.POSECODE_SLOTS, pc.SLOT_OFFSETS, pc.SLOT_SIZES):
        assert all(slot == s for slot, _ in pc.POSECODE_CATEGORIES[off:off + size])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 5000))
def test_exactly_one_per_slot_and_parity(index):
    j = generate_motion(7, index).joints[:30]
    codes = pc.extract_posecodes(j)
    assert codes.shape == (30, 392) and codes.dtype == bool
    for off, size in zip(pc.SLOT_OFFSETS, pc.SLOT_SIZES):
        assert (codes[:, off:off + size].sum(1) == 1).all()
    idx_np = pc.posecode_indices(j)
    idx_t = pc.posecode_indices(torch.from_numpy(j))
    assert isinstance(idx_np, np.ndarray) and idx_np.dtype == np.int64
    assert np.array_equal(idx_np, idx_t.numpy())
    # float32 agrees except possibly on exact bin edges
    assert (pc.posecode_indices(j.astype(np.float32)) == idx_np).mean() > 0.99
    batched = pc.posecode_indices(torch.from_numpy(j).reshape(3, 10, 22, 3))
    assert batched.shape == (3, 10, 70) and np.array_equal(batched.reshape(30, 70).numpy(), idx_np)


def test_hand_made_poses():
    rest = rest_pose()
    straight = pc.category_index("angle:right_elbow", "straight")
    assert _code(rest, "angle:right_elbow") == straight
    assert _code(rest, "ground:left_foot") == pc.category_index("ground:left_foot", "on ground")
    assert _code(rest, "ground:left_knee") == pc.category_index("ground:left_knee", "off ground")
    assert _code(rest, "vertical:left_thigh") == 0  # vertical
    bent = _pose(j19=(-np.pi / 2, 0, 0))  # right elbow bent 90 degrees
    assert _code(bent, "angle:right_elbow") == pc.category_index("angle:right_elbow", "bent 90-100 deg")
    assert _code(bent, "vertical:right_forearm") == 2  # horizontal
    raised = _pose(j16=(0, 0, 2.9))  # left arm overhead
    assert _code(raised, "relpos_y:left_hand-head") == pc.category_index("relpos_y:left_hand-head", "above")
    assert _code(raised, "relpos_y:right_hand-head") == 0
    forward = _pose(j17=(-np.pi / 2, 0, 0))  # right arm straight out in front
    assert _code(forward, "relpos_z:right_hand-torso") == 2
    # Rotating the whole body about Y must not change any code.
    c, s = np.cos(2.0), np.sin(2.0)
    turned = forward @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    assert np.array_equal(pc.posecode_indices(turned), pc.posecode_indices(forward))


def test_category_index_and_describe():
    with pytest.raises(ValueError, match="valid labels"):
        pc.category_index("angle:right_elbow", "wobbly")
    with pytest.raises(ValueError, match="unknown posecode slot"):
        pc.category_index("angle:tail", "straight")
    idx = pc.posecode_indices(rest_pose())
    a = pc.describe(idx)
    b = pc.describe(pc.indices_to_multihot(idx))
    assert a == b and len(a) == 70 and "right elbow: straight" in a
    with pytest.raises(ValueError, match="codes"):
        pc.describe(np.zeros(5))
    with pytest.raises(ValueError, match="joints"):
        pc.posecode_indices(np.zeros((4, 21, 3)))


def test_codes_vary_over_generated_motions():
    idx = np.concatenate([pc.posecode_indices(generate_motion(1, i).joints) for i in range(40)])
    used = [len(np.unique(idx[:, s])) for s in range(70)]
    assert sum(u >= 2 for u in used) >= 55


def test_onnx_export_matches_torch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    class M(torch.nn.Module):
        def forward(self, x):
            return pc.posecode_indices(x)

    j = torch.from_numpy(generate_motion(3, 0).joints[:40]).float()
    path = tmp_path / "pc.onnx"
    torch.onnx.export(M(), (j[None],), str(path), opset_version=15, input_names=["j"],
                      output_names=["c"], dynamic_axes={"j": {0: "b", 1: "t"}}, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.stack([j, j.flip(0)])[:, :25]
    got = sess.run(None, {"j": x.numpy()})[0]
    assert got.dtype == np.int64
    assert (got == pc.posecode_indices(x).numpy()).mean() > 0.999
