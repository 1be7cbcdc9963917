"""The ``triton`` backend: fused Triton kernels for every rvqfast op.

Runs CUDA tensors on a GPU, and CPU tensors under ``TRITON_INTERPRET=1`` (how CI checks the
kernels without a GPU; the variable must be set before triton is first imported). Importing this
module raises ImportError when triton is missing, or when there is neither a CUDA device nor the
interpreter, so the registry records the backend as unavailable with the reason.

Precisions: ``"exact"`` and ``"certified"`` both run the exact fp32 (IEEE ``tl.dot``) search,
which is what ``"certified"`` promises (the exact result); ``"bf16"`` screens with bf16 dots and
is approximate.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
except ImportError as e:  # the registry records the reason
    raise ImportError(f"triton is not installed ({e}); `pip install triton`") from e

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    raise ImportError(
        "the triton backend needs a CUDA device (or TRITON_INTERPRET=1, set before triton is "
        "imported, to run its kernels on CPU tensors for testing)"
    )

from .. import register  # noqa: E402
from ..reference import rvq_encode_by_stage  # noqa: E402
from . import codes, search  # noqa: E402
from .config import INTERPRET, INTERPRET_META, MAX_FUSED_D, MAX_SEARCH_BLOCK_D  # noqa: E402

__all__ = ["nearest_code", "rvq_encode", "rvq_decode", "ema_stats", "centred"]


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(n))


def centred(codebooks: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(…, K, D) codebooks -> (fp32 codes, mean μ (…, D), codes − μ, ‖codes − μ‖² (…, K)).

    Centring on the codebook mean before the ``‖c‖² − 2x·c`` expansion is what keeps fp32 exact
    for data far from the origin (same formula as the reference backend).
    """
    cb = codebooks.float().contiguous()
    mu = cb.mean(-2)
    cc = (cb - mu.unsqueeze(-2)).contiguous()
    return cb, mu.contiguous(), cc, (cc * cc).sum(-1).contiguous()


def _bf16_mode(precision: str) -> int:
    # 0: exact fp32 dot; 1: bf16 tensor-core dot; 2: bf16 rounding emulated (interpreter only).
    if precision != "bf16":
        return 0
    return 2 if INTERPRET else 1


def _launch_rows(kernel, tuned, n: int, args: tuple, block_d: int, use_bf16: int) -> None:
    """Launch a row-blocked search kernel over ``n`` rows: the fixed interpreter tiles under
    TRITON_INTERPRET=1, else its autotuned variant (which picks BLOCK_N)."""
    if INTERPRET:
        grid = (triton.cdiv(n, INTERPRET_META["BLOCK_N"]),)
        kernel[grid](*args, BLOCK_D=block_d, USE_BF16=use_bf16, **INTERPRET_META)
    else:
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
        tuned[grid](*args, BLOCK_D=block_d, USE_BF16=use_bf16)


def _launch_nearest(x: Tensor, codebook: Tensor, use_bf16: int) -> tuple[Tensor, Tensor]:
    n, d = x.shape
    k = codebook.shape[0]
    cb, mu, cc, cn = centred(codebook)
    idx = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    block_d = min(_pow2(d), MAX_SEARCH_BLOCK_D)
    _launch_rows(search.nearest_kernel, search.nearest_tuned, n,
                 (x, mu, cc, cn, cb, idx, dist, n, k, d), block_d, use_bf16)
    return idx, dist


@register("triton", "nearest_code")
def nearest_code(x: Tensor, codebook: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    """Fused nearest-code search; see :mod:`rvqfast.backends.triton.search`."""
    return _launch_nearest(x, codebook, _bf16_mode(precision))


nearest_code.precisions = ("exact", "certified", "bf16")


@register("triton", "rvq_encode")
def rvq_encode(x: Tensor, codebooks: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    """All stages in one launch when D <= 1024 (residual kept on chip); per stage otherwise."""
    n, d = x.shape
    q, k, _ = codebooks.shape
    use_bf16 = _bf16_mode(precision)
    if d > MAX_FUSED_D or q * k * d >= 2**31:
        return _rvq_encode_per_stage(x, codebooks, use_bf16)
    cb, mu, cc, cn = centred(codebooks)
    idx = torch.empty(n, q, dtype=torch.int64, device=x.device)
    quant = torch.empty(n, d, dtype=torch.float32, device=x.device)
    _launch_rows(search.rvq_encode_kernel, search.rvq_encode_tuned, n,
                 (x, mu, cc, cn, cb, idx, quant, n, k, d, q), _pow2(d), use_bf16)
    return idx, quant


rvq_encode.precisions = ("exact", "certified", "bf16")


def _rvq_encode_per_stage(x: Tensor, codebooks: Tensor, use_bf16: int) -> tuple[Tensor, Tensor]:
    # D too large to keep the residual on chip: one fused search launch per stage.
    return rvq_encode_by_stage(x, codebooks, lambda r, cb: _launch_nearest(r, cb, use_bf16))


@register("triton", "rvq_decode")
def rvq_decode(indices: Tensor, codebooks: Tensor) -> Tensor:
    """Gather + sum over stages in one launch (``-1`` stages skipped)."""
    q, k, d = codebooks.shape
    n = indices.shape[0]
    out = torch.empty(n, d, dtype=torch.float32, device=codebooks.device)
    block_n = 16 if INTERPRET else 32
    block_d = min(_pow2(d), 128)
    grid = (triton.cdiv(n, block_n), triton.cdiv(d, block_d))
    codes.rvq_decode_kernel[grid](indices, codebooks, out, n, k, d, q, BLOCK_N=block_n, BLOCK_D=block_d)
    return out


@register("triton", "ema_stats")
def ema_stats(x: Tensor, indices: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    """Per-code counts and sums with fp32 atomics (order-dependent rounding on a GPU)."""
    n, d = x.shape
    counts = torch.zeros(num_codes, dtype=torch.float32, device=x.device)
    sums = torch.zeros(num_codes, d, dtype=torch.float32, device=x.device)
    block_n = 16 if INTERPRET else 64
    block_d = min(_pow2(d), 128)
    grid = (triton.cdiv(n, block_n), triton.cdiv(d, block_d))
    codes.ema_stats_kernel[grid](x, indices, counts, sums, n, d, BLOCK_N=block_n, BLOCK_D=block_d)
    return counts, sums
