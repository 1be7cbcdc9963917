import numpy as np
import pytest

from rvqfast.data import HumanML3D
from rvqfast.data.bvh import BVHError, load_bvh
from rvqfast.data.__main__ import main as cli
from rvqfast.motion.features import canonicalize, features_to_joints
from rvqfast.motion.skeleton import JOINT_NAMES, PARENTS, REST_OFFSETS, rest_pose

MIXAMO = {
    "pelvis": "Hips", "left_hip": "LeftUpLeg", "right_hip": "RightUpLeg", "spine1": "Spine",
    "left_knee": "LeftLeg", "right_knee": "RightLeg", "spine2": "Spine1", "left_ankle": "LeftFoot",
    "right_ankle": "RightFoot", "spine3": "Spine2", "left_foot": "LeftToeBase",
    "right_foot": "RightToeBase", "neck": "Neck", "left_collar": "LeftShoulder",
    "right_collar": "RightShoulder", "head": "Head", "left_shoulder": "LeftArm",
    "right_shoulder": "RightArm", "left_elbow": "LeftForeArm", "right_elbow": "RightForeArm",
    "left_wrist": "LeftHand", "right_wrist": "RightHand",
}


def write_bvh(path, names, frames, unit=100.0, frame_time=0.05):
    """frames: (F, 6) root x y z (metres) + left-knee Xrotation (deg) + root Yrotation (deg)."""
    children = {j: [k for k, p in enumerate(PARENTS) if p == j] for j in range(22)}
    lines = ["HIERARCHY"]

    def emit(j, depth):
        pad = "  " * depth
        kw = "ROOT" if j == 0 else "JOINT"
        lines.append(f"{pad}{kw} mixamorig:{names[j]}" if j else f"{pad}{kw} {names[j]}")
        lines.append(pad + "{")
        off = REST_OFFSETS[j] * unit if j else np.zeros(3)
        lines.append(f"{pad}  OFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        if j == 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{pad}  CHANNELS 3 Zrotation Xrotation Yrotation")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET 0 0 0", pad + "  }"])
        lines.append(pad + "}")

    emit(0, 0)
    lines += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {frame_time}"]
    for fr in frames:
        vals = np.zeros(6 + 3 * 21)
        vals[:3] = fr[:3] * unit
        vals[5] = fr[4]
        vals[6 + 3 * (4 - 1) + 1] = fr[3]  # left knee Xrotation
        lines.append(" ".join(f"{v:.6f}" for v in vals))
    path.write_text("\n".join(lines) + "\n")
    return path


def _frames(n=40):
    t = np.arange(n)
    return np.stack([np.zeros(n), np.full(n, 0.92), 0.05 * t, 60 * np.sin(t / 6) ** 2,
                     np.linspace(0, 90, n)], -1)


def test_bvh_positions_match_known_pose(tmp_path):
    frames = _frames()
    p = write_bvh(tmp_path / "walk.bvh", [MIXAMO[n] for n in JOINT_NAMES], frames)
    j = load_bvh(p)
    assert j.shape == (40, 22, 3)
    # frame 0: rest pose translated; unit auto-detected as centimetres
    np.testing.assert_allclose(j[0], rest_pose(), atol=1e-5)
    # left shin length is preserved and the knee bends the ankle backwards (after heading)
    shin = np.linalg.norm(j[:, 7] - j[:, 4], axis=-1)
    np.testing.assert_allclose(shin, 0.40, atol=1e-5)
    # SMPL-named skeleton in metres gives the same joints
    p2 = write_bvh(tmp_path / "smpl.bvh", JOINT_NAMES, frames, unit=1.0)
    np.testing.assert_allclose(load_bvh(p2), j, atol=1e-5)


def test_bvh_resamples_to_20fps(tmp_path):
    p = write_bvh(tmp_path / "hi.bvh", [MIXAMO[n] for n in JOINT_NAMES], _frames(81), frame_time=0.0125)
    j = load_bvh(p)
    assert j.shape[0] == 21  # 1 s at 80 fps -> 21 frames at 20 fps
    np.testing.assert_allclose(j[:, 0, 2], 0.05 * np.arange(21) * 4, atol=1e-6)


def test_import_bvh_round_trip(tmp_path):
    p = write_bvh(tmp_path / "a b.bvh", [MIXAMO[n] for n in JOINT_NAMES], _frames())
    out = tmp_path / "out"
    assert cli(["import-bvh", str(p), "--out", str(out)]) == 0
    ds = HumanML3D(out, "train", min_length=1)
    assert ds.names == ["a_b"]
    rec = features_to_joints(ds.features[0])
    np.testing.assert_allclose(rec, canonicalize(load_bvh(p))[:-1], atol=1e-4)
    assert cli(["import-bvh", str(p), "--out", str(out)]) == 2  # refuses a non-empty folder


def test_unknown_skeleton_and_broken_files(tmp_path):
    names = [MIXAMO[n] for n in JOINT_NAMES]
    names[18] = "LeftFlipper"
    p = write_bvh(tmp_path / "odd.bvh", names, _frames(5))
    with pytest.raises(BVHError, match=r"odd.bvh.*left_elbow"):
        load_bvh(p)
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT Hips\n{\n OFFSET 0 0\n")
    with pytest.raises(BVHError, match="bad.bvh"):
        load_bvh(bad)
    with pytest.raises(BVHError, match="HIERARCHY"):
        (tmp_path / "x.bvh").write_text("hello")
        load_bvh(tmp_path / "x.bvh")
