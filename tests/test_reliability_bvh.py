"""Issue 18 regressions: hostile BVH files end with a message naming the file (and line)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from rvqfast.data import HumanML3D
from rvqfast.data.__main__ import main as data_cli
from rvqfast.data.bvh import BVHError, load_bvh, parse_bvh
from rvqfast.motion.skeleton import JOINT_NAMES
from reliability_support import time_limit
from test_data_bvh import MIXAMO, _frames, write_bvh

TINY = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS {ch}
}
MOTION
Frames: {frames}
Frame Time: {ft}
{rows}
"""


def _tiny(ch="3 Xposition Yposition Zposition", frames="2", ft="0.05", rows="0 1 0\n0 1 0"):
    return (TINY.replace("{ch}", ch).replace("{frames}", frames).replace("{ft}", ft)
            .replace("{rows}", rows))


@pytest.fixture
def good(tmp_path):
    return write_bvh(tmp_path / "good.bvh", [MIXAMO[n] for n in JOINT_NAMES], _frames(12))


@pytest.mark.parametrize("ch", ["-2", "-1 Xposition", "2.5 Xposition Yposition", "nan", "inf", "1e3", "7"])
def test_bad_channel_count_is_an_error_naming_file_and_line(ch):
    # defect 1: 'CHANNELS -2' stepped the parser back onto the same token forever
    with time_limit(10), pytest.raises(BVHError, match=r"f\.bvh:5: CHANNELS count"):
        parse_bvh(_tiny(ch=ch), "f.bvh")


@pytest.mark.parametrize("frames,rows,match", [
    ("2", "0 1 0 0\n0 1 0", r"f\.bvh:10: frame 0 has 4 values"),           # extra value
    ("1", "0 1 0\n0 1 0", r"Frames: 1, but the MOTION block has 2 rows"),   # Frames too low
    ("3", "0 1 0\n0 1 0", r"Frames: 3, but the MOTION block has 2 rows"),
    ("1.5", "0 1 0\n0 1 0", r"f\.bvh:8: Frames: expected an integer"),       # fractional
    ("nan", "0 1 0", r"Frames: expected an integer"),
    ("inf", "0 1 0", r"Frames: expected an integer"),
    ("0", "", r"Frames is 0; the file holds no motion"),
    ("2", "0 1 0\n0 1e308 0", r"f\.bvh:11: frame 1 holds NaN, infinite or implausibly large"),
    ("2", "0 1 0\n0 nan 0", r"f\.bvh:11: frame 1 holds NaN"),
])
def test_motion_rows_are_checked_one_by_one(frames, rows, match):
    # defects 3, 5, 9, 10: misaligned rows, 1e308 values, nan/inf/fractional Frames, 0 frames
    with pytest.raises(BVHError, match=match):
        parse_bvh(_tiny(frames=frames, rows=rows), "f.bvh")


@pytest.mark.parametrize("ft", ["inf", "nan", "0", "-0.1", "1e9"])
def test_bad_frame_time(ft):
    with pytest.raises(BVHError, match=r"f\.bvh:9: "):
        parse_bvh(_tiny(ft=ft), "f.bvh")


def test_extra_value_no_longer_shifts_joints(good, tmp_path):
    # defect 3: one extra value in a row used to be accepted and every later frame shifted
    lines = good.read_text().splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("Frame Time")) + 1
    lines[first + 3] += " 0.0"
    bad = tmp_path / "bad.bvh"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(BVHError, match=rf"bad\.bvh:{first + 4}: frame 3 has 70 values"):
        load_bvh(bad)


@pytest.mark.parametrize("scale", ["abc", "-1", "0", "nan", "inf"])
def test_bad_scale_is_a_message(good, tmp_path, scale, capsys):
    # defect 9: --scale abc|-1|0|nan|inf raised a raw traceback
    rc = data_cli(["import-bvh", str(good), "--out", str(tmp_path / "o"), "--scale", scale])
    assert rc == 2
    err = capsys.readouterr().err
    assert "scale" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_vertical_skeleton_is_a_message_naming_the_file(good, tmp_path, capsys):
    # defect 9: every joint on one vertical line crashed in the feature conversion
    text = re.sub(r"OFFSET (\S+) (\S+) (\S+)", lambda m: f"OFFSET 0 {abs(float(m.group(2))) + 1} 0",
                  good.read_text())
    v = tmp_path / "vertical.bvh"
    v.write_text(text)
    rc = data_cli(["import-bvh", str(v), "--out", str(tmp_path / "o"), "--keep-proportions"])
    err = capsys.readouterr().err
    assert rc == 2 and "vertical.bvh" in err and "Traceback" not in err


def test_too_long_motion_is_refused(tmp_path):
    # defect 10: import-bvh accepted motions the loader (10,000 frames) then refuses
    p = write_bvh(tmp_path / "long.bvh", [MIXAMO[n] for n in JOINT_NAMES], _frames(51), frame_time=10)
    with pytest.raises(BVHError, match=r"long\.bvh: .*10001 frames at 20 fps.*at most 10000"):
        load_bvh(p)  # 500 s = 10001 frames at 20 fps
    p = write_bvh(tmp_path / "longer.bvh", [MIXAMO[n] for n in JOINT_NAMES], _frames(60), frame_time=10)
    with pytest.raises(BVHError, match=r"longer\.bvh:\d+: motion lasts 590.0 s .*at most 500 s"):
        load_bvh(p)  # refused from the header, before the rows are read


def test_caption_with_hash_and_newline_stays_one_caption(good, tmp_path):
    # defect 10: '#' or a newline in --caption corrupted the texts file
    out = tmp_path / "o"
    assert data_cli(["import-bvh", str(good), "--out", str(out), "--caption", "a # b\nc"]) == 0
    text = (out / "texts" / "good.txt").read_text()
    assert text.count("\n") == 1 and text.split("#")[0] == "a b c"
    ds = HumanML3D(out, "train", min_length=1)
    assert ds.captions == [["a b c"]]


def test_bvh_values_are_finite_in_the_dataset(good, tmp_path):
    out = tmp_path / "o"
    assert data_cli(["import-bvh", str(good), "--out", str(out)]) == 0
    for f in ["Mean.npy", "Std.npy", "new_joint_vecs/good.npy"]:
        assert np.isfinite(np.load(out / f)).all()


def test_debug_flag_shows_traceback(tmp_path):
    p = tmp_path / "x.bvh"
    p.write_text(_tiny(ch="-2"))
    with pytest.raises(BVHError):
        data_cli(["import-bvh", str(p), "--out", str(tmp_path / "o"), "--debug"])


def test_device_or_folder_instead_of_a_file_does_not_hang(tmp_path, capsys):
    # reading /dev/zero (or a FIFO) as a BVH or a --config would never end
    with time_limit(10):
        assert data_cli(["import-bvh", "/dev/zero", "--out", str(tmp_path / "o")]) == 2
        assert data_cli(["import-bvh", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "/dev/zero: unreadable (not a regular file)" in err and "Traceback" not in err
    from rvqfast.train.__main__ import main as train_cli
    with time_limit(10):
        assert train_cli(["--config", "/dev/zero", "--out", str(tmp_path / "r"), "--print-config"]) == 2
    assert "--config: /dev/zero" in capsys.readouterr().err
