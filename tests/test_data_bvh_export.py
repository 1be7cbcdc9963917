"""BVH export: joints -> BVH -> import-bvh reads the same joints back."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rvqfast.data.bvh import load_bvh, parse_bvh
from rvqfast.data.bvh_export import BVH_JOINT_NAMES, export_bvh, fit_skeleton, forward_kinematics, joints_to_bvh
from rvqfast.data.synthetic import generate_motion
from rvqfast.motion.features import features_to_joints, joints_to_features
from rvqfast.motion.skeleton import PARENTS

REPO = Path(__file__).resolve().parents[1]


def _random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(n, 3, 3)


@pytest.mark.parametrize("index", [0, 3, 7])
def test_roundtrip_within_1mm(tmp_path, index):
    joints = generate_motion(0, index).joints
    path = export_bvh(joints, tmp_path / "deep" / "m.bvh")
    back = load_bvh(path)
    assert back.shape == joints.shape
    assert np.abs(back - joints).max() < 1e-3
    # ... and through the dataset's own feature round trip (what the studio exports).
    j2 = features_to_joints(joints_to_features(joints))
    assert np.abs(load_bvh(export_bvh(j2, tmp_path / "f.bvh")) - j2).max() < 1e-3


def test_import_bvh_cli_path_reads_back_within_1mm(tmp_path):
    """``import-bvh`` retargets to the canonical skeleton and places the motion canonically; the
    dataset's motions already are, so the folder it writes holds the exported joints."""
    from rvqfast.data.bvh import import_bvh
    joints = generate_motion(0, 5).joints
    import_bvh([export_bvh(joints, tmp_path / "m.bvh")], tmp_path / "out")
    back = np.load(tmp_path / "out" / "new_joints" / "m.npy")
    assert back.shape[0] >= joints.shape[0] - 1
    assert np.abs(back - joints[: back.shape[0]]).max() < 1e-3


def test_skeleton_choice_for_other_proportions(tmp_path):
    """A rigid motion on a bigger body: exact with its own proportions; on the canonical rig the
    difference is reported."""
    joints = generate_motion(0, 2).joints
    big = joints[:, :1] + (joints - joints[:, :1]) * 1.15  # every bone 15% longer, same root path
    _, err_motion = joints_to_bvh(big, skeleton="motion")
    _, err_canon = joints_to_bvh(big, skeleton="canonical")
    assert err_motion < 1e-9 and err_canon > 0.02
    back = load_bvh(export_bvh(big, tmp_path / "big.bvh", skeleton="motion"))
    assert np.abs(back - big).max() < 1e-3
    with pytest.raises(ValueError, match="skeleton"):
        joints_to_bvh(big, skeleton="tall")


def test_arbitrary_rigid_motion_and_gimbal_cases():
    """A rigid skeleton in random (also near-gimbal) global orientations is reproduced exactly."""
    rng = np.random.default_rng(1)
    rest = generate_motion(0, 1).joints[0]
    t = 12
    rots = _random_rotations(rng, t)
    half = np.pi / 2  # pitch of exactly 90 deg: the ZYX decomposition's gimbal lock
    rots[0] = np.array([[np.cos(half), 0, np.sin(half)], [0, 1, 0], [-np.sin(half), 0, np.cos(half)]]) @ \
        np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    rots[1] = np.diag([-1.0, 1.0, -1.0])  # half turn: opposite bone directions in the swing
    joints = np.einsum("fij,kj->fki", rots, rest - rest[0]) + rng.normal(size=(t, 1, 3))
    text, err = joints_to_bvh(joints)
    assert err < 1e-9
    bvh = parse_bvh(text)
    assert bvh.names == [BVH_JOINT_NAMES[j] for j in _dfs()]
    from rvqfast.data.bvh import bvh_to_joints
    back = bvh_to_joints(bvh, scale=0.01)
    assert np.abs(back - joints).max() < 1e-4


def _dfs():
    from rvqfast.data.bvh_export import _dfs_order
    return _dfs_order()


def test_non_rigid_input_reports_deviation():
    joints = generate_motion(0, 2).joints.copy()
    joints[5:, 20] += 0.05  # stretch the left forearm from frame 5 on
    offsets, glob = fit_skeleton(joints)
    fk = forward_kinematics(joints[:, 0], offsets, glob)
    _, err = joints_to_bvh(joints)
    assert 0.01 < err < 0.06
    assert np.isclose(err, np.linalg.norm(fk - joints, axis=-1).max())
    # Bone lengths of the written skeleton are constant by construction.
    bones = np.linalg.norm(fk[:, 1:] - fk[:, PARENTS[1:]], axis=-1)
    assert np.ptp(bones, axis=0).max() < 1e-9


def test_standard_layout(tmp_path):
    text, _ = joints_to_bvh(generate_motion(0, 0).joints[:5])
    lines = text.splitlines()
    assert lines[0] == "HIERARCHY" and lines[1] == "ROOT Hips"
    assert "CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation" in lines[4]
    assert text.count("End Site") == 5 and text.count("JOINT ") == 21
    m = lines.index("MOTION")
    assert lines[m + 1] == "Frames: 5" and lines[m + 2] == "Frame Time: 0.05000000"
    assert all(len(r.split()) == 6 + 21 * 3 for r in lines[m + 3:])


def test_errors(tmp_path):
    j = generate_motion(0, 0).joints
    with pytest.raises(ValueError, match="path"):
        export_bvh(j, tmp_path / "m.txt")
    with pytest.raises(ValueError, match="joints"):
        export_bvh(j[:, :21], tmp_path / "m.bvh")
    with pytest.raises(ValueError, match="fps"):
        joints_to_bvh(j, fps=0)
    assert not list(tmp_path.iterdir())


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "rvqfast.data", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_export_bvh_joints_and_features(tmp_path):
    joints = generate_motion(0, 4).joints
    np.save(tmp_path / "j.npy", joints.astype(np.float32))
    feats = joints_to_features(joints).astype(np.float32)
    np.save(tmp_path / "f.npy", feats)
    r = _cli("export-bvh", str(tmp_path / "j.npy"), "--out", str(tmp_path / "out" / "j.bvh"))
    assert r.returncode == 0, r.stderr
    assert "centimetres" in r.stdout
    assert np.abs(load_bvh(tmp_path / "out" / "j.bvh") - joints).max() < 1e-3
    r = _cli("export-bvh", str(tmp_path / "f.npy"), "--out", str(tmp_path / "f.bvh"))
    assert r.returncode == 0, r.stderr
    assert np.abs(load_bvh(tmp_path / "f.bvh") - features_to_joints(feats)).max() < 1e-3
    big = joints[:, :1] + (joints - joints[:, :1]) * 1.15
    np.save(tmp_path / "big.npy", big)
    r = _cli("export-bvh", str(tmp_path / "big.npy"), "--out", str(tmp_path / "big.bvh"), "--keep-proportions")
    assert r.returncode == 0 and "own proportions" in r.stdout, r.stderr
    assert np.abs(load_bvh(tmp_path / "big.bvh") - big).max() < 1e-3
    np.save(tmp_path / "bad.npy", np.zeros((4, 7)))
    r = _cli("export-bvh", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "b.bvh"))
    assert r.returncode == 2 and "bad.npy" in r.stderr and "(T, 22, 3)" in r.stderr
    assert not (tmp_path / "b.bvh").exists()


def test_exported_from_rvqfast_data():
    import rvqfast.data
    assert rvqfast.data.export_bvh is export_bvh and "export_bvh" in rvqfast.data.__all__
