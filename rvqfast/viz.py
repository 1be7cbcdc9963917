"""Animated stick-figure rendering of motions (GIF, or MP4 when ffmpeg is available)."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from .motion.skeleton import FPS, KINEMATIC_CHAIN, NUM_JOINTS

_COLORS = ["#d62728", "#1f77b4", "#333333", "#ff7f0e", "#2ca02c"]


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
    text_h = 0.9 if (caption or phrases is not None) else 0.0
    fig = Figure(figsize=(size * n, size + text_h), dpi=90)
    # 3-D axes keep wide default margins; the panels are what the viewer wants to see.
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.02, top=1.0 - 0.9 * text_h / (size + text_h), wspace=0.0)
    canvas = FigureCanvasAgg(fig)
    axes, artists = [], []
    for k, m in enumerate(motions):
        ax = fig.add_subplot(1, n, k + 1, projection="3d")
        lo, hi = m[:t_len].min((0, 1)), m[:t_len].max((0, 1))
        centre = (lo + hi) / 2
        r = max(float((hi - lo)[[0, 2]].max()) / 2, 1.0)
        ax.set_xlim(centre[0] - r, centre[0] + r)
        ax.set_ylim(centre[2] - r, centre[2] + r)
        ax.set_zlim(0, max(2.0, float(hi[1])))
        ax.view_init(elev=15, azim=-60)
        # The root's path on the floor: where the figure came from and is going, at a glance.
        ax.plot(m[:t_len, 0, 0], m[:t_len, 0, 2], np.zeros(t_len), color="0.65", lw=1)
        ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=9)
        lines = [ax.plot([], [], [], color=_COLORS[c], lw=2)[0] for c in range(len(KINEMATIC_CHAIN))]
        axes.append(ax)
        artists.append(lines)
    if caption:
        fig.text(0.5, 0.98, "\n".join(textwrap.wrap(caption, 60 * n)), ha="center", va="top", fontsize=8)
    ptext = fig.text(0.01, 0.01, "", fontsize=7, va="bottom")
    counter = fig.text(0.99, 0.01, "", fontsize=7, ha="right", va="bottom")

    images = []
    for t in frames_idx:
        for m, lines in zip(motions, artists):
            for line, chain in zip(lines, KINEMATIC_CHAIN):
                pts = m[t, chain]
                line.set_data_3d(pts[:, 0], pts[:, 2], pts[:, 1])  # plot Y-up as z
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
