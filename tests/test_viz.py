import imageio.v2 as imageio
import numpy as np
import pytest

from rvqfast.data.synthetic import generate_motion
from rvqfast.motion.posecodes import describe, posecode_indices
from rvqfast.viz import render_motion


def test_gif_frame_count(tmp_path):
    j = generate_motion(0, 1).joints[:12]
    phrases = [describe(posecode_indices(f))[:2] for f in j]
    p = render_motion([j, j + 0.01], tmp_path / "sub" / "m.gif", titles=["orig", "rec"],
                      caption="a person walks", phrases=phrases)
    frames = imageio.mimread(p)
    assert len(frames) == 12 and frames[0].ndim == 3
    assert p.read_bytes()[:6] in (b"GIF89a", b"GIF87a")


def test_max_frames_and_errors(tmp_path):
    j = generate_motion(0, 2).joints[:30]
    assert len(imageio.mimread(render_motion(j, tmp_path / "s.gif", max_frames=10))) == 10
    with pytest.raises(ValueError, match="joints"):
        render_motion(np.zeros((4, 21, 3)), tmp_path / "x.gif")
    with pytest.raises(ValueError, match="path"):
        render_motion(j, tmp_path / "x.png")
    with pytest.raises(ValueError, match="titles"):
        render_motion([j, j], tmp_path / "x.gif", titles=["one"])
