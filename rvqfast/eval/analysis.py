"""Direction-similarity analysis of a tokenizer's pose-code embeddings.

``python -m rvqfast.analyze RUN --out DIR`` writes:

* ``embedding_cosine.png`` / ``slot_centroid_cosine.png``: pairwise cosine similarity of the
  392 pose-code embeddings and of the 70 per-slot centroids, each set mean-centred and
  L2-normalised first (centring removes the shared offset every embedding carries, which would
  otherwise make all cosines look alike);
* ``edit_direction_cosine.png``: pairwise cosine similarity of the *edit directions*: for every
  code that differs from the baseline pose's category in its slot, the change in the pose
  latent (which is ``e_code - e_baseline``) and the change in the decoded motion
  (pelvis-relative joint positions, averaged over frames) when that code is switched on in a
  constant baseline pose;
* an additivity check: for random pairs of codes in different slots, how far switching both
  on departs from the sum of switching each on (0 = the codes act independently);
* ``analysis.json`` with all summary numbers and ``analysis.md``, a short summary.

Statistics: mean |cos| over pairs within one slot vs pairs from different slots.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from .._cli import cli_entry

import numpy as np
import torch

from .._io import atomic_savefig, atomic_write_json, atomic_write_text
from ..motion.posecodes import (NUM_CATEGORIES, NUM_SLOTS, POSECODE_CATEGORIES,
                               SLOT_OFFSETS, SLOT_SIZES, posecode_indices)

__all__ = ["cosine_matrix", "within_across", "embedding_similarity", "edit_directions",
           "analyze", "main"]

CATEGORY_SLOT = np.repeat(np.arange(NUM_SLOTS), SLOT_SIZES)


def cosine_matrix(vectors: np.ndarray, *, center: bool = True) -> np.ndarray:
    """Pairwise cosine similarity (N, N) of rows, optionally mean-centred first (float64).

    Zero rows (after centring) get similarity 0 with everything, including themselves.
    """
    v = np.asarray(vectors, np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"vectors: expected (N>=2, D), got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("vectors: contains NaN or infinite values")
    if center:
        v = v - v.mean(0, keepdims=True)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    u = np.divide(v, n, out=np.zeros_like(v), where=n > 1e-12)
    return np.clip(u @ u.T, -1.0, 1.0)


def within_across(cos: np.ndarray, groups: np.ndarray) -> dict:
    """Mean |cos| over off-diagonal pairs within a group and across groups."""
    g = np.asarray(groups)
    same = g[:, None] == g[None, :]
    off = ~np.eye(len(g), dtype=bool)
    a = np.abs(cos)
    w, x = a[same & off], a[~same]
    return {"mean_abs_cos_within_slot": float(w.mean()) if w.size else None,
            "mean_abs_cos_across_slots": float(x.mean()) if x.size else None,
            "pairs_within": int(w.size), "pairs_across": int(x.size)}


def embedding_similarity(embedding: np.ndarray) -> dict:
    """Cosine matrices of the (392, D) embeddings and of the (70, D) slot centroids + stats."""
    e = np.asarray(embedding, np.float64)
    if e.shape[0] != NUM_CATEGORIES:
        raise ValueError(f"embedding: expected {NUM_CATEGORIES} rows, got {e.shape}")
    cos = cosine_matrix(e)
    centroids = np.stack([e[o:o + s].mean(0) for o, s in zip(SLOT_OFFSETS, SLOT_SIZES)])
    cos_c = cosine_matrix(centroids)
    off = ~np.eye(NUM_SLOTS, dtype=bool)
    return {"cos": cos, "centroid_cos": cos_c,
            "stats": {**within_across(cos, CATEGORY_SLOT),
                      "centroid_mean_abs_cos": float(np.abs(cos_c[off]).mean())}}


def _baseline_categories() -> np.ndarray:
    from ..motion.skeleton import rest_pose
    return posecode_indices(torch.from_numpy(rest_pose()[None]).float())[0].numpy()


@torch.no_grad()
def edit_directions(tokenizer, *, latent_frames: int = 4, pairs: int = 200, seed: int = 0,
                    baseline: np.ndarray | None = None, chunk: int = 64) -> dict:
    """Latent and decoded-motion change for switching each code on against a baseline pose.

    The baseline is a constant pose over ``latent_frames`` latent frames (default categories:
    the skeleton's rest pose); decoding uses the pose codes alone (no residual). Returns the
    directions of the codes that differ from the baseline, their cosine matrices and the
    additivity error over ``pairs`` random cross-slot pairs.
    """
    from ..motion.features import features_to_joints

    tok = tokenizer
    if getattr(tok, "posecode_embedding", None) is None:
        raise ValueError(f"tokenizer: model {tok.config.model!r} has no pose-code embedding to analyse")
    base = _baseline_categories() if baseline is None else np.asarray(baseline, np.int64)
    if base.shape != (NUM_SLOTS,):
        raise ValueError(f"baseline: expected ({NUM_SLOTS},) local categories, got {base.shape}")
    codes = [c for c in range(NUM_CATEGORIES)
             if base[CATEGORY_SLOT[c]] != c - SLOT_OFFSETS[CATEGORY_SLOT[c]]]
    rng = np.random.default_rng(seed)
    pair_list = []
    while len(pair_list) < pairs:
        a, b = rng.choice(codes, 2, replace=False)
        if CATEGORY_SLOT[a] != CATEGORY_SLOT[b]:
            pair_list.append((int(a), int(b)))

    def cats_with(on: list[int]) -> np.ndarray:
        c = base.copy()
        for code in on:
            s = CATEGORY_SLOT[code]
            c[s] = code - SLOT_OFFSETS[s]
        return c

    settings = [cats_with([])] + [cats_with([c]) for c in codes] + [cats_with(list(p)) for p in pair_list]
    cats = torch.from_numpy(np.stack(settings)).to(torch.int64)
    cats = cats[:, None, :].expand(-1, latent_frames, -1).contiguous()
    dev = tok.mean.device
    q = tok.num_quantizers
    motion = []
    for s in range(0, cats.shape[0], chunk):
        c = cats[s:s + chunk].to(dev)
        idx = torch.full((c.shape[0], latent_frames, q), -1, dtype=torch.int64, device=dev)
        j = features_to_joints(tok.decode(c, idx, 0 if q else None)).cpu().numpy()
        motion.append((j - j[:, :, :1]).mean(1).reshape(j.shape[0], -1))  # pelvis-relative
    motion = np.concatenate(motion).astype(np.float64)
    lat = tok.pose_latent(cats[:, :1].to(dev))[:, 0].cpu().numpy().astype(np.float64)
    n = len(codes)
    d_lat = lat[1:1 + n] - lat[0]
    d_mot = motion[1:1 + n] - motion[0]
    pair_mot = motion[1 + n:] - motion[0]
    pos = {c: i for i, c in enumerate(codes)}
    add_err = []
    for (a, b), both in zip(pair_list, pair_mot):
        s = d_mot[pos[a]] + d_mot[pos[b]]
        denom = np.linalg.norm(d_mot[pos[a]]) + np.linalg.norm(d_mot[pos[b]])
        add_err.append(np.linalg.norm(both - s) / max(denom, 1e-12))
    cos_lat = cosine_matrix(d_lat, center=False)
    cos_mot = cosine_matrix(d_mot, center=False)
    groups = CATEGORY_SLOT[codes]
    iu = np.triu_indices(n, 1)
    corr = float(np.corrcoef(cos_lat[iu], cos_mot[iu])[0, 1]) if n > 2 else None
    return {
        "codes": codes, "latent": d_lat, "motion": d_mot, "cos_latent": cos_lat, "cos_motion": cos_mot,
        "stats": {
            "codes_switched": n, "baseline_categories": base.tolist(),
            "latent": within_across(cos_lat, groups), "motion": within_across(cos_mot, groups),
            "latent_vs_motion_cos_correlation": corr,
            "motion_change_mm_median": float(np.median(np.linalg.norm(d_mot.reshape(n, -1, 3), axis=-1).mean(1)) * 1000),
            "additivity_error_median": float(np.median(add_err)) if add_err else None,
            "additivity_error_mean": float(np.mean(add_err)) if add_err else None,
            "additivity_pairs": len(add_err),
        },
    }


def _heatmap(path: Path, mat: np.ndarray, title: str, boundaries: list[int] | None = None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    for b in boundaries or []:
        ax.axhline(b - 0.5, color="k", lw=0.2, alpha=0.5)
        ax.axvline(b - 0.5, color="k", lw=0.2, alpha=0.5)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine")
    fig.tight_layout()
    atomic_savefig(path, fig, bbox_inches="tight")


def _slot_boundaries(groups: np.ndarray) -> list[int]:
    return [i for i in range(1, len(groups)) if groups[i] != groups[i - 1]]


def analyze(run: str | Path, out: str | Path, *, pairs: int = 200, seed: int = 0,
            device: str = "cpu", tokenizer=None) -> dict:
    """Run the analysis on a tokenizer run folder (or a given ``tokenizer``); write into out."""
    from ..models.tokenizer import MotionTokenizer

    tok = tokenizer if tokenizer is not None else MotionTokenizer.load(run, device=device)
    tok.eval()
    if getattr(tok, "posecode_embedding", None) is None:
        raise ValueError(f"run: model {tok.config.model!r} has no pose-code embedding; "
                         "analyse a 'posecode' or 'posecode_rvq' run")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    emb = tok.posecode_embedding.detach().cpu().numpy()
    sim = embedding_similarity(emb)
    dirs = edit_directions(tok, pairs=pairs, seed=seed)
    groups = CATEGORY_SLOT[dirs["codes"]]
    from .report import NO_PLOTS, _have_matplotlib
    plots = _have_matplotlib()
    if not plots:
        print(f"[analyze] {NO_PLOTS.replace('the report without stages.png and the GIF', 'no heatmaps')}")
    else:
        _heatmaps(out, sim, dirs, groups)
    # The most similar cross-slot motion directions: candidates for entangled codes.
    cm = np.abs(dirs["cos_motion"]).copy()
    cm[groups[:, None] == groups[None, :]] = 0
    iu = np.triu_indices(len(groups), 1)
    top = np.argsort(-cm[iu])[:10]
    codes = dirs["codes"]
    entangled = [{"a": "=".join(POSECODE_CATEGORIES[codes[iu[0][k]]]),
                  "b": "=".join(POSECODE_CATEGORIES[codes[iu[1][k]]]),
                  "cos_motion": float(dirs["cos_motion"][iu[0][k], iu[1][k]])} for k in top]
    from .report import portable_path
    result = {"run": portable_path(run, out) if run else None, "model": tok.config.model,
              "embedding": sim["stats"], "edit_directions": dirs["stats"],
              "most_similar_cross_slot_motion_directions": entangled, "heatmaps": plots}
    atomic_write_json(out / "analysis.json", result)
    _write_summary(out / "analysis.md", result)
    return result


def _heatmaps(out: Path, sim: dict, dirs: dict, groups: np.ndarray) -> None:
    """The four cosine heatmaps (needs matplotlib)."""
    _heatmap(out / "embedding_cosine.png", sim["cos"],
             "pose-code embeddings (392, centred + normalised); lines = slots",
             _slot_boundaries(CATEGORY_SLOT))
    _heatmap(out / "slot_centroid_cosine.png", sim["centroid_cos"], "per-slot centroids (70)")
    _heatmap(out / "edit_direction_cosine.png", dirs["cos_motion"],
             f"edit directions in decoded motion ({len(dirs['codes'])} codes vs rest pose)",
             _slot_boundaries(groups))
    _heatmap(out / "edit_direction_latent_cosine.png", dirs["cos_latent"],
             "edit directions in the pose latent", _slot_boundaries(groups))


def _write_summary(path: Path, r: dict) -> None:
    e, d = r["embedding"], r["edit_directions"]

    def f(v, p=3):
        return "-" if v is None else f"{v:.{p}f}"

    lines = [
        f"# Pose-code direction similarity ({r['model']})", "",
        f"Run: `{r['run']}`", "",
        "| | mean abs cos within a slot | across slots |", "|---|---|---|",
        f"| embeddings (392, centred) | {f(e['mean_abs_cos_within_slot'])} | {f(e['mean_abs_cos_across_slots'])} |",
        f"| edit directions, pose latent | {f(d['latent']['mean_abs_cos_within_slot'])} | "
        f"{f(d['latent']['mean_abs_cos_across_slots'])} |",
        f"| edit directions, decoded motion | {f(d['motion']['mean_abs_cos_within_slot'])} | "
        f"{f(d['motion']['mean_abs_cos_across_slots'])} |", "",
        f"- Slot centroids (70, centred): mean abs cos {f(e['centroid_mean_abs_cos'])}.",
        f"- {d['codes_switched']} codes switched on against the rest pose; median mean joint "
        f"displacement {f(d['motion_change_mm_median'], 1)} mm.",
        f"- Correlation between latent and motion direction similarities: "
        f"{f(d['latent_vs_motion_cos_correlation'])}.",
        f"- Additivity error over {d['additivity_pairs']} cross-slot pairs "
        f"(|Δ(a+b) − Δa − Δb| / (|Δa| + |Δb|); 0 = independent): median "
        f"{f(d['additivity_error_median'])}, mean {f(d['additivity_error_mean'])}.", "",
        "Most similar cross-slot motion directions:", "",
    ]
    for p in r["most_similar_cross_slot_motion_directions"][:5]:
        lines.append(f"- `{p['a']}` vs `{p['b']}`: cos {p['cos_motion']:+.3f}")
    lines += ["", "Heatmaps: embedding_cosine.png, slot_centroid_cosine.png, "
              "edit_direction_cosine.png, edit_direction_latent_cosine.png." if r.get("heatmaps", True)
              else "Heatmaps: not drawn (matplotlib is not installed; pip install 'rvqfast[viz]').", ""]
    atomic_write_text(path, "\n".join(lines))


@cli_entry("rvqfast.analyze")  # --debug: traceback instead of a one-line message
def main(argv: list[str] | None = None) -> int:
    """Entry of ``python -m rvqfast.analyze``."""
    ap = argparse.ArgumentParser(prog="python -m rvqfast.analyze",
                                 description="Direction-similarity analysis of pose-code embeddings.")
    ap.add_argument("run", help="tokenizer run folder (posecode or posecode_rvq)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--pairs", type=int, default=200, help="code pairs for the additivity check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    analyze(args.run, args.out, pairs=args.pairs, seed=args.seed, device=args.device)
    print((Path(args.out) / "analysis.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
