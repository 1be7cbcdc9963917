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


def test_panel_fits_the_motion_marks_head_and_floor():
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from rvqfast.viz import _MARGIN, HEAD, _setup_panel

    j = generate_motion(0, 0).joints
    j = j + np.array([3.0, 0.0, -2.0])  # far from the origin: the view must follow the motion
    ax = Figure().add_subplot(projection="3d")
    lines, head = _setup_panel(ax, j, "t")
    lo, hi = j.min((0, 1)), j.max((0, 1))
    (x0, x1), (y0, y1), (z0, z1) = ax.get_xlim(), ax.get_ylim(), ax.get_zlim()
    assert x0 <= lo[0] - _MARGIN + 1e-9 and x1 >= hi[0] + _MARGIN - 1e-9
    assert y0 <= -hi[2] and y1 >= -lo[2]  # plot y is -Z (no mirror image)
    assert z0 == 0 and hi[1] < z1 < hi[1] + 0.2
    side = max(hi[0] - lo[0], hi[2] - lo[2]) + 2 * _MARGIN
    assert x1 - x0 <= max(side, 1.2) + 1e-9 and y1 - y0 <= max(side, 1.2) + 1e-9
    assert any(isinstance(c, Poly3DCollection) for c in ax.collections)  # the floor
    assert len(lines) == 5 and head.get_marker() == "o"
    assert HEAD == 15


def test_figure_fills_the_frame(tmp_path):
    j = generate_motion(0, 2).joints[:20]
    frame = imageio.mimread(render_motion(j, tmp_path / "m.gif"))[10][..., :3].astype(int)
    ink = np.argwhere((frame < 235).any(-1))  # anything that is not the white background
    h, w = frame.shape[:2]
    (r0, c0), (r1, c1) = ink.min(0), ink.max(0)
    assert (r1 - r0) > 0.8 * h and (c1 - c0) > 0.7 * w
    # The head marker's fill colour is drawn.
    head = (np.abs(frame - np.array([0xff, 0xd8, 0xa8])).sum(-1) < 40).sum()
    assert head > 10


def test_side_by_side_panels_share_one_box(tmp_path, monkeypatch):
    import rvqfast.viz as viz
    seen = []
    real = viz._setup_panel

    def spy(ax, m, title, bounds=None):
        out = real(ax, m, title, bounds)
        seen.append((ax.get_xlim(), ax.get_ylim(), ax.get_zlim()))
        return out

    monkeypatch.setattr(viz, "_setup_panel", spy)
    j = generate_motion(0, 1).joints[:8]
    viz.render_motion([j, j + np.array([2.0, 0.0, 0.0])], tmp_path / "m.gif")
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0][0][1] >= j[..., 0].max() + 2.0  # the shifted motion fits in both
