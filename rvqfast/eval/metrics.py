"""Motion-generation / reconstruction metrics.

Embedding metrics follow the published text-to-motion (T2M) protocol (Guo et al., 2022):

* FID: Fréchet distance between Gaussians fitted to two sets of motion embeddings,
  ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``.
* Diversity: mean Euclidean distance between ``times`` random pairs of embeddings.
* R-precision top-k: within a batch of 32 (text, motion) pairs, the fraction of texts whose own
  motion is among the k nearest motions (Euclidean).
* MM-Dist: mean Euclidean distance between each text and its own motion.

Each is reported as mean ± 95% confidence (``1.96 * std / sqrt(repeats)``) over repeats.

Joint metrics take positions in metres and report millimetres: MPJPE, PA-MPJPE (per-frame
similarity Procrustes: rotation, translation and scale) and acceleration error (second finite
difference, mm per frame^2). Codebook metrics: per-stage usage and perplexity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "MeanConf", "mean_conf", "activation_stats", "frechet_distance", "fid",
    "diversity", "euclidean_distance_matrix", "r_precision", "mm_dist",
    "procrustes_align", "mpjpe", "pa_mpjpe", "accel_error", "codebook_stats",
]


@dataclass(frozen=True)
class MeanConf:
    """A metric over repeats: mean and half-width of the 95% confidence interval."""

    mean: float
    conf: float
    repeats: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.conf:.3f}"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "conf95": self.conf, "repeats": self.repeats}


def _as_f64(x, name: str, ndim: int | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def mean_conf(values) -> MeanConf:
    """Mean and 95% confidence half-width (1.96 * std / sqrt(n), population std as in T2M)."""
    v = _as_f64(values, "values").reshape(-1)
    if v.size == 0:
        raise ValueError("values: need at least one repeat")
    return MeanConf(float(v.mean()), float(1.96 * v.std() / math.sqrt(v.size)), int(v.size))


def activation_stats(act) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (unbiased, float64) of activations (N, D)."""
    a = _as_f64(act, "act", ndim=2)
    if a.shape[0] < 2:
        raise ValueError(f"act: need at least 2 rows to estimate a covariance, got {a.shape[0]}")
    return a.mean(0), np.cov(a, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) * 0.5)
    # Round-off makes tiny eigenvalues of a PSD matrix slightly negative; they are 0.
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``Tr (S1 S2)^{1/2}`` equals ``Tr (S1^{1/2} S2 S1^{1/2})^{1/2}``; the inner matrix is
    symmetric PSD, so both square roots come from symmetric eigen-decompositions, which stay
    real and stable where a general ``sqrtm`` of the non-symmetric product can turn complex.
    """
    m1, m2 = _as_f64(mu1, "mu1", 1), _as_f64(mu2, "mu2", 1)
    s1, s2 = _as_f64(sigma1, "sigma1", 2), _as_f64(sigma2, "sigma2", 2)
    d = m1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name}: expected shape ({d}, {d}), got {s.shape}")
    if m2.shape != (d,):
        raise ValueError(f"mu2: expected shape ({d},), got {m2.shape}")
    r1 = _sqrt_psd(s1)
    inner = r1 @ s2 @ r1
    w = np.linalg.eigvalsh((inner + inner.T) * 0.5)
    tr_covmean = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    diff = m1 - m2
    val = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(val, 0.0)


def fid(act1, act2) -> float:
    """FID between two activation sets (N1, D) and (N2, D)."""
    mu1, s1 = activation_stats(act1)
    mu2, s2 = activation_stats(act2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"act2: feature dimension {mu2.shape[0]} differs from act1's {mu1.shape[0]}")
    return frechet_distance(mu1, s1, mu2, s2)


def diversity(act, times: int = 300, *, seed: int = 0) -> float:
    """Mean Euclidean distance over ``times`` random pairs (two draws without replacement)."""
    a = _as_f64(act, "act", ndim=2)
    if not isinstance(times, int) or times < 1:
        raise ValueError(f"times: expected a positive int, got {times!r}")
    if a.shape[0] < times:
        raise ValueError(f"act: diversity over {times} pairs needs at least {times} rows, "
                         f"got {a.shape[0]} (pass a smaller times)")
    rng = np.random.default_rng(seed)
    i = rng.choice(a.shape[0], times, replace=False)
    j = rng.choice(a.shape[0], times, replace=False)
    return float(np.linalg.norm(a[i] - a[j], axis=1).mean())


def euclidean_distance_matrix(a, b) -> np.ndarray:
    """(N, M) Euclidean distances between rows of a (N, D) and b (M, D), float64."""
    x, y = _as_f64(a, "a", 2), _as_f64(b, "b", 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"b: feature dimension {y.shape[1]} differs from a's {x.shape[1]}")
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.clip(d2, 0.0, None))


def r_precision(text_emb, motion_emb, top_k: int = 3, batch_size: int = 32) -> np.ndarray:
    """R-precision top-1..top_k: row i of text_emb matches row i of motion_emb.

    Pairs are split into consecutive batches of ``batch_size`` (an incomplete last batch is
    dropped, as the T2M loaders do); returns (top_k,) accuracies averaged over batches.
    """
    t, m = _as_f64(text_emb, "text_emb", 2), _as_f64(motion_emb, "motion_emb", 2)
    if t.shape != m.shape:
        raise ValueError(f"motion_emb: shape {m.shape} differs from text_emb's {t.shape}")
    if batch_size < top_k:
        raise ValueError(f"batch_size: must be >= top_k ({top_k}), got {batch_size}")
    nb = t.shape[0] // batch_size
    if nb == 0:
        raise ValueError(f"text_emb: need at least batch_size={batch_size} pairs, got {t.shape[0]}")
    hits = np.zeros(top_k)
    for b in range(nb):
        sl = slice(b * batch_size, (b + 1) * batch_size)
        dist = euclidean_distance_matrix(t[sl], m[sl])
        # Rank of the true match: number of motions strictly closer (ties favour the match).
        rank = (dist < np.diag(dist)[:, None]).sum(1)
        hits += np.array([(rank < k).mean() for k in range(1, top_k + 1)])
    return hits / nb


def mm_dist(text_emb, motion_emb) -> float:
    """Mean Euclidean distance between matching text and motion embeddings."""
    t, m = _as_f64(text_emb, "text_emb", 2), _as_f64(motion_emb, "motion_emb", 2)
    if t.shape != m.shape:
        raise ValueError(f"motion_emb: shape {m.shape} differs from text_emb's {t.shape}")
    return float(np.linalg.norm(t - m, axis=1).mean())


def _joints(x, name: str) -> np.ndarray:
    a = _as_f64(x, name)
    if a.ndim < 2 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (..., J, 3), got {a.shape}")
    return a


def procrustes_align(pred, target) -> np.ndarray:
    """Align each pose of pred (..., J, 3) to target by the best similarity transform.

    Per pose: ``min_{s,R,t} |s R x + t - y|^2`` with R a proper rotation (Umeyama's solution).
    """
    x, y = _joints(pred, "pred"), _joints(target, "target")
    if x.shape != y.shape:
        raise ValueError(f"target: shape {y.shape} differs from pred's {x.shape}")
    mx, my = x.mean(-2, keepdims=True), y.mean(-2, keepdims=True)
    xc, yc = x - mx, y - my
    cov = np.swapaxes(yc, -1, -2) @ xc  # (..., 3, 3) = sum_j y_j x_j^T
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    fix = np.ones(s.shape)
    fix[..., -1] = d
    rot = (u * fix[..., None, :]) @ vt
    var_x = (xc * xc).sum((-1, -2))
    scale = (s * fix).sum(-1) / np.maximum(var_x, 1e-300)
    return scale[..., None, None] * (xc @ np.swapaxes(rot, -1, -2)) + my


def mpjpe(pred, target) -> float:
    """Mean per-joint position error in millimetres (inputs in metres, shape (..., J, 3))."""
    x, y = _joints(pred, "pred"), _joints(target, "target")
    if x.shape != y.shape:
        raise ValueError(f"target: shape {y.shape} differs from pred's {x.shape}")
    return float(np.linalg.norm(x - y, axis=-1).mean() * 1000.0)


def pa_mpjpe(pred, target) -> float:
    """MPJPE after per-frame Procrustes alignment (rotation, translation, scale), in mm."""
    return mpjpe(procrustes_align(pred, target), target)


def accel_error(pred, target) -> float:
    """Mean per-joint error of the second finite difference over time, mm / frame^2.

    Inputs (..., T, J, 3) in metres with T >= 3.
    """
    x, y = _joints(pred, "pred"), _joints(target, "target")
    if x.shape != y.shape:
        raise ValueError(f"target: shape {y.shape} differs from pred's {x.shape}")
    if x.ndim < 3 or x.shape[-3] < 3:
        raise ValueError(f"pred: expected shape (..., T>=3, J, 3), got {x.shape}")

    def acc(a):
        return a[..., 2:, :, :] - 2.0 * a[..., 1:-1, :, :] + a[..., :-2, :, :]

    return float(np.linalg.norm(acc(x) - acc(y), axis=-1).mean() * 1000.0)


def codebook_stats(indices, codebook_size: int) -> list[dict]:
    """Per-stage usage (fraction of codes used) and perplexity of indices (N, Q).

    Entries of -1 (stage skipped) are ignored. Perplexity is ``exp(entropy)`` of the empirical
    code distribution: ``codebook_size`` for uniform use, 1 for a single code.
    """
    idx = indices.detach().cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices: expected an integer array (N, Q), got shape {idx.shape} dtype {idx.dtype}")
    if not isinstance(codebook_size, int) or codebook_size < 1:
        raise ValueError(f"codebook_size: expected a positive int, got {codebook_size!r}")
    if ((idx < -1) | (idx >= codebook_size)).any():
        raise ValueError(f"indices: entries must lie in [-1, {codebook_size})")
    out = []
    for q in range(idx.shape[1]):
        col = idx[:, q]
        col = col[col >= 0]
        counts = np.bincount(col, minlength=codebook_size).astype(np.float64)
        n = counts.sum()
        if n == 0:
            out.append({"stage": q, "count": 0, "usage": 0.0, "perplexity": 0.0})
            continue
        p = counts[counts > 0] / n
        out.append({"stage": q, "count": int(n), "usage": float((counts > 0).mean()),
                    "perplexity": float(np.exp(-(p * np.log(p)).sum()))})
    return out
