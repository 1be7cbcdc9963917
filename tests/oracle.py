"""Test oracle helpers: brute-force fp64 distances and the near-tie acceptance rule."""
from __future__ import annotations

import torch

from rvqfast import ops


def sqdist64(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """All squared distances in float64 (tests only: materialises N x K)."""
    x64, c64 = x.double(), codebook.double()
    return ((x64[:, None, :] - c64[None, :, :]) ** 2).sum(-1)


def assert_nearest(x: torch.Tensor, codebook: torch.Tensor, idx: torch.Tensor, rtol: float = 1e-4) -> None:
    """Every ``idx`` must be a true nearest code of its row, up to a near-tie in fp32."""
    d = sqdist64(x.float(), codebook.float())
    best = d.min(1).values
    got = d.gather(1, idx.long().view(-1, 1)).squeeze(1)
    slack = rtol * (1 + best) + 1e-5 * (x.float().double().pow(2).sum(1) + 1)
    bad = got > best + slack
    assert not bad.any(), f"{int(bad.sum())} rows not nearest; first gap {float((got - best)[bad][0])}"


def assert_same_up_to_ties(x, codebook, idx, idx_ref, rtol: float = 1e-4) -> None:
    """Indices equal the reference's, except on rows where both are (near-)nearest."""
    assert idx.shape == idx_ref.shape
    diff = idx != idx_ref
    if diff.any():
        assert_nearest(x[diff], codebook, idx[diff], rtol)


def far_from_origin(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (n, 8), codebook (64, 8)): codes 1e-2 apart at distance 1e4 from the origin, where the
    plain ``‖x‖² + ‖c‖² − 2x·c`` expansion cancels to garbage; rows lie 1e-3 from a code."""
    g = torch.Generator().manual_seed(1)
    cb = 1e4 + 1e-2 * torch.randn(64, 8, generator=g)
    x = cb[torch.randint(0, 64, (n,), generator=g)] + 1e-3 * torch.randn(n, 8, generator=g)
    return x, cb


def lloyd_rvq_codebooks(g: torch.Generator, train: torch.Tensor, k: int, q: int, lloyd: int) -> torch.Tensor:
    """(q, k, D) RVQ codebooks: per stage, ``k`` residual rows of ``train`` as seeds, ``lloyd``
    Lloyd steps (exact search and EMA statistics of the cpu backend), then the residual update."""
    residual, cbs = train.clone(), []
    for _ in range(q):
        cb = residual[torch.randperm(train.shape[0], generator=g)[:k]].clone()
        for _ in range(lloyd):
            idx, _ = ops.nearest_code(residual, cb, backend="cpu", precision="exact")
            counts, sums = ops.ema_stats(residual, idx, k, backend="cpu")
            used = counts > 0
            cb[used] = sums[used] / counts[used, None]
        idx, _ = ops.nearest_code(residual, cb, backend="cpu", precision="exact")
        residual -= cb[idx]
        cbs.append(cb)
    return torch.stack(cbs)
