"""Evaluate tokenizer runs on a test split and write a report folder.

Protocol (the T2M reconstruction protocol, adapted to reconstruction of whole test motions):

* every test motion is cropped to a multiple of 4 frames and reconstructed at full length
  (``encode`` then ``decode``; motions of equal length share a batch, so no padding touches
  the tokenizer);
* each motion's captions, ground-truth and reconstructed motions are embedded once by the
  evaluator;
* each repeat ``r`` draws (seeded by ``(seed, r)``) a permutation of the motions and one
  caption per motion; the motions are cut into batches of 32 (the incomplete last batch is
  dropped, as the T2M loaders do) and R-precision, MM-Dist, FID (reconstructed vs ground
  truth over the same motions) and Diversity (``min(300, N)`` pairs) are computed. Every run
  sees the same permutations and captions, so differences between runs are paired.
* joint errors (MPJPE, PA-MPJPE, acceleration) compare joints recovered from the
  reconstructed and the ground-truth features (frame-weighted over the split). Global MPJPE
  includes the drift of the integrated root trajectory over the whole motion, so a
  pelvis-relative MPJPE is reported next to it.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_savefig, atomic_write_json, atomic_write_text
from . import metrics as M
from .evaluator import T2MEvaluator, caption_texts, tagged_captions

__all__ = ["EvalSet", "load_eval_set", "reconstruct", "embedding_metrics", "joint_metrics",
           "evaluate_runs"]


@dataclass
class EvalSet:
    """Test motions (RAW features, cropped to a multiple of 4) with their captions."""

    names: list[str]
    features: list[np.ndarray]
    captions: list[list[str]]
    root: Path
    split: str
    _gt_joints: list[np.ndarray] | None = field(default=None, repr=False)

    def gt_joints(self) -> list[np.ndarray]:
        from ..motion.features import features_to_joints
        if self._gt_joints is None:
            self._gt_joints = [np.asarray(features_to_joints(f), np.float64) for f in self.features]
        return self._gt_joints


def load_eval_set(data: str | Path = "default", split: str = "test", limit: int | None = None) -> EvalSet:
    """Full-length sequences of ``split`` via :func:`rvqfast.data.eval_batches` (RAW features)."""
    from ..data import HumanML3D, eval_batches, resolve_dataset

    root = resolve_dataset(str(data))
    ds = HumanML3D(root, split)
    caps_by_name = dict(zip(ds.names, tagged_captions(ds)))
    names, feats, caps = [], [], []
    for batch in eval_batches(ds, 64, unit=4):
        for k, name in enumerate(batch["names"]):
            c = caption_texts(caps_by_name[name])
            if not c:
                continue
            n = int(batch["lengths"][k])
            raw = ds.denormalize(batch["features"][k, :n].numpy())
            names.append(name)
            feats.append(np.ascontiguousarray(raw, dtype=np.float32))
            caps.append(c)
            if limit is not None and len(names) >= limit:
                return EvalSet(names, feats, caps, Path(root), split)
    if not names:
        raise ValueError(f"data: split {split!r} of {root} has no usable motions")
    return EvalSet(names, feats, caps, Path(root), split)


@torch.no_grad()
def reconstruct(tokenizer, features: list[np.ndarray], n_quantizers_list: list[int | None],
                chunk: int = 64) -> tuple[dict, np.ndarray, np.ndarray]:
    """Encode every motion once, decode with each ``n_quantizers`` setting.

    Returns ({n: list of RAW reconstructions}, all residual indices (sum_T/4, Q),
    all pose-code categories (sum_T/4, 70)).
    """
    by_len: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        if f.shape[0] % 4 or f.shape[0] == 0:
            raise ValueError(f"features[{i}]: length {f.shape[0]} is not a positive multiple of 4")
        by_len.setdefault(f.shape[0], []).append(i)
    out = {n: [None] * len(features) for n in n_quantizers_list}
    all_idx, all_cat = [None] * len(features), [None] * len(features)
    dev = tokenizer.mean.device
    for _, ids in sorted(by_len.items()):
        for s in range(0, len(ids), chunk):
            part = ids[s:s + chunk]
            x = torch.from_numpy(np.stack([features[i] for i in part])).to(dev)
            cats, idx = tokenizer.encode(x)
            for k, i in enumerate(part):
                all_idx[i] = idx[k].cpu().numpy()
                all_cat[i] = cats[k].cpu().numpy()
            for n in n_quantizers_list:
                y = tokenizer.decode(cats, idx, n).cpu().numpy()
                for k, i in enumerate(part):
                    out[n][i] = y[k]
    return out, np.concatenate(all_idx), np.concatenate(all_cat)


def _embed_motions(ev: T2MEvaluator, feats: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    from .evaluator import _batch
    res = []
    with torch.no_grad():
        for i in range(0, len(feats), batch_size):
            x, n = _batch(feats[i:i + batch_size])
            res.append(ev.encode_motion(x, n).cpu().numpy())
    return np.concatenate(res).astype(np.float64)


def _embed_texts(ev: T2MEvaluator, captions: list[list[str]], batch_size: int = 64) -> list[np.ndarray]:
    flat = [c for caps in captions for c in caps]
    embs = []
    with torch.no_grad():
        for i in range(0, len(flat), batch_size):
            embs.append(ev.encode_text(flat[i:i + batch_size]).cpu().numpy())
    e = np.concatenate(embs).astype(np.float64)
    out, k = [], 0
    for caps in captions:
        out.append(e[k:k + len(caps)])
        k += len(caps)
    return out


def embedding_metrics(gt_emb: np.ndarray, emb: np.ndarray | None, text_embs: list[np.ndarray], *,
                      repeats: int = 20, seed: int = 0, batch_size: int = 32,
                      diversity_times: int = 300) -> dict:
    """FID / R-precision / MM-Dist / Diversity as mean ± 95% over repeats.

    ``emb=None`` evaluates the ground truth itself (no FID).
    """
    n = gt_emb.shape[0]
    if n < batch_size:
        raise ValueError(f"gt_emb: need at least batch_size={batch_size} motions, got {n}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected a positive int, got {repeats!r}")
    m_all = gt_emb if emb is None else emb
    vals: dict[str, list] = {"fid": [], "top1": [], "top2": [], "top3": [], "mm_dist": [], "diversity": []}
    used = n // batch_size * batch_size
    div_times = min(diversity_times, used)
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        use = rng.permutation(n)[:used]
        choice = [int(rng.integers(len(text_embs[i]))) for i in use]
        t = np.stack([text_embs[i][c] for i, c in zip(use, choice)])
        m = m_all[use]
        top = M.r_precision(t, m, 3, batch_size)
        vals["top1"].append(top[0])
        vals["top2"].append(top[1])
        vals["top3"].append(top[2])
        vals["mm_dist"].append(M.mm_dist(t, m))
        vals["diversity"].append(M.diversity(m, div_times, seed=int(rng.integers(2**31))))
        if emb is not None:
            vals["fid"].append(M.fid(gt_emb[use], m))
    out = {k: M.mean_conf(v).to_dict() for k, v in vals.items() if v}
    out["motions_per_repeat"] = used
    out["diversity_pairs"] = div_times
    return out


def joint_metrics(pred_feats: list[np.ndarray], gt_joints: list[np.ndarray]) -> dict:
    """MPJPE / PA-MPJPE / acceleration error (mm), frame-weighted over all motions."""
    from ..motion.features import features_to_joints
    errs = {"mpjpe_mm": 0.0, "mpjpe_root_rel_mm": 0.0, "pa_mpjpe_mm": 0.0, "accel_mm_per_frame2": 0.0}
    frames = accel_frames = 0
    for f, gt in zip(pred_feats, gt_joints):
        pj = np.asarray(features_to_joints(f), np.float64)
        t = gt.shape[0]
        errs["mpjpe_mm"] += M.mpjpe(pj, gt) * t
        # Global MPJPE includes the drift of the integrated root trajectory; the pelvis-relative
        # one isolates the pose.
        errs["mpjpe_root_rel_mm"] += M.mpjpe(pj - pj[:, :1], gt - gt[:, :1]) * t
        errs["pa_mpjpe_mm"] += M.pa_mpjpe(pj, gt) * t
        frames += t
        if t >= 3:
            errs["accel_mm_per_frame2"] += M.accel_error(pj, gt) * (t - 2)
            accel_frames += t - 2
    errs["mpjpe_mm"] /= frames
    errs["mpjpe_root_rel_mm"] /= frames
    errs["pa_mpjpe_mm"] /= frames
    errs["accel_mm_per_frame2"] /= max(accel_frames, 1)
    return errs


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


NO_PLOTS = ("matplotlib is not installed: writing the report without stages.png and the GIF "
            "(pip install 'rvqfast[viz]' for them)")


def _have_matplotlib() -> bool:
    import importlib.util
    return importlib.util.find_spec("matplotlib") is not None


_PATH_KEYS = ("path", "data", "checkpoint", "glove_dir", "root")


def portable_path(path: str | Path, base: str | Path) -> str:
    """A path as written into a report: relative to the report folder ``base`` when it is
    nearby (at most three levels up), else only its name, so reports carry no absolute
    paths of the machine that wrote them."""
    p = Path(path).resolve()
    try:
        rel = os.path.relpath(p, Path(base).resolve())
    except ValueError:  # another drive (Windows)
        return p.name
    return rel if not rel.startswith("../../../../") and not os.path.isabs(rel) else p.name


def portable_provenance(prov: dict, base: str | Path) -> dict:
    """``prov`` with every path-valued entry (path, data, checkpoint, glove_dir) made portable."""
    out = dict(prov)
    for k in _PATH_KEYS:
        v = out.get(k)
        if isinstance(v, str) and v and (Path(v).is_absolute() or os.sep in v):
            out[k] = portable_path(v, base)
    return out


def _fmt(m: dict | None, key: str, digits: int = 3) -> str:
    if m is None or key not in m:
        return "-"
    v = m[key]
    return f"{v['mean']:.{digits}f} ± {v['conf95']:.{digits}f}"


def _write_markdown(path: Path, result: dict) -> None:
    ev = result["evaluator"]
    lines = ["# rvqfast reconstruction report", ""]
    lines.append(f"Data: `{result['data']['root']}` split `{result['data']['split']}`, "
                 f"{result['data']['motions']} motions; {result['repeats']} repeats "
                 f"(mean ± 95% confidence), batches of 32, diversity over "
                 f"{result['ground_truth']['diversity_pairs']} pairs.")
    lines.append("")
    kind = ev.get("kind", "?")
    what = ("the **official T2M evaluator**" if kind == "official"
            else "an evaluator **trained by rvqfast** (T2M architecture) on "
                 f"`{ev.get('data', '?')}` — numbers are comparable only with other numbers "
                 "from this same evaluator, not with published tables" if kind == "trained"
            else f"an evaluator of kind `{kind}`")
    lines.append(f"Evaluator: {what}. Path `{ev.get('path', ev.get('checkpoint', '?'))}`, "
                 f"weights sha256 `{ev.get('weights_sha256', ev.get('checkpoint_sha256', '?'))}`.")
    lines.append("")
    lines.append("| Run | model | FID ↓ | Top-1 ↑ | Top-2 ↑ | Top-3 ↑ | MM-Dist ↓ | Diversity → | "
                 "MPJPE mm ↓ | root-rel. MPJPE mm ↓ | PA-MPJPE mm ↓ | Accel mm/f² ↓ |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    gt = result["ground_truth"]
    lines.append(f"| ground truth | - | - | {_fmt(gt, 'top1')} | {_fmt(gt, 'top2')} | {_fmt(gt, 'top3')} | "
                 f"{_fmt(gt, 'mm_dist')} | {_fmt(gt, 'diversity')} | - | - | - | - |")
    for run in result["runs"]:
        e, j = run["embedding"], run["joints"]
        lines.append(f"| {run['name']} | {run['model']} | {_fmt(e, 'fid')} | {_fmt(e, 'top1')} | "
                     f"{_fmt(e, 'top2')} | {_fmt(e, 'top3')} | {_fmt(e, 'mm_dist')} | "
                     f"{_fmt(e, 'diversity')} | {j['mpjpe_mm']:.1f} | {j['mpjpe_root_rel_mm']:.1f} | {j['pa_mpjpe_mm']:.1f} | "
                     f"{j['accel_mm_per_frame2']:.2f} |")
    lines.append("")
    for run in result["runs"]:
        if run["codebooks"]:
            st = ", ".join(f"{s['usage'] * 100:.0f}% / {s['perplexity']:.0f}" for s in run["codebooks"])
            lines.append(f"- `{run['name']}` residual codebooks, usage / perplexity per stage: {st}")
        if run.get("posecodes"):
            p = run["posecodes"]
            lines.append(f"- `{run['name']}` pose codes: {p['categories_used']} of 392 categories used")
    sweeps = [r for r in result["runs"] if r.get("stage_sweep")]
    if sweeps:
        lines += ["", "## Residual stages used at decode", "",
                  "| Run | stages | FID ↓ | Top-1 ↑ | MPJPE mm ↓ | root-rel. MPJPE mm ↓ |",
                  "|---|---|---|---|---|---|"]
        for run in sweeps:
            for s in run["stage_sweep"]:
                lines.append(f"| {run['name']} | {s['n_quantizers']} | {_fmt(s['embedding'], 'fid')} | "
                             f"{_fmt(s['embedding'], 'top1')} | {s['joints']['mpjpe_mm']:.1f} | "
                             f"{s['joints']['mpjpe_root_rel_mm']:.1f} |")
        lines += ["", "![FID and MPJPE against stages](stages.png)"]
    if result.get("gif"):
        lines += ["", f"Side-by-side reconstruction of `{result['gif']['motion']}`: "
                      f"[{result['gif']['file']}]({result['gif']['file']})"]
    elif result.get("gif_skipped"):
        lines += ["", f"GIF skipped: {result['gif_skipped']}"]
    lines += ["", f"Generated by `python -m rvqfast.evaluate` in {result['seconds']:.0f} s.", ""]
    atomic_write_text(path, "\n".join(lines))


def _plot_stages(path: Path, runs: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for run in runs:
        sw = run["stage_sweep"]
        q = [s["n_quantizers"] for s in sw]
        fid = [s["embedding"]["fid"]["mean"] for s in sw]
        conf = [s["embedding"]["fid"]["conf95"] for s in sw]
        ax1.errorbar(q, fid, yerr=conf, marker="o", capsize=3, label=f"{run['name']} ({run['model']})")
        line = ax2.plot(q, [s["joints"]["mpjpe_mm"] for s in sw], marker="o", label=f"{run['name']} global")[0]
        ax2.plot(q, [s["joints"]["mpjpe_root_rel_mm"] for s in sw], marker="s", ls="--",
                 color=line.get_color(), label=f"{run['name']} root-relative")
    all_fid = [s["embedding"]["fid"]["mean"] for r in runs for s in r["stage_sweep"]]
    if min(all_fid) > 0 and max(all_fid) / min(all_fid) > 100:
        ax1.set_yscale("log")  # the first stages can cut FID by orders of magnitude
    ax1.set_xlabel("residual stages used at decode")
    ax1.set_ylabel("FID")
    stages = sorted({s["n_quantizers"] for r in runs for s in r["stage_sweep"]})
    ax1.set_xticks(stages)
    ax2.set_xticks(stages)
    ax2.set_xlabel("residual stages used at decode")
    ax2.set_ylabel("MPJPE (mm)")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(path, fig)


def evaluate_runs(runs: list[str | Path], evaluator: T2MEvaluator, out: str | Path, *,
                  data: str | Path = "default", split: str = "test", repeats: int = 20,
                  seed: int = 0, limit: int | None = None, gif: bool = True,
                  stage_sweep: bool = True, device: str = "cpu", progress: bool = True,
                  eval_set: EvalSet | None = None, gif_frames: int = 120) -> dict:
    """Evaluate tokenizer run folders; write ``report.md``, ``report.json``, ``stages.png``
    and ``reconstruction.gif`` into ``out``. Returns the JSON-able result."""
    from ..models.tokenizer import MotionTokenizer

    t0 = time.time()
    if not runs:
        raise ValueError("runs: give at least one run folder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    es = eval_set or load_eval_set(data, split, limit)
    evaluator = evaluator.to(device).eval()
    say = print if progress else (lambda *a, **k: None)
    say(f"[evaluate] {len(es.names)} motions from {es.root} ({es.split}); embedding ground truth")
    gt_emb = _embed_motions(evaluator, es.features)
    text_embs = _embed_texts(evaluator, es.captions)
    gt_j = es.gt_joints()
    result: dict = {
        "data": {"root": portable_path(es.root, out), "split": es.split, "motions": len(es.names),
                 "frames": int(sum(f.shape[0] for f in es.features))},
        "repeats": repeats, "seed": seed, "evaluator": portable_provenance(evaluator.provenance, out),
        "ground_truth": embedding_metrics(gt_emb, None, text_embs, repeats=repeats, seed=seed),
        "runs": [],
    }
    gif_motions = []
    for run_dir in runs:
        run_dir = Path(run_dir)
        tok = MotionTokenizer.load(run_dir, device=device)
        cfg = tok.config
        q = tok.num_quantizers
        sweep_ns: list[int | None] = []
        if stage_sweep and cfg.model == "posecode_rvq":
            sweep_ns = list(range(0, q + 1))
        elif stage_sweep and cfg.model == "rvq":
            sweep_ns = list(range(1, q + 1))
        settings = sorted(set([None] + sweep_ns), key=lambda v: -1 if v is None else v)
        say(f"[evaluate] {run_dir.name}: model={cfg.model}, decoding with stages {settings}")
        recs, idx, cats = reconstruct(tok, es.features, settings)
        run_res = {
            "name": run_dir.name, "path": portable_path(run_dir, out), "model": cfg.model,
            "weights_sha256": _sha256(run_dir / "model.safetensors"), "config": cfg.to_dict(),
            "embedding": embedding_metrics(gt_emb, _embed_motions(evaluator, recs[None]), text_embs,
                                           repeats=repeats, seed=seed),
            "joints": joint_metrics(recs[None], gt_j),
            "codebooks": M.codebook_stats(idx, cfg.codebook_size) if q else [],
        }
        if cfg.uses_posecodes:
            from ..motion.posecodes import SLOT_OFFSETS
            flat = np.unique(cats + np.asarray(SLOT_OFFSETS)[None])
            run_res["posecodes"] = {"categories_used": int(flat.size)}
        if sweep_ns:
            run_res["stage_sweep"] = []
            for n in sweep_ns:
                run_res["stage_sweep"].append({
                    "n_quantizers": n,
                    "embedding": embedding_metrics(gt_emb, _embed_motions(evaluator, recs[n]), text_embs,
                                                   repeats=repeats, seed=seed),
                    "joints": joint_metrics(recs[n], gt_j)})
        result["runs"].append(run_res)
        gif_motions.append((run_dir.name, recs[None][0]))
        say(f"[evaluate] {run_dir.name}: FID {_fmt(run_res['embedding'], 'fid')}, "
            f"MPJPE {run_res['joints']['mpjpe_mm']:.1f} mm")
    sweeps = [r for r in result["runs"] if r.get("stage_sweep")]
    if (sweeps or gif) and not _have_matplotlib():
        result["plots_skipped"] = NO_PLOTS
        say(f"[evaluate] {NO_PLOTS}")
        sweeps, gif = [], False
    if sweeps:
        _plot_stages(out / "stages.png", sweeps)
    if gif:
        try:
            from ..motion.features import features_to_joints
            from ..viz import render_motion
            joints = [es.gt_joints()[0]] + [np.asarray(features_to_joints(f)) for _, f in gif_motions]
            render_motion(joints, out / "reconstruction.gif",
                          titles=["ground truth"] + [n for n, _ in gif_motions],
                          caption=es.captions[0][0].split("#")[0], max_frames=gif_frames)
            result["gif"] = {"file": "reconstruction.gif", "motion": es.names[0]}
        except (ImportError, RuntimeError) as e:
            result["gif_skipped"] = f"{type(e).__name__}: {e}"
    result["seconds"] = time.time() - t0
    atomic_write_json(out / "report.json", result)
    _write_markdown(out / "report.md", result)
    return result
