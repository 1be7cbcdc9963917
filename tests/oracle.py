"""Test oracle helpers: brute-force fp64 distances and the near-tie acceptance rule."""
from __future__ import annotations

import torch


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
