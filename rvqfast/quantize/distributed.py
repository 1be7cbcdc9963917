"""Every collective the quantizer modules use lives here, and nowhere else.

Rules that keep ranks from hanging (the failure users of other libraries hit under torchrun):
- collectives run only in training mode with autograd enabled (never in eval, never under
  ``torch.no_grad()``), so a validation pass run on one rank alone reaches none of them;
- whether a collective runs is decided only from state that is already identical on all ranks
  (synchronised buffers, shapes, constructor arguments), so all ranks reach the same collectives
  in the same order;
- random choices that must agree across ranks (dead-code replacements, k-means seeds) are drawn
  from a generator seeded with a seed all ranks agree on, from a pool all ranks hold.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def resolve_sync(sync_codebook: bool | None) -> bool:
    """``None`` means "sync when running distributed"; ``True`` with one process is a no-op."""
    if sync_codebook is None or sync_codebook:
        return is_distributed()
    return False


def all_reduce_sum_(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks in place (contiguous tensors only, which is what we pass)."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shared_seed(device: torch.device, high: int = 10_000) -> int:
    """A random int that every rank agrees on (each rank draws, the draws are summed)."""
    seed = torch.randint(0, high, (), device=device)
    dist.all_reduce(seed, op=dist.ReduceOp.SUM)
    return int(seed.item())


def _local_draw(samples: Tensor, num: int) -> Tensor:
    n = samples.shape[0]
    if n == 0:
        return samples.new_zeros(num, samples.shape[1])
    if n >= num:
        return samples[torch.randperm(n, device=samples.device)[:num]]
    return samples[torch.randint(0, n, (num,), device=samples.device)]


def gather_pool(samples: Tensor, num: int) -> Tensor:
    """Each rank draws ``num`` of its rows; returns the concatenation over the ranks that had rows.

    The result is identical on every rank. Ranks with no rows (everything masked) contribute
    nothing; the pool is empty only when no rank had rows.
    """
    world = dist.get_world_size()
    count = torch.tensor([samples.shape[0]], dtype=torch.int64, device=samples.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    draw = _local_draw(samples, num).contiguous()
    draws = [torch.empty_like(draw) for _ in range(world)]
    dist.all_gather(draws, draw)
    kept = [d for d, c in zip(draws, counts) if int(c.item()) > 0]
    if not kept:
        return samples.new_zeros(0, samples.shape[1])
    return torch.cat(kept)


def shared_generator(device: torch.device) -> torch.Generator:
    """A generator seeded identically on every rank (one all-reduce)."""
    g = torch.Generator(device=device)
    g.manual_seed(shared_seed(device))
    return g
