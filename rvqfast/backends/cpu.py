"""Registers the C++ CPU extension (``rvqfast._C``) kernels for the rvqfast ops.

Importing this module raises ImportError when the extension is not built; the backend registry
records that and ``backend="auto"`` falls back to the reference with one warning.

Precisions: ``"exact"`` (fp32 GEMM tiles + fused arg-min), ``"certified"`` (bf16 screening with a
rigorous error bound, fp64 re-rank of the surviving candidates; returns the exact answer — see
docs/certified.md) and ``"bf16"`` (screening only: approximate, fastest).
"""
from __future__ import annotations

from .. import _C  # ImportError here means "not built": the registry records why
from . import register_extension

__all__ = ["certified_stats", "reset_certified_stats", "set_candidate_cap", "simd_level"]

nearest_code, rvq_encode, rvq_decode, ema_stats = register_extension("cpu", _C, ("exact", "certified", "bf16"))


def certified_stats() -> dict[str, float]:
    """Counters of the certified search since the last :func:`reset_certified_stats`.

    Returns:
        ``{"rows": row searches screened, "overflow_rows": rows whose candidate set exceeded the
        cap and were searched exactly instead, "candidates": total candidates re-ranked,
        "mean_candidates": candidates / rows}``. A row of an ``rvq_encode`` counts once per stage.
    """
    return dict(_C.certified_stats())


def reset_certified_stats() -> None:
    """Zero the counters read by :func:`certified_stats`."""
    _C.reset_certified_stats()


def set_candidate_cap(cap: int) -> None:
    """Per-row candidate cap of the certified search (``0`` = automatic, ``max(16, K // 16)``).

    Rows with more candidates than the cap fall back to the exact fp32 search (still exact, only
    slower); a small cap is how tests exercise that path.
    """
    if not isinstance(cap, int) or cap < 0:
        raise ValueError(f"cap must be a non-negative int, got {cap!r}")
    _C.set_candidate_cap(cap)


def simd_level() -> str:
    """``"avx512"`` or ``"scalar"``: which vector kernels this CPU runs."""
    return _C.simd_level()

