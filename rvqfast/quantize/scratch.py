"""A training-step buffer kept between steps and reused once the previous step has let go of it.

The residual buffer of a training pass, (A+1, M, D) fp32, is tens of MB: glibc serves such
blocks with a fresh mmap every step, and first-touch page faults then cost ~40% of a CPU
training step (N=4096, Q=6, D=512: 10-30k faults per step, measured). The buffer is handed out
as an alias, so every holder (the autograd node saving it for backward, views made from it) keeps
a reference to its storage; it is reused only when nothing but this holder references the
storage, i.e. after the previous step's backward or once its graph is freed. Any doubt (no way
to count references, torch.compile, non-CPU devices) means a fresh allocation.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _storage_uses(t: Tensor) -> int | None:
    """References to ``t``'s storage (``None`` when this torch cannot count them)."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return None
    try:
        return int(count(t.untyped_storage()._cdata))
    except Exception:  # a torch whose private counter changed: never reuse
        return None


class StepBuffer:
    """Hands out an uninitialised tensor of a requested shape, reusing the last one when free."""

    def __init__(self) -> None:
        self._t: Tensor | None = None
        self._idle_uses: int | None = None

    def get(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An fp32 tensor of ``shape`` on ``like``'s device (contents undefined)."""
        if like.device.type != "cpu" or torch.compiler.is_compiling():
            return like.new_empty(shape, dtype=torch.float32)
        t = self._t
        if (
            t is not None
            and tuple(t.shape) == tuple(shape)
            and self._idle_uses is not None
            and _storage_uses(t) == self._idle_uses
        ):
            return t.view(t.shape)
        t = like.new_empty(shape, dtype=torch.float32)
        self._t, self._idle_uses = t, _storage_uses(t)
        return t.view(t.shape)

    def clear(self) -> None:
        """Drop the kept tensor."""
        self._t = self._idle_uses = None

    # A copied or pickled module starts without the buffer (it is scratch, not state).
    def __deepcopy__(self, memo: dict) -> "StepBuffer":
        return StepBuffer()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
