"""Shared check for the drop-in parity tests: vector-quantize-pytorch and rvqfast modules on the
same weights and the same RNG draws give the same outputs and input gradients."""
from __future__ import annotations

from typing import Callable

import torch


def same_forward(theirs, ours, x: torch.Tensor, *, loss_of: Callable | None, compare: int | None = None,
                 seed: int = 0, grad_tol: float = 1e-6, **fwd):
    """Load ``theirs``' state into ``ours``, run both on ``x`` (same seed), and check the first
    ``compare`` outputs (all by default: same shape, dtype and values) and, when ``loss_of`` is
    given, the gradient of ``loss_of(outputs)`` with respect to ``x``. Returns both outputs."""
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.train(theirs.training)
    xt, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(seed)
    rt = theirs(xt, **fwd)
    torch.manual_seed(seed)
    ro = ours(xo, **fwd)
    assert len(rt) == len(ro)
    for a, b in zip(rt[:compare], ro[:compare]):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    if loss_of is not None:
        loss_of(rt).backward()
        loss_of(ro).backward()
        torch.testing.assert_close(xo.grad, xt.grad, rtol=max(grad_tol, 1e-6) * 100, atol=grad_tol)
    return rt, ro
