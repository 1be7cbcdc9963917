"""The one list of rvqfast ops: each op's ``torch.library`` schema plus its fake (meta) impl.

Every op takes a ``backend`` name (already resolved by :mod:`rvqfast.ops`) and forwards to that
backend's registered function. The fake impls give output shapes and dtypes without computing,
which is what lets ``torch.compile`` trace through the ops. Inputs reaching these ops have been
validated by :mod:`rvqfast.ops`; outputs are always float32 / int64 whatever the input dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .backends import get_impl


@torch.library.custom_op("rvqfast::nearest_code", mutates_args=())
def nearest_code(x: Tensor, codebook: Tensor, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    """x (N, D), codebook (K, D) -> indices (N,) int64, squared distances (N,) float32."""
    return get_impl(backend, "nearest_code")(x, codebook, precision)


@nearest_code.register_fake
def _(x: Tensor, codebook: Tensor, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    return x.new_empty(n, dtype=torch.int64), x.new_empty(n, dtype=torch.float32)


@torch.library.custom_op("rvqfast::rvq_encode", mutates_args=())
def rvq_encode(x: Tensor, codebooks: Tensor, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    """x (N, D), codebooks (Q, K, D) -> indices (N, Q) int64, quantized (N, D) float32.

    Stage q searches codebooks[q] for the residual left by stages < q; ``quantized`` is the sum
    of the chosen codes.
    """
    return get_impl(backend, "rvq_encode")(x, codebooks, precision)


@rvq_encode.register_fake
def _(x: Tensor, codebooks: Tensor, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    n, q = x.shape[0], codebooks.shape[0]
    return x.new_empty(n, q, dtype=torch.int64), x.new_empty(n, x.shape[1], dtype=torch.float32)


@torch.library.custom_op("rvqfast::grouped_nearest_code", mutates_args=())
def grouped_nearest_code(x: Tensor, codebooks: Tensor, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    """x (G, N, D), codebooks (G, K, D) -> indices (G, N) int64, squared distances (G, N) float32.

    Group g's rows search group g's codebook only: G independent ``nearest_code`` searches in
    one call. Groups lead so each group's rows and outputs are one contiguous block.
    """
    return get_impl(backend, "grouped_nearest_code")(x, codebooks, precision)


@grouped_nearest_code.register_fake
def _(x: Tensor, codebooks: Tensor, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    g, n = x.shape[0], x.shape[1]
    return x.new_empty(g, n, dtype=torch.int64), x.new_empty(g, n, dtype=torch.float32)


@torch.library.custom_op("rvqfast::grouped_rvq_encode", mutates_args=())
def grouped_rvq_encode(x: Tensor, codebooks: Tensor, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    """x (G, N, D), codebooks (G, Q, K, D) -> indices (G, N, Q) int64, quantized (G, N, D) float32.

    Group g's rows run through group g's Q stages (``rvq_encode`` per group, all groups and
    stages in one call). Groups lead so each group's rows and outputs are one contiguous block.
    """
    return get_impl(backend, "grouped_rvq_encode")(x, codebooks, precision)


@grouped_rvq_encode.register_fake
def _(x: Tensor, codebooks: Tensor, backend: str, precision: str) -> tuple[Tensor, Tensor]:
    g, n, q = x.shape[0], x.shape[1], codebooks.shape[1]
    return x.new_empty(g, n, q, dtype=torch.int64), x.new_empty(g, n, x.shape[2], dtype=torch.float32)


@torch.library.custom_op("rvqfast::rvq_decode", mutates_args=())
def rvq_decode(indices: Tensor, codebooks: Tensor, backend: str) -> Tensor:
    """indices (N, Q) int64 (``-1`` = stage skipped), codebooks (Q, K, D) -> (N, D) float32."""
    return get_impl(backend, "rvq_decode")(indices, codebooks)


@rvq_decode.register_fake
def _(indices: Tensor, codebooks: Tensor, backend: str) -> Tensor:
    return codebooks.new_empty(indices.shape[0], codebooks.shape[2], dtype=torch.float32)


@torch.library.custom_op("rvqfast::ema_stats", mutates_args=())
def ema_stats(x: Tensor, indices: Tensor, num_codes: int, backend: str) -> tuple[Tensor, Tensor]:
    """x (N, D), indices (N,) int64 (``-1`` = ignore row) -> counts (K,), sums (K, D), float32.

    The per-code statistics an EMA codebook update needs, in one pass over the rows.
    """
    return get_impl(backend, "ema_stats")(x, indices, num_codes)


@ema_stats.register_fake
def _(x: Tensor, indices: Tensor, num_codes: int, backend: str) -> tuple[Tensor, Tensor]:
    return (
        x.new_empty(num_codes, dtype=torch.float32),
        x.new_empty(num_codes, x.shape[1], dtype=torch.float32),
    )


# Training-step row work outside the search (rvqfast/quantize/core.py and grad.py).
@torch.library.custom_op("rvqfast::residual_update", mutates_args=("out", "counts", "sums"))
def residual_update(
    r: Tensor, codebook: Tensor, indices: Tensor, out: Tensor, counts: Optional[Tensor], sums: Optional[Tensor], backend: str
) -> None:
    """r (N, D) fp32, codebook (K, D), indices (N,) int64 in [0, K) -> writes ``out`` (N, D) =
    r - codebook[indices] and, when given, ``counts`` (K,) and ``sums`` (K, D) =
    ``ema_stats(r, indices, K)``. Outputs are contiguous fp32 and must not overlap ``r``."""
    get_impl(backend, "residual_update")(r, codebook, indices, out, counts, sums)


@torch.library.custom_op("rvqfast::rvq_stages_grad", mutates_args=())
def rvq_stages_grad(
    residuals: Tensor, g: Tensor, sqnorm: Tensor, code_sq: Tensor, dist_sq: Tensor, commit: Tensor, rotation: bool, backend: str
) -> Tensor:
    """Gradient (N, D) of A Euclidean stages with respect to their input: residuals (A+1, N, D)
    r_0..r_A, upstream g (N, D), sqnorm (A+1, N) |r_j|^2, code_sq (A, N) |c_q|^2, dist_sq (A, N)
    |r_q - c_q|^2, commit (A,) commitment-loss coefficients; rotation trick or straight-through
    (definition: :func:`rvqfast.backends.reference.rvq_stages_grad`)."""
    return get_impl(backend, "rvq_stages_grad")(residuals, g, sqnorm, code_sq, dist_sq, commit, rotation)


@rvq_stages_grad.register_fake
def _(residuals: Tensor, g: Tensor, sqnorm: Tensor, code_sq: Tensor, dist_sq: Tensor, commit: Tensor, rotation: bool, backend: str) -> Tensor:
    return residuals.new_empty(residuals.shape[1], residuals.shape[2], dtype=torch.float32)
