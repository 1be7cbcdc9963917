"""Issue 18 regressions: numeric edges of the ops and quantizer modules — never a silent wrong index."""
from __future__ import annotations

import pytest
import torch

import rvqfast
from rvqfast import ResidualVQ
from rvqfast.ops import nearest_code, rvq_decode, rvq_encode


def test_nearest_code_refuses_values_whose_distances_overflow():
    # defect 8: values ~1e20 gave d2 = inf and 1989/2000 wrong rows without an error
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g) * 1e20
    cb = torch.randn(64, 16, generator=g) * 1e20
    with pytest.raises(ValueError, match=r"x holds values up to .*overflow float32"):
        nearest_code(x, cb)
    with pytest.raises(ValueError, match=r"codebook holds values"):
        nearest_code(torch.randn(4, 16), cb)
    with pytest.raises(ValueError, match=r"codebooks holds values"):
        rvq_encode(torch.randn(4, 16), cb.unsqueeze(0))


def test_search_still_exact_below_the_limit():
    g = torch.Generator().manual_seed(1)
    cb = torch.randn(32, 8, generator=g, dtype=torch.float64)
    x = cb[torch.randint(0, 32, (50,), generator=g)] + 1e-3 * torch.randn(50, 8, generator=g, dtype=torch.float64)
    off = 1e6
    idx, d2 = nearest_code((x + off).float(), (cb + off).float(), precision="exact")
    ref = torch.cdist(x, cb).argmin(1)
    assert torch.equal(idx, ref) and torch.isfinite(d2).all()


def test_rvq_decode_refuses_nan_codebooks():
    # defect 8: rvq_decode accepted NaN codebooks
    cb = torch.randn(2, 8, 4)
    cb[1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="codebooks contains NaN"):
        rvq_decode(torch.zeros(5, 2, dtype=torch.long), cb)


@pytest.mark.parametrize("shape", [(0, 5, 8), (3, 0, 8)])
def test_residual_vq_empty_batch_is_a_message(shape):
    # defect 9: (0, N, D) / (B, 0, D) gave raw tracebacks
    rvq = ResidualVQ(dim=8, num_quantizers=2, codebook_size=16)
    with pytest.raises(ValueError, match=r"x is empty \(shape"):
        rvq(torch.zeros(shape))


def test_residual_vq_training_refuses_huge_inputs_and_keeps_codebooks():
    # defect 8: training on x >= 1e18 dragged the codebooks to 1e20
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=8, num_quantizers=2, codebook_size=16, kmeans_init=False).train()
    rvq(torch.randn(2, 32, 8))
    before = rvq.codebooks.clone()
    with pytest.raises(ValueError, match=r"x holds values up to 1e\+18"):
        rvq(torch.full((2, 32, 8), 1e18))
    assert torch.equal(rvq.codebooks, before)
    assert rvqfast is not None
