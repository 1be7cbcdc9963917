"""Public entry points for the rvqfast ops: validate once, pick a backend, call the op.

>>> import torch, rvqfast
>>> x, cb = torch.randn(1000, 64), torch.randn(512, 64)
>>> idx, d2 = rvqfast.ops.nearest_code(x, cb)          # backend="auto", precision="auto"

All ops accept float32/float16/bfloat16 inputs and compute in fp32; outputs are int64 indices
and float32 values. ``backend`` is ``"auto"`` or one of :func:`rvqfast.available_backends`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _ops
from ._validate import (
    check_finite,
    check_float,
    check_indices,
    check_precision,
    check_same_device,
    check_search_input,
)
from .backends import available_backends, resolve

__all__ = [
    "nearest_code", "rvq_encode", "rvq_decode", "ema_stats", "available_backends", "resolve_precision",
    "resolve_backend_precision", "grouped_nearest_code", "grouped_rvq_encode",
]


# Below this dimension the bf16 screen saves too little of the product to pay for the re-rank
# (measured break-even around D=64 on an AVX512-BF16 CPU; see benchmarks/results/).
AUTO_CERTIFIED_MIN_DIM = 128


def _has_bf16_matrix_units(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    # AMX tiles, or AVX512-BF16 dot-product instructions: both run bf16 products >= 2x fp32.
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(
    precision: str, backend: str, device: torch.device, dim: int | None = None, num_codes: int | None = None
) -> str:
    """Turn ``"auto"`` and ``"certified"`` into the concrete precision the backend runs.

    ``"auto"`` picks a certified mode (low-precision screening with an exact re-rank: the same
    indices as ``"exact"``) where the backend implements it natively, the hardware has bf16 / int8
    matrix units and ``dim`` is large enough for the screen to pay; else ``"exact"``. Backends
    with several screens (the CPU: ``"certified-bf16"``, ``"certified-int8"``) choose one for
    ``"certified"`` and ``"auto"`` from measured crossovers (``choose_certified``); on backends
    with one certified mode, ``"certified-bf16"`` / ``"certified-int8"`` run it (same answers).
    """
    check_precision(precision)
    from .backends import _IMPLS

    impl = _IMPLS.get(backend, {}).get("nearest_code")
    native, choose = getattr(impl, "precisions", ()), getattr(impl, "choose_certified", None)
    if precision.startswith("certified-") and precision not in native:
        return "certified"
    if precision == "certified" and choose is not None:
        return choose(dim, num_codes)
    if precision != "auto":
        return precision
    if choose is not None:
        return choose(dim, num_codes, for_auto=True)
    certified_native = "certified" in native
    big_enough = dim is None or dim >= AUTO_CERTIFIED_MIN_DIM
    return "certified" if certified_native and big_enough and _has_bf16_matrix_units(device) else "exact"


def resolve_backend_precision(backend: str, precision: str, device: torch.device, dim: int | None = None) -> tuple[str, str]:
    """``(backend, precision)`` with ``"auto"`` resolved for ``device`` and feature size ``dim``."""
    if torch.compiler.is_compiling():
        return _resolve_while_tracing(backend, precision, device, dim)
    b = resolve(backend, device)
    return b, resolve_precision(precision, b, device, dim)


# Evaluated once while torch.compile traces and baked into the graph: the answer depends only on
# the arguments and the machine, and finding it imports backends and reads /proc/cpuinfo, which
# dynamo cannot trace.
@torch.compiler.assume_constant_result
def _resolve_while_tracing(backend: str, precision: str, device: torch.device, dim: int | None) -> tuple[str, str]:
    b = resolve(backend, device)
    return b, resolve_precision(precision, b, device, dim)


def _prep_search(x: Tensor, codebook: Tensor, cb_name: str, cb_ndim: int, cb_hint: str, backend: str, precision: str):
    check_float("x", x, 2, " (N, D)")
    check_float(cb_name, codebook, cb_ndim, cb_hint)
    device = check_same_device(x=x, **{cb_name: codebook})
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch: expected at least one row (N >= 1)")
    if codebook.shape[-2] == 0:
        raise ValueError(f"{cb_name} is empty: expected at least one code (K >= 1)")
    if x.shape[1] != codebook.shape[-1]:
        raise ValueError(f"x has D={x.shape[1]} but {cb_name} has D={codebook.shape[-1]}: they must match")
    check_search_input("x", x)
    check_search_input(cb_name, codebook)
    b, p = resolve_backend_precision(backend, precision, device, x.shape[1])
    return x.contiguous(), codebook.contiguous(), b, p


def nearest_code(
    x: Tensor, codebook: Tensor, *, backend: str = "auto", precision: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Nearest code of each row.

    Args:
        x: (N, D) vectors.
        codebook: (K, D) codes.
        backend: ``"auto"`` or a name from :func:`available_backends`.
        precision: ``"exact"`` (fp32), ``"certified"`` (low-precision screening + exact re-rank,
            same result as exact; ``"certified-bf16"`` / ``"certified-int8"`` pick the screen,
            docs/certified.md), ``"bf16"`` (approximate, fastest) or ``"auto"`` (the default:
            certified where it is faster, else exact — see :func:`resolve_precision`).

    Returns:
        ``(indices (N,) int64, sqdist (N,) float32)``; exact ties resolve to the lowest index.
    """
    x, codebook, b, p = _prep_search(x, codebook, "codebook", 2, " (K, D)", backend, precision)
    return _ops.nearest_code(x, codebook, b, p)


def rvq_encode(
    x: Tensor, codebooks: Tensor, *, backend: str = "auto", precision: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Residual quantization through all stages in one call.

    Args:
        x: (N, D) vectors.
        codebooks: (Q, K, D), one codebook per stage.

    Returns:
        ``(indices (N, Q) int64, quantized (N, D) float32)`` where ``quantized`` is the sum of the
        chosen codes.
    """
    x, codebooks, b, p = _prep_search(x, codebooks, "codebooks", 3, " (Q, K, D)", backend, precision)
    if codebooks.shape[0] == 0:
        raise ValueError("codebooks has no stages: expected Q >= 1")
    return _ops.rvq_encode(x, codebooks, b, p)


def _prep_grouped(x: Tensor, codebooks: Tensor, cb_ndim: int, cb_hint: str, backend: str, precision: str):
    check_float("x", x, 3, " (G, N, D)")
    check_float("codebooks", codebooks, cb_ndim, cb_hint)
    device = check_same_device(x=x, codebooks=codebooks)
    if x.shape[0] == 0:
        raise ValueError("x has no groups: expected G >= 1")
    if codebooks.shape[0] != x.shape[0]:
        raise ValueError(f"x has G={x.shape[0]} groups but codebooks has {codebooks.shape[0]}: they must match")
    if x.shape[1] == 0:
        raise ValueError("x is an empty batch: expected at least one row per group (N >= 1)")
    if cb_ndim == 4 and codebooks.shape[1] == 0:
        raise ValueError("codebooks has no stages: expected Q >= 1")
    if codebooks.shape[-2] == 0:
        raise ValueError("codebooks is empty: expected at least one code (K >= 1)")
    if x.shape[2] != codebooks.shape[-1]:
        raise ValueError(f"x has D={x.shape[2]} but codebooks has D={codebooks.shape[-1]}: they must match")
    check_search_input("x", x)
    check_search_input("codebooks", codebooks)
    b, p = resolve_backend_precision(backend, precision, device, x.shape[2])
    return x.contiguous(), codebooks.contiguous(), b, p


def grouped_nearest_code(
    x: Tensor, codebooks: Tensor, *, backend: str = "auto", precision: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Nearest code of each row of each group, all groups in one call.

    Args:
        x: (G, N, D): group ``g``'s rows are ``x[g]``.
        codebooks: (G, K, D): group ``g`` searches ``codebooks[g]`` only.
        backend, precision: as for :func:`nearest_code`.

    Returns:
        ``(indices (G, N) int64, sqdist (G, N) float32)``, equal to :func:`nearest_code` on each
        group's ``(x[g], codebooks[g])``; exact ties resolve to the lowest index.
    """
    x, codebooks, b, p = _prep_grouped(x, codebooks, 3, " (G, K, D)", backend, precision)
    return _ops.grouped_nearest_code(x, codebooks, b, p)


def grouped_rvq_encode(
    x: Tensor, codebooks: Tensor, *, backend: str = "auto", precision: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Residual quantization of every group through all its stages, all groups in one call.

    Args:
        x: (G, N, D): group ``g``'s rows are ``x[g]`` (groups lead, so each group is one
            contiguous block; a (N, G*D) feature split into groups is
            ``x.view(N, G, D).transpose(0, 1)``).
        codebooks: (G, Q, K, D): group ``g``'s stage codebooks.
        backend, precision: as for :func:`rvq_encode`.

    Returns:
        ``(indices (G, N, Q) int64, quantized (G, N, D) float32)``, equal to :func:`rvq_encode`
        on each group's ``(x[g], codebooks[g])``.
    """
    x, codebooks, b, p = _prep_grouped(x, codebooks, 4, " (G, Q, K, D)", backend, precision)
    return _ops.grouped_rvq_encode(x, codebooks, b, p)


def rvq_decode(indices: Tensor, codebooks: Tensor, *, backend: str = "auto") -> Tensor:
    """Sum of the codes named by ``indices`` (N, Q) over the stages of ``codebooks`` (Q, K, D).

    ``-1`` in ``indices`` means "stage not used" and contributes nothing.
    """
    check_float("codebooks", codebooks, 3, " (Q, K, D)")
    check_indices("indices", indices, codebooks.shape[1], 2, " (N, Q)")
    device = check_same_device(indices=indices, codebooks=codebooks)
    check_finite("codebooks", codebooks)
    if indices.shape[1] > codebooks.shape[0]:
        raise ValueError(
            f"indices has {indices.shape[1]} stages but codebooks only {codebooks.shape[0]}"
        )
    b, _ = resolve_backend_precision(backend, "exact", device)
    cbs = codebooks[: indices.shape[1]].contiguous()
    return _ops.rvq_decode(indices.long().contiguous(), cbs, b)


def ema_stats(x: Tensor, indices: Tensor, num_codes: int, *, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Per-code assignment counts (K,) and vector sums (K, D) in one pass (``-1`` rows ignored)."""
    check_float("x", x, 2, " (N, D)")
    if not isinstance(num_codes, int) or num_codes < 1:
        raise ValueError(f"num_codes must be a positive int, got {num_codes!r}")
    check_indices("indices", indices, num_codes, 1, " (N,)")
    if indices.shape[0] != x.shape[0]:
        raise ValueError(f"indices has {indices.shape[0]} rows but x has {x.shape[0]}")
    device = check_same_device(x=x, indices=indices)
    check_finite("x", x)
    b, _ = resolve_backend_precision(backend, "exact", device)
    return _ops.ema_stats(x.contiguous(), indices.long().contiguous(), num_codes, b)
