import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rvqfast.data.synthetic import forward_kinematics, generate_motion
from rvqfast.motion import posecodes as pc
from rvqfast.motion.skeleton import JOINT_NAMES, REST_OFFSETS, rest_pose


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


# CoMo / PoseScript elementary posecodes, transcribed from the published table (order matters).
_COMO_ANGLES = ["left_knee", "right_knee", "left_elbow", "right_elbow"]
_COMO_DISTANCES = [
    "left_elbow-right_elbow", "left_hand-right_hand", "left_knee-right_knee", "left_foot-right_foot",
    "left_hand-left_shoulder", "left_hand-right_shoulder", "right_hand-right_shoulder",
    "right_hand-left_shoulder", "left_hand-right_elbow", "right_hand-left_elbow",
    "left_hand-left_knee", "left_hand-right_knee", "right_hand-right_knee", "right_hand-left_knee",
    "left_hand-left_foot", "left_hand-right_foot", "right_hand-right_foot", "right_hand-left_foot",
]
_COMO_X = ["left_hand-right_hand", "neck-pelvis", "left_hand-left_shoulder",
           "right_hand-right_shoulder", "left_foot-left_hip", "right_foot-right_hip"]
_COMO_Y = ["left_shoulder-right_shoulder", "left_elbow-right_elbow", "left_hand-right_hand",
           "left_knee-right_knee", "left_ankle-neck", "right_ankle-neck", "left_hip-left_knee",
           "right_hip-right_knee", "left_hand-left_shoulder", "right_hand-right_shoulder",
           "left_foot-left_hip", "right_foot-right_hip", "left_wrist-neck", "right_wrist-neck",
           "left_hand-left_hip", "right_hand-right_hip"]
_COMO_Z = ["left_shoulder-right_shoulder", "left_elbow-right_elbow", "left_hand-right_hand",
           "left_knee-right_knee", "neck-pelvis", "left_hand-torso", "right_hand-torso",
           "left_foot-torso", "right_foot-torso"]
_COMO_VERTICAL = ["left_thigh", "right_thigh", "left_calf", "right_calf", "left_upperarm",
                  "right_upperarm", "left_forearm", "right_forearm", "left_backdiag",
                  "right_backdiag", "torso", "hands", "feet"]
_COMO_GROUND = ["left_knee", "right_knee", "left_foot", "right_foot"]


def test_table_follows_como_definitions():
    expected = ([f"angle:{n}" for n in _COMO_ANGLES] + [f"distance:{n}" for n in _COMO_DISTANCES]
                + [f"relpos_x:{n}" for n in _COMO_X] + [f"relpos_y:{n}" for n in _COMO_Y]
                + [f"relpos_z:{n}" for n in _COMO_Z] + [f"vertical:{n}" for n in _COMO_VERTICAL]
                + [f"ground:{n}" for n in _COMO_GROUND])
    assert pc.POSECODE_SLOTS == expected
    assert pc.ANGLE_EDGES_DEG == [10.0 * k for k in range(1, 18)]
    assert np.allclose(pc.DISTANCE_EDGES_M, [0.1 * k for k in range(1, 10)])
    assert (pc.RELPOS_THRESHOLD_M, pc.VERTICAL_EDGES_DEG, pc.GROUND_THRESHOLD_M) == (0.15, [10.0, 80.0], 0.10)
    labels = {s: [lab for slot, lab in pc.POSECODE_CATEGORIES if slot == s] for s in pc.POSECODE_SLOTS}
    assert labels["angle:left_knee"][0] == "completely bent" and labels["angle:left_knee"][-1] == "straight"
    assert labels["relpos_x:neck-pelvis"] == ["right of", "x-aligned with", "left of"]
    assert labels["relpos_y:left_ankle-neck"] == ["below", "y-aligned with", "above"]
    assert labels["relpos_z:neck-pelvis"] == ["behind", "z-aligned with", "in front of"]
    assert labels["vertical:torso"] == ["vertical", "oblique", "horizontal"]
    assert labels["ground:left_foot"] == ["on ground", "off ground"]


def _swap_side(name):
    return name.replace("left", "\0").replace("right", "left").replace("\0", "right")


_MIRROR_JOINTS = [JOINT_NAMES.index(_swap_side(n)) for n in JOINT_NAMES]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 5000))
def test_left_right_mirror_symmetry(index):
    """Mirroring a pose (x -> -x, left <-> right joints) maps each slot onto its mirror slot;
    only the signed left/right (X) comparisons flip. Checks table symmetry and sign conventions."""
    j = generate_motion(11, index).joints[::4]
    m = j[:, _MIRROR_JOINTS] * np.array([-1.0, 1.0, 1.0])
    a, b = pc.posecode_indices(j), pc.posecode_indices(m)
    for s, slot in enumerate(pc.POSECODE_SLOTS):
        kind, part = slot.split(":")
        mirrored, flip = f"{kind}:{_swap_side(part)}", kind == "relpos_x"
        if mirrored not in pc.POSECODE_SLOTS:  # pair listed the other way round
            first, second = _swap_side(part).split("-")
            mirrored, flip = f"{kind}:{second}-{first}", flip != kind.startswith("relpos")
        got = b[:, pc.POSECODE_SLOTS.index(mirrored)]
        assert np.array_equal(got, 2 - a[:, s] if flip else a[:, s]), slot


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
    for limb in ("left_knee", "right_knee", "left_elbow", "right_elbow"):
        assert _code(rest, f"angle:{limb}") == pc.category_index(f"angle:{limb}", "straight")
    assert _code(rest, "ground:left_foot") == pc.category_index("ground:left_foot", "on ground")
    assert _code(rest, "ground:left_knee") == pc.category_index("ground:left_knee", "off ground")
    assert _code(rest, "vertical:left_thigh") == 0 and _code(rest, "vertical:torso") == 0  # vertical
    assert _code(rest, "vertical:hands") == 2 and _code(rest, "vertical:feet") == 2  # horizontal
    assert _code(rest, "relpos_x:left_hand-right_hand") == 2  # left hand at the body's left
    assert _code(rest, "relpos_x:neck-pelvis") == 1
    assert _code(rest, "relpos_y:left_ankle-neck") == 0 and _code(rest, "relpos_y:left_hip-left_knee") == 2
    assert _code(rest, "distance:left_foot-right_foot") == 1  # feet 0.18 m apart
    bent = _pose(j19=(-np.pi / 2, 0, 0))  # right elbow bent 90 degrees
    assert _code(bent, "angle:right_elbow") == pc.category_index("angle:right_elbow", "bent 90-100 deg")
    assert _code(bent, "angle:left_elbow") == pc.category_index("angle:left_elbow", "straight")
    assert _code(bent, "vertical:right_forearm") == 2  # horizontal
    raised = _pose(j16=(0, 0, 2.9))  # left arm overhead
    above = pc.category_index("relpos_y:left_wrist-neck", "above")
    assert _code(raised, "relpos_y:left_wrist-neck") == above
    assert _code(raised, "relpos_y:left_hand-left_shoulder") == above
    assert _code(raised, "relpos_y:right_wrist-neck") == 0  # below
    assert _code(raised, "relpos_y:left_hand-right_hand") == above
    forward = _pose(j17=(-np.pi / 2, 0, 0))  # right arm straight out in front
    assert _code(forward, "relpos_z:right_hand-torso") == pc.category_index("relpos_z:right_hand-torso", "in front of")
    assert _code(forward, "relpos_z:left_hand-right_hand") == 0  # left hand behind the right one
    assert _code(forward, "relpos_z:left_hand-torso") == 1
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


# ---------------------------------------------------------------- coupling table and slot values


def _random_pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ang = rng.uniform(-0.6, 0.6, size=(1, 22, 3))
    pos = forward_kinematics(ang, REST_OFFSETS)[0]
    pos[:, 1] -= pos[:, 1].min() - 0.05
    return pos


@pytest.mark.parametrize("seed", [0, 1])
def test_slot_joints_table_matches_extraction(seed):
    """A slot's value moves when (and only when) a joint it lists moves; X/Z slots may also
    move with the facing joints (hips, shoulders), which set the body frame."""
    from rvqfast.motion.skeleton import FACE_JOINTS
    pose = torch.from_numpy(_random_pose(seed))
    base = pc.slot_values(pose)
    face = {JOINT_NAMES[j] for j in FACE_JOINTS}
    rng = np.random.default_rng(100 + seed)
    for j, name in enumerate(JOINT_NAMES):
        moved = pose.clone()
        moved[j] += torch.from_numpy(rng.normal(size=3) * 0.03)
        changed = (pc.slot_values(moved) - base).abs() > 1e-9
        for s, slot in enumerate(pc.POSECODE_SLOTS):
            listed = name in pc.POSECODE_SLOT_JOINTS[slot]
            frame = slot.startswith(("relpos_x", "relpos_z")) and name in face
            if listed:
                assert changed[s], (slot, name)
            elif not frame:
                assert not changed[s], (slot, name)


def test_slot_values_agree_with_categories():
    j = torch.from_numpy(np.stack([_random_pose(s) for s in range(40)]))
    v = pc.slot_values(j)
    idx = pc.posecode_indices(j)
    assert torch.equal(pc.values_to_indices(v), idx)
    assert float(pc.bin_violation(v, idx).abs().max()) == 0.0
    other = (idx + 1) % torch.tensor(pc.SLOT_SIZES)
    assert bool((pc.bin_violation(v, other) > 0).all())
    # bins shrunk by half aim at the centre: a value exactly at the centre still passes
    knee = pc.POSECODE_SLOTS.index("angle:left_knee")
    k = pc.category_index("angle:left_knee", "bent 90-100 deg")
    vals = torch.tensor([[95.0], [90.5], [101.0]], dtype=torch.float64)
    cats = torch.full((3, 1), k)
    got = pc.bin_violation(vals, cats, 0.5, torch.tensor([knee]))[:, 0]
    assert got[0] == 0 and got[1] == pytest.approx(0.45) and got[2] == pytest.approx(0.6)


def test_coupled_slots_and_seen_categories():
    coupled = pc.coupled_slots(["angle:left_knee"])
    assert "vertical:left_calf" in coupled and "ground:left_knee" in coupled
    assert "angle:left_knee" not in coupled and "angle:right_elbow" not in coupled
    seen = pc.seen_categories([rest_pose()[None]])
    assert seen["angle:left_knee"] == ["straight"] and seen["ground:left_foot"] == ["on ground"]
    assert list(seen) == pc.POSECODE_SLOTS
