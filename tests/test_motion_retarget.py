import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rvqfast.motion import retarget
from rvqfast.motion.features import canonicalize
from rvqfast.motion.retarget import REFERENCE_BONE_LENGTHS, REFERENCE_LEG_LENGTH, bone_lengths
from rvqfast.motion.skeleton import PARENTS, REST_OFFSETS, rest_pose


def _pose_from_offsets(offsets: np.ndarray, t: int = 6) -> np.ndarray:
    pos = np.zeros((22, 3))
    for j, p in enumerate(PARENTS):
        pos[j] = offsets[j] if p < 0 else pos[p] + offsets[j]
    walk = np.linspace(0, 1.0, t)[:, None, None] * np.array([0.0, 0.0, 1.0])
    return pos[None] + walk


def test_reference_skeleton_is_a_fixed_point():
    j = _pose_from_offsets(REST_OFFSETS)
    assert np.allclose(retarget(j), canonicalize(j), atol=1e-12)
    assert np.allclose(bone_lengths(j)[1:], REFERENCE_BONE_LENGTHS[1:])


def test_uniformly_scaled_body_comes_back_exactly():
    # A 1.3x larger copy of the reference (and its 1.3x longer walk): the known answer is the
    # reference itself walking 1 m, placed canonically.
    big = _pose_from_offsets(REST_OFFSETS * 1.3) * 1.0
    big[:, :, 2] = big[:, :, 2] - big[:, :1, 2] + np.linspace(0, 1.3, 6)[:, None]
    want = _pose_from_offsets(REST_OFFSETS)
    got = retarget(big)
    assert np.allclose(got, canonicalize(want), atol=1e-9)
    assert np.isclose(got[-1, 0, 2] - got[0, 0, 2], 1.0)


def test_long_legs_short_arms_known_answer():
    off = REST_OFFSETS.copy()
    off[[4, 5, 7, 8]] *= 1.25          # legs 25% longer
    off[[18, 19, 20, 21]] *= 0.8       # arms shorter
    off[0, 1] *= 1.25                  # standing taller
    j = _pose_from_offsets(off)
    got = retarget(j, place=False)
    # Root (all three coordinates) scaled by reference leg / subject leg = 1 / 1.25.
    assert np.allclose(got[:, 0], j[:, 0] / 1.25)
    assert np.allclose(bone_lengths(got)[1:], REFERENCE_BONE_LENGTHS[1:])
    # Standing upright, the retargeted person is the reference one, walking 1 / 1.25 m.
    want = _pose_from_offsets(REST_OFFSETS)
    assert np.allclose(canonicalize(got)[0], canonicalize(want)[0], atol=1e-9)
    assert np.isclose(got[-1, 0, 2] - got[0, 0, 2], 0.8)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_directions_kept_lengths_set_and_placed(seed):
    rng = np.random.default_rng(seed)
    t = 7
    j = rest_pose()[None] * rng.uniform(0.6, 1.6) + rng.normal(0, 0.15, (t, 22, 3))
    j[..., 1] += 3.0
    got = retarget(j)
    unplaced = retarget(j, place=False)
    assert np.allclose(bone_lengths(got)[1:], REFERENCE_BONE_LENGTHS[1:])
    for c, p in enumerate(PARENTS):
        if p < 0:
            continue
        a, b = j[:, c] - j[:, p], unplaced[:, c] - unplaced[:, p]
        ua = a / np.linalg.norm(a, axis=-1, keepdims=True)
        assert np.allclose(ua, b / np.linalg.norm(b, axis=-1, keepdims=True))
        # Placing only turns about +Y: the vertical part of every direction is unchanged.
        g = got[:, c] - got[:, p]
        assert np.allclose(ua[:, 1], g[:, 1] / np.linalg.norm(g, axis=-1))
    assert abs(got[..., 1].min()) < 1e-12                       # feet on the floor
    assert np.allclose(got[0, 0, [0, 2]], 0)                    # root at the origin
    across = (got[0, 2] - got[0, 1]) + (got[0, 17] - got[0, 16])
    assert abs(across[2]) < 1e-9 and across[0] < 0              # facing +Z


def test_torch_input_matches_numpy():
    off = REST_OFFSETS.copy()
    off[[16, 17], 0] *= 1.4
    j = _pose_from_offsets(off)
    for dtype in (torch.float32, torch.float64):
        out = retarget(torch.from_numpy(j).to(dtype))
        assert isinstance(out, torch.Tensor) and out.dtype == dtype
        assert torch.allclose(out.double(), torch.from_numpy(retarget(j)), atol=1e-5)


def test_bad_input():
    with pytest.raises(TypeError, match="joints"):
        retarget([[0.0]])
    with pytest.raises(ValueError, match="joints"):
        retarget(np.zeros((4, 21, 3)))
    with pytest.raises(ValueError, match="legs have zero length"):
        retarget(np.zeros((4, 22, 3)))
    with pytest.raises(ValueError, match="dtype"):
        retarget(torch.zeros(4, 22, 3, dtype=torch.int32))
    assert np.isclose(REFERENCE_LEG_LENGTH, 0.8)



def _bvh_text(offsets: np.ndarray, n: int = 4) -> str:
    """A BVH of the t2m tree with the given offsets (metres -> cm), standing and walking."""
    children = {j: [k for k, p in enumerate(PARENTS) if p == j] for j in range(22)}
    lines = ["HIERARCHY"]

    def emit(j, depth):
        pad = "  " * depth
        from rvqfast.motion.skeleton import JOINT_NAMES
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {JOINT_NAMES[j]}")
        lines.append(pad + "{")
        off = offsets[j] * 100 if j else np.zeros(3)
        lines.append(f"{pad}  OFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        lines.append(f"{pad}  CHANNELS {6 if j == 0 else 3} "
                     + ("Xposition Yposition Zposition " if j == 0 else "")
                     + "Zrotation Xrotation Yrotation")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET 0 0 1", pad + "  }"])
        lines.append(pad + "}")

    emit(0, 0)
    lines += ["MOTION", f"Frames: {n}", "Frame Time: 0.05"]
    for i in range(n):
        vals = np.zeros(6 + 3 * 21)
        vals[:3] = [0.0, offsets[0, 1] * 100, 5.0 * i]
        lines.append(" ".join(f"{v:.4f}" for v in vals))
    return "\n".join(lines) + "\n"


def test_import_bvh_retargets_unless_asked_to_keep_proportions(tmp_path):
    from rvqfast.data.bvh import import_bvh
    off = REST_OFFSETS.copy()
    off[[4, 5, 7, 8]] *= 1.2
    off[0, 1] = 1.08
    f = tmp_path / "tall.bvh"
    f.write_text(_bvh_text(off))
    a = import_bvh([f], tmp_path / "a")
    b = import_bvh([f], tmp_path / "b", keep_proportions=True)
    ja, jb = np.load(a / "new_joints" / "tall.npy"), np.load(b / "new_joints" / "tall.npy")
    assert np.allclose(bone_lengths(ja.astype(np.float64))[1:], REFERENCE_BONE_LENGTHS[1:], atol=1e-5)
    assert np.isclose(bone_lengths(jb.astype(np.float64))[4], 0.48, atol=1e-5)
    assert np.isclose(ja[0, 0, 1], rest_pose()[0, 1], atol=1e-5)  # pelvis at reference height
