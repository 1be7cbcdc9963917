"""Registers the C++ CPU extension (``rvqfast._C``) kernels for the rvqfast ops.

Importing this module raises ImportError when the extension is not built; the backend registry
records that and ``backend="auto"`` falls back to the reference with one warning.

Precisions: ``"exact"`` (fp32 GEMM tiles + fused arg-min); the certified modes, which screen all
distances in low precision with a rigorous error bound and re-rank the surviving candidates
exactly, so they return the exact answer (docs/certified.md): ``"certified-bf16"`` (bf16 GEMM),
``"certified-int8"`` (per-row symmetric int8 quantization, exact int32 GEMM: rvqfast's
AVX512-VNNI kernel on CPUs without AMX, oneDNN otherwise) and ``"certified"`` (whichever of the two :func:`choose_certified`
measures faster for the shape and CPU); and ``"bf16"`` (screening only: approximate, fastest).
"""
from __future__ import annotations

import functools

from .. import _C  # ImportError here means "not built": the registry records why
from . import register, register_extension

__all__ = [
    "certified_stats",
    "reset_certified_stats",
    "set_candidate_cap",
    "simd_level",
    "int8_gemm_kernel",
    "crossovers",
    "choose_certified",
    "int8_screen_available",
    "clear_codebook_cache",
]

nearest_code, rvq_encode, rvq_decode, ema_stats = register_extension(
    "cpu", _C, ("exact", "certified", "certified-bf16", "certified-int8", "bf16")
)

# Crossovers measured on an AMD EPYC (Zen 4, 2 cores, AVX512-BF16 + AVX512-VNNI, no AMX), N=3136,
# Q=6, in thread CPU time of single-threaded runs (wall time on the shared machine was too noisy):
# see docs/certified.md "Choosing the screen".
# With oneDNN's int8 GEMM (ATen _int_mm; CPUs with AMX, or RVQFAST_INT8_GEMM=onednn): below
# AUTO_MIN_DIM "auto" stays exact (at D=32 the screens only tie with it); from INT8_MIN_DIM on the
# int8 screen beats bf16 despite its looser bound (at D=64 they tie).
AUTO_MIN_DIM = 64
INT8_MIN_DIM = 128
# With rvqfast's VNNI kernel (int8_gemm_kernel() == "vnni") the int8 screen beats bf16 and exact
# from D=32 on (K=512: D=32 7.7 ms vs bf16 8.3 and exact 8.8; D=64 9.8 vs 11.6 and 15.1).
VNNI_AUTO_MIN_DIM = 32
VNNI_INT8_MIN_DIM = 32


def crossovers() -> tuple[int, int]:
    """``(auto_min_dim, int8_min_dim)`` for the int8 GEMM in use (:func:`int8_gemm_kernel`)."""
    if _C.int8_gemm_kernel() == "vnni":
        return VNNI_AUTO_MIN_DIM, VNNI_INT8_MIN_DIM
    return AUTO_MIN_DIM, INT8_MIN_DIM


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[-1].split())


def _has_int8_dot() -> bool:
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _has_bf16_dot() -> bool:
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def int8_screen_available(dim: int) -> bool:
    """Whether ``"certified-int8"`` really screens in int8 for vectors of ``dim``.

    It needs an exact int8 GEMM -- the hand-written VNNI kernel where it runs
    (:func:`int8_gemm_kernel`), else oneDNN's if it returned exact int32 sums on a saturation probe
    (checked once) -- and ``dim <= 32768`` (int32 sums must not wrap). Otherwise ``"certified-int8"`` runs the bf16
    screen, with the same exact answers.
    """
    return bool(_C.int8_screen_ok(int(dim)))


def choose_certified(dim: int | None, num_codes: int | None = None, for_auto: bool = False) -> str:
    """The certified screen to use for vectors of ``dim`` against ``num_codes`` codes.

    Returns ``"certified-int8"`` where the CPU has int8 dot-product instructions (VNNI / AMX) and
    ``dim`` reaches the int8 crossover of :func:`crossovers`, else ``"certified-bf16"``. With
    ``for_auto`` (``precision="auto"``) it returns ``"exact"`` below the auto crossover or
    without bf16 / int8 dot-product units, where no screen is faster than the exact search.
    ``num_codes`` is accepted for future crossovers; the measured ones depend on ``dim`` only
    (docs/certified.md).
    """
    d = 1 << 30 if dim is None else int(dim)
    auto_min, int8_min = crossovers()
    int8 = _has_int8_dot() and d >= int8_min and int8_screen_available(min(d, 32768))
    if for_auto and (d < auto_min or not (int8 or _has_bf16_dot())):
        return "exact"
    return "certified-int8" if int8 else "certified-bf16"


nearest_code.choose_certified = rvq_encode.choose_certified = choose_certified


def _grouped_cpu_ops():
    """The C++ grouped kernels (kernels/cpu/grouped.cpp: one call into the extension for all
    groups and stages), or per-group loops over the single-group kernels when the extension
    predates them."""
    from .grouped import register_per_group

    if not hasattr(_C, "grouped_rvq_encode"):
        return register_per_group("cpu", nearest_code, rvq_encode, "one C++ call per group (old extension build).")

    def grouped_nearest_code(x, codebooks, precision):
        return _C.grouped_nearest_code(x, codebooks, precision)

    def grouped_rvq_encode(x, codebooks, precision):
        return _C.grouped_rvq_encode(x, codebooks, precision)

    grouped_nearest_code.__doc__ = "C++: each group's block searched in place, one GIL release for all groups."
    grouped_rvq_encode.__doc__ = "C++: each group's rows through its fused all-stages encode, one GIL release for all groups."
    for fn in (grouped_nearest_code, grouped_rvq_encode):
        fn.precisions, fn.choose_certified = nearest_code.precisions, choose_certified
        register("cpu", fn.__name__)(fn)
    return grouped_nearest_code, grouped_rvq_encode


grouped_nearest_code, grouped_rvq_encode = _grouped_cpu_ops()


def _train_step_ops() -> None:
    """The training step's row kernels (kernels/cpu/train_step.cpp); an extension built before
    them leaves the reference implementations in place."""
    if not hasattr(_C, "residual_update"):
        return

    @register("cpu", "residual_update")
    def residual_update(r, codebook, indices, out, counts, sums):
        """C++: gather, subtraction and the EMA statistics in one pass over the rows."""
        _C.residual_update(r, codebook, indices, out, counts, sums)

    @register("cpu", "rvq_stages_grad")
    def rvq_stages_grad(residuals, g, sqnorm, code_sq, dist_sq, commit, rotation):
        """C++: each row's dots, coefficients and combination in one pass over the residuals."""
        return _C.rvq_stages_grad(residuals, g, sqnorm, code_sq, dist_sq, commit, rotation)


_train_step_ops()


def certified_stats() -> dict[str, float]:
    """Counters of the certified search (both screens) since the last :func:`reset_certified_stats`.

    Returns:
        ``{"rows": row searches screened, "overflow_rows": rows whose candidate set exceeded the
        cap and were searched exactly instead, "candidates": total candidates re-ranked,
        "mean_candidates": candidates / rows, "max_candidates": the largest candidate count of a
        row (capped at K)}``. A row of an ``rvq_encode`` counts once per stage.
    """
    return dict(_C.certified_stats())


def reset_certified_stats() -> None:
    """Zero the counters read by :func:`certified_stats`."""
    _C.reset_certified_stats()


def set_candidate_cap(cap: int) -> None:
    """Per-row candidate cap of the certified search (``0`` = automatic, ``max(16, K // 16)``).

    Rows with more candidates than the cap are counted as ``overflow_rows``; their candidates are
    re-ranked in place like any others (fp64 beyond 32 candidates: still exact, only slower).
    """
    if not isinstance(cap, int) or cap < 0:
        raise ValueError(f"cap must be a non-negative int, got {cap!r}")
    _C.set_candidate_cap(cap)


def clear_codebook_cache() -> None:
    """Forget the prepared codebooks (centred, quantized copies and bound coefficients).

    The cache is keyed by the codes' bytes, so it never serves stale codes; clearing it only
    matters to measure the preparation cost.
    """
    _C.clear_codebook_cache()


def simd_level() -> str:
    """``"avx512"`` or ``"scalar"``: which vector kernels this CPU runs."""
    return _C.simd_level()


def int8_gemm_kernel() -> str:
    """Which GEMM the certified int8 screen uses: ``"vnni"`` (rvqfast's AVX512-VNNI kernel on a
    codebook packed once, chosen on CPUs with AVX512-VNNI and without AMX) or ``"onednn"``
    (ATen's ``_int_mm``; also forced by ``RVQFAST_INT8_GEMM=onednn``)."""
    return _C.int8_gemm_kernel()
