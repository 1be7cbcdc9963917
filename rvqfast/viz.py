"""Animated stick-figure rendering of motions (GIF, or MP4 when ffmpeg is available)."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from .motion.skeleton import FPS, JOINT_INDEX, KINEMATIC_CHAIN, NUM_JOINTS

_COLORS = ["#d62728", "#1f77b4", "#333333", "#ff7f0e", "#2ca02c"]
HEAD = JOINT_INDEX["head"]
# Margin (metres) around the motion's extent, and the smallest floor side shown.
_MARGIN, _MIN_SIDE = 0.25, 1.2
# matplotlib leaves room for axis labels around a 3-D box; without axes the box can be larger.
_ZOOM = 1.22


def _to_plot(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Motion (X left, Y up, Z forward) -> plot axes (X, -Z, Y): Y up drawn as the vertical axis,
    a proper rotation (no mirror image) so the subject's left stays on their left."""
    return p[..., 0], -p[..., 2], p[..., 1]


def _setup_panel(ax, m: np.ndarray, title: str | None, bounds: tuple[np.ndarray, np.ndarray] | None = None):
    """Fit one 3-D panel to the motion: equal scale, box = the motion's extent (or ``bounds``, the
    (lo, hi) corners shared by side-by-side panels) plus a margin, floor with a 0.5 m grid, root
    path, no axis furniture. Returns (chain lines, head marker)."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    lo, hi = bounds if bounds is not None else (m.min((0, 1)), m.max((0, 1)))
    centre = (lo + hi) / 2
    half = np.maximum((hi - lo)[[0, 2]] / 2 + _MARGIN, _MIN_SIDE / 2)
    x0, x1 = centre[0] - half[0], centre[0] + half[0]
    z0, z1 = centre[2] - half[1], centre[2] + half[1]
    top = max(float(hi[1]) + 0.1, 1.0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(-z1, -z0)
    ax.set_zlim(0, top)
    ax.set_box_aspect((x1 - x0, z1 - z0, top), zoom=_ZOOM)
    ax.set_axis_off()
    ax.computed_zorder = False  # draw floor, grid, path, body in this order, not by depth
    ax.view_init(elev=12, azim=-62)
    floor = Poly3DCollection([[(x0, -z0, 0), (x1, -z0, 0), (x1, -z1, 0), (x0, -z1, 0)]],
                             facecolor="#e9ecef", edgecolor="#adb5bd", linewidths=0.8, zorder=0)
    ax.add_collection3d(floor)
    for gx in np.arange(np.ceil(x0 / 0.5) * 0.5, x1, 0.5):
        ax.plot([gx, gx], [-z0, -z1], [0, 0], color="#ced4da", lw=0.5, zorder=1)
    for gz in np.arange(np.ceil(z0 / 0.5) * 0.5, z1, 0.5):
        ax.plot([x0, x1], [-gz, -gz], [0, 0], color="#ced4da", lw=0.5, zorder=1)
    # The root's path on the floor: where the figure came from and is going, at a glance.
    ax.plot(m[:, 0, 0], -m[:, 0, 2], np.full(len(m), 0.002), color="0.55", lw=1, zorder=2)
    if title is not None:
        ax.text2D(0.5, 0.98, title, transform=ax.transAxes, ha="center", va="top", fontsize=9)
    lines = [ax.plot([], [], [], color=_COLORS[c], lw=2, solid_capstyle="round", zorder=3)[0]
             for c in range(len(KINEMATIC_CHAIN))]
    head = ax.plot([], [], [], "o", color="#333333", markersize=9, markerfacecolor="#ffd8a8", zorder=4)[0]
    return lines, head


def render_motion(joints: np.ndarray | Sequence[np.ndarray], path: str | Path, *,
                  titles: Sequence[str] | None = None, caption: str | None = None,
                  phrases: Sequence[Sequence[str]] | None = None, fps: int = FPS,
                  max_frames: int = 200, size: float = 3.2) -> Path:
    """Render one motion (T, 22, 3) or several side by side (e.g. original vs reconstruction)
    as an animated stick figure. ``phrases`` gives per-frame text (e.g. pose-code phrases).
    Longer motions are subsampled to at most ``max_frames`` frames (the frame rate is lowered
    so the duration is kept). Returns the written path."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import imageio.v2 as imageio

    del matplotlib  # the Agg canvas is used directly; the global backend is left alone
    motions = [joints] if isinstance(joints, np.ndarray) else list(joints)
    if not motions:
        raise ValueError("joints: expected a (T, 22, 3) array or a non-empty list of them")
    for k, m in enumerate(motions):
        if not isinstance(m, np.ndarray) or m.ndim != 3 or m.shape[1:] != (NUM_JOINTS, 3):
            raise ValueError(f"joints[{k}]: expected shape (T, 22, 3), got {getattr(m, 'shape', type(m))}")
        if not np.isfinite(m).all():
            raise ValueError(f"joints[{k}]: contains NaN or infinite values")
    t_len = min(m.shape[0] for m in motions)
    if t_len < 1:
        raise ValueError("joints: expected at least one frame")
    if titles is not None and len(titles) != len(motions):
        raise ValueError(f"titles: expected {len(motions)} titles, got {len(titles)}")
    if phrases is not None and len(phrases) < t_len:
        raise ValueError(f"phrases: expected one list per frame ({t_len}), got {len(phrases)}")
    if not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps: expected a positive integer, got {fps!r}")
    if not isinstance(max_frames, int) or max_frames < 1:
        raise ValueError(f"max_frames: expected a positive integer, got {max_frames!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"path: expected a .gif or .mp4 file name, got {path.name!r}")
    if suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise RuntimeError("path: writing .mp4 needs ffmpeg on PATH; install it or use a .gif path")

    step = int(np.ceil(t_len / max_frames))
    frames_idx = np.arange(0, t_len, step)
    out_fps = max(fps / step, 1e-3)

    n = len(motions)
    text_h = 0.6 if (caption or phrases is not None) else 0.0
    fig = Figure(figsize=(size * n, size + text_h), dpi=90)
    # The top of a 3-D panel is empty (the box above the head); let it run under the caption band.
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1.0 - 0.3 * text_h / (size + text_h), wspace=0.0)
    canvas = FigureCanvasAgg(fig)
    artists = []
    # One box for all panels, so side-by-side motions are drawn at the same place and scale.
    bounds = (np.min([m[:t_len].min((0, 1)) for m in motions], 0), np.max([m[:t_len].max((0, 1)) for m in motions], 0))
    for k, m in enumerate(motions):
        ax = fig.add_subplot(1, n, k + 1, projection="3d")
        lines, head = _setup_panel(ax, m[:t_len], None if titles is None else str(titles[k]), bounds)
        artists.append((lines, head))
    if caption:
        fig.text(0.5, 0.98, "\n".join(textwrap.wrap(caption, 60 * n)), ha="center", va="top", fontsize=8)
    ptext = fig.text(0.01, 0.01, "", fontsize=7, va="bottom")
    counter = fig.text(0.99, 0.01, "", fontsize=7, ha="right", va="bottom")

    images = []
    for t in frames_idx:
        for m, (lines, head) in zip(motions, artists):
            for line, chain in zip(lines, KINEMATIC_CHAIN):
                line.set_data_3d(*_to_plot(m[t, chain]))
            head.set_data_3d(*_to_plot(m[t, [HEAD]]))
        if phrases is not None:
            ptext.set_text("\n".join(list(phrases[t])[:4]))
        counter.set_text(f"{t + 1}/{t_len}")  # also keeps consecutive GIF frames distinct
        canvas.draw()
        images.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())

    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        imageio.mimsave(path, images, duration=1000.0 / out_fps, loop=0)
    else:
        imageio.mimsave(path, images, fps=out_fps)
    return path
