"""Code search used by the modules (through :mod:`rvqfast.ops`) and k-means codebook init."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _ops, ops
from . import distributed as ddp


def resolve_backend(backend: str, precision: str, device: torch.device, dim: int | None = None) -> tuple[str, str]:
    """Resolve ``"auto"`` once per forward; the per-stage calls then skip re-validation."""
    return ops.resolve_backend_precision(backend, precision, device, dim)


def all_finite(t: Tensor) -> bool:
    """One reduction: a finite sum proves every element finite; only a non-finite sum (NaN/Inf
    present, or an overflow of huge values) pays for the element-wise check.

    Under ``torch.compile`` the check is skipped (True): a data-dependent branch would break the
    graph, and ``fullgraph=True`` could not trace the module at all."""
    if torch.compiler.is_compiling():
        return True
    return t.numel() == 0 or bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def search(z: Tensor, codebook: Tensor, *, cosine: bool, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    """Best code per row of ``z`` (fp32): nearest in L2, or largest dot product when ``cosine``.

    ``backend``/``precision`` must be resolved (:func:`resolve_backend`) and the inputs finite:
    this calls the ``rvqfast::nearest_code`` op directly, the op :func:`rvqfast.ops.nearest_code`
    dispatches to, without checking the same tensors again at every stage.

    For ``cosine`` the dot-product argmax is turned into an exact L2 search by appending one
    column: ``c' = [c, sqrt(m - |c|^2)]``, ``z' = [z, 0]`` with ``m = max |c|^2`` gives
    ``|z' - c'|^2 = |z|^2 + m - 2 z.c``, so the same kernel (and its lowest-index tie rule)
    serves both metrics, even for codes that are not unit length.
    Returns ``(indices (N,), sqdist (N,))``; ``sqdist`` is ``|z - c|^2`` in both cases.
    """
    if not cosine:
        return _ops.nearest_code(z.float().contiguous(), codebook.float().contiguous(), backend, precision)
    cb = codebook.float()
    norms = (cb * cb).sum(1)
    extra = (norms.max() - norms).clamp(min=0).sqrt()
    cb_aug = torch.cat([cb, extra[:, None]], 1)
    z_aug = F.pad(z.float(), (0, 1))
    idx, _ = _ops.nearest_code(z_aug, cb_aug, backend, precision)
    diff = z.float() - cb[idx]
    return idx, (diff * diff).sum(1)


def stats(z: Tensor, idx: Tensor, k: int, backend: str) -> tuple[Tensor, Tensor]:
    """Per-code counts and sums through the ``rvqfast::ema_stats`` op (resolved backend)."""
    return _ops.ema_stats(z.float().contiguous(), idx.contiguous(), k, backend)


def sample_rows(samples: Tensor, num: int) -> Tensor:
    """``num`` rows without replacement when there are enough, else with (global torch RNG)."""
    n = samples.shape[0]
    if n >= num:
        return samples[torch.randperm(n, device=samples.device)[:num]]
    return samples[torch.randint(0, n, (num,), device=samples.device)]


def kmeans(
    samples: Tensor,
    num_clusters: int,
    num_iters: int,
    *,
    cosine: bool = False,
    sync: bool = False,
    backend: str = "auto",
    precision: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on ``samples`` (N, D) fp32 -> ``(means (K, D), counts (K,))``.

    Clusters that receive no point keep their previous mean; ``counts`` are the assignment
    counts of the last iteration. With ``sync`` the initial means are drawn from a pool
    gathered from all ranks and every iteration sums counts and sums over ranks, so all ranks
    compute the same means.
    """
    samples = samples.float()
    backend, precision = resolve_backend(backend, precision, samples.device, samples.shape[1])
    if sync:
        pool = ddp.gather_pool(samples, num_clusters)
        g = ddp.shared_generator(samples.device)
        n = pool.shape[0]
        pick = (
            torch.randperm(n, generator=g, device=pool.device)[:num_clusters]
            if n >= num_clusters
            else torch.randint(0, n, (num_clusters,), generator=g, device=pool.device)
        )
        means = pool[pick]
    else:
        means = sample_rows(samples, num_clusters)
    counts = torch.zeros(num_clusters, device=samples.device)
    for it in range(max(num_iters, 1)):
        if samples.shape[0]:
            idx, _ = search(samples, means, cosine=cosine, backend=backend, precision=precision)
            counts, sums = stats(samples, idx, num_clusters, backend)
        else:
            counts = samples.new_zeros(num_clusters)
            sums = samples.new_zeros(num_clusters, samples.shape[1])
        if sync:
            packed = ddp.all_reduce_sum_(torch.cat([counts[:, None], sums], 1).contiguous())
            counts, sums = packed[:, 0].contiguous(), packed[:, 1:]
        if it == num_iters:  # num_iters == 0: report the assignment of the sampled means only
            break
        empty = counts == 0
        new = sums / counts.clamp(min=1)[:, None]
        if cosine:
            new = F.normalize(new, dim=-1, eps=1e-6)
        means = torch.where(empty[:, None], means, new)
    return means, counts
