"""The ``triton`` backend: fused Triton kernels for every rvqfast op.

Runs CUDA tensors on a GPU, and CPU tensors under ``TRITON_INTERPRET=1`` (how CI checks the
kernels without a GPU; the variable must be set before triton is first imported). Importing this
module raises ImportError when triton is missing, or when there is neither a CUDA device nor the
interpreter, so the registry records the backend as unavailable with the reason.

Precisions: ``"exact"`` runs the exact fp32 (IEEE ``tl.dot``) search, fused over all stages.
``"certified"`` screens with bf16 tensor-core dots and rigorous per-(row, code) error bounds, and
searches exactly (fp32) only the rows whose winner the bounds cannot prove: the same answer as
``"exact"`` up to fp32 near-ties (docs/gpu.md). ``"bf16"`` screens with bf16 dots and is
approximate.
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
from ..grouped import register_per_group  # noqa: E402
from . import codes, search  # noqa: E402
from .config import FIXED_CONFIG, INTERPRET, INTERPRET_META, MAX_FUSED_D, MAX_SEARCH_BLOCK_D, fixed_config  # noqa: E402

__all__ = ["nearest_code", "rvq_encode", "rvq_decode", "ema_stats", "centred", "certified_nearest", "certified_stats"]


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


def _launch_rows(kernel, tuned, n: int, args: tuple, block_d: int, encode: bool = False, **const) -> None:
    """Launch a row-blocked kernel over ``n`` rows: the fixed interpreter tiles under
    TRITON_INTERPRET=1, one fixed tiling with RVQFAST_TRITON_FIXED_CONFIG=1, else its autotuned
    variant (which picks BLOCK_N and BLOCK_K). ``const``: the kernel's other constexprs."""
    if INTERPRET:
        grid = (triton.cdiv(n, INTERPRET_META["BLOCK_N"]),)
        kernel[grid](*args, BLOCK_D=block_d, **const, **INTERPRET_META)
    elif FIXED_CONFIG:
        cfg = fixed_config(encode, block_d)
        grid = (triton.cdiv(n, cfg.kwargs["BLOCK_N"]),)
        kernel[grid](*args, BLOCK_D=block_d, **const, **cfg.kwargs, num_warps=cfg.num_warps,
                     num_stages=cfg.num_stages)
    else:
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
        tuned[grid](*args, BLOCK_D=block_d, **const)


def _launch_nearest(x: Tensor, codebook: Tensor, use_bf16: int) -> tuple[Tensor, Tensor]:
    n, d = x.shape
    k = codebook.shape[0]
    cb, mu, cc, cn = centred(codebook)
    idx = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    block_d = min(_pow2(d), MAX_SEARCH_BLOCK_D)
    _launch_rows(search.nearest_kernel, search.nearest_tuned, n,
                 (x, mu, cc, cn, cb, idx, dist, n, k, d), block_d, USE_BF16=use_bf16)
    return idx, dist


_V = 2.0**-24  # fp32 unit roundoff
# Rows per chunk when preparing the bf16 rows (bounds the fp32 temporaries to ~16 MiB).
_PREP_ELEMS = 1 << 22


def _gamma(m: float, u: float = _V) -> float:
    return m * u / (1 - m * u)


def _norm_up(sq_sum: Tensor, m: float) -> Tensor:
    """Upper bound of sqrt(S) from an fp32 sum ``sq_sum`` of m-deep non-negative terms (any
    order): S <= (sigma + m 2^-149) / (1 - gamma_m); evaluated in fp64 with 1e-6 to spare."""
    s = (sq_sum.double() + m * 2.0**-149) / (1 - _gamma(m))
    return (s.sqrt() * (1 + 1e-6)).float()


def _canonical(cb: Tensor) -> Tensor:
    """(K,) bool: True for the first copy of each distinct code (copies are equally near, and the
    tie rule answers the lowest index, so only first copies are screened)."""
    k = cb.shape[0]
    _, inv = torch.unique(cb, dim=0, return_inverse=True)
    ar = torch.arange(k, device=cb.device)
    first = torch.full((int(inv.max()) + 1,), k, device=cb.device, dtype=ar.dtype).scatter_reduce(0, inv, ar, "amin")
    return first[inv] == ar


def certified_nearest(x: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest code per row, exact up to fp32 near-ties, screened with bf16 tensor-core dots.

    With a = fl32(x − μ), b_k = fl32(c_k − μ) (centred as in :func:`centred`), ā, b̄_k their
    bf16 roundings, and T_k = ‖x − c_k‖² − ‖x − μ‖², the screen value
    s_k = fl32(‖b_k‖² − 2 ā·b̄_k) satisfies |s_k − T_k| <= E_k with
    E_k = e_a p_k + Ā q_k + w_k + r (e_a >= ‖a − ā‖, Ā >= ‖ā‖ and r per row; p, q, w per code:
    the CUDA kernel's bound, derived in docs/gpu.md), inflated for its own fp32 evaluation. The
    kernel keeps the 4 smallest lower bounds s_k − E_k per row, re-ranks those 4 codes by their
    fp32 distance, and certifies the row when an upper bound of the winner's T is below the 4th
    lower bound (every other code is then provably farther). Other rows are searched by the
    exact fp32 kernel. Returns (indices, fp32 squared distances).
    """
    n, d = x.shape
    k = codebook.shape[0]
    cb, mu, cc, cn = centred(codebook)
    dev = x.device
    m = float(d + 6)
    dpad = d + 128  # D rounded up to the D chunk, generously
    g_tc = _gamma(2 * (2 * dpad + 16), 2 * _V)  # tensor-core fp32 accumulation, truncating adds
    up = 1 + 1e-6
    # Per code (fp64, rounded up by 1e-6 when stored as fp32).
    ccb = cc.to(torch.bfloat16)
    ccb_f = ccb.float()
    big_b = _norm_up(cn, m).double()
    bbar = _norm_up((ccb_f * ccb_f).sum(1), m).double()
    e_c = _norm_up(((cc - ccb_f) ** 2).sum(1), m).double()
    cp = (2 * big_b * up).float()
    cq = ((2 * e_c + (2 * g_tc + 2.01 * _V) * bbar) * up).float()
    cw = ((_gamma(m) + 5.1 * _V) * big_b * big_b * up).float()
    cn_screen = torch.where(_canonical(cb), cn, torch.full_like(cn, float("inf"))).contiguous()
    # Per row, in chunks: the bf16 centred rows, e_a, Ā, r and a lower bound of ‖x − μ‖².
    xb = torch.empty(n, d, dtype=torch.bfloat16, device=dev)
    ea = torch.empty(n, dtype=torch.float32, device=dev)
    abar, rr, plo = torch.empty_like(ea), torch.empty_like(ea), torch.empty_like(ea)
    step = max(1, _PREP_ELEMS // d)
    slack = (2 * dpad + 64) * 2.0**-124
    for s0 in range(0, n, step):
        sl = slice(s0, s0 + step)
        a = x[sl].float() - mu
        ab = a.to(torch.bfloat16)
        xb[sl] = ab
        abf = ab.float()
        ea[sl] = _norm_up(((a - abf) ** 2).sum(1), m)
        abar[sl] = _norm_up((abf * abf).sum(1), m)
        sa = (a * a).sum(1).double()
        big_a = _norm_up(sa, m).double()
        rr[sl] = ((2.01 * _V * big_a * big_a + slack) * up).float()
        # ‖x − μ‖² >= ‖a‖² / (1 + v)², ‖a‖² >= (σ − m 2^-149) / (1 + γ_m).
        low = ((sa - m * 2.0**-149).clamp(min=0) / (1 + _gamma(m)) / (1 + _V) ** 2) * (1 - 1e-6)
        plo[sl] = low.float()
    # Winner's ‖x − c‖² <= (s + α)(1 + 2η) for its fp32 sum s (η = γ_{D+6} + 3v, α underflow);
    # the extra η and α cover the kernel's fp32 evaluation of best·scale + add − plo.
    eta = _gamma(m) + 3 * _V
    up_scale, up_add = 1 + 3 * eta, 4 * (d + 32) * 2.0**-149 * (1 + 3 * eta) + 2.0**-126
    idx = torch.empty(n, dtype=torch.int64, device=dev)
    dist = torch.empty(n, dtype=torch.float32, device=dev)
    ok = torch.empty(n, dtype=torch.int8, device=dev)
    block_d = min(_pow2(d), MAX_SEARCH_BLOCK_D)
    args = (xb, ccb, cn_screen, cp, cq, cw, ea, abar, rr, plo, x, cb, idx, dist, ok, n, k, d, up_scale, up_add)
    _launch_rows(search.certified_screen_kernel, search.certified_tuned, n, args, block_d, EMULATE=INTERPRET)
    bad = (ok == 0).nonzero().squeeze(1)
    _STATS["rows"] += n
    if bad.numel():
        _STATS["fallback_rows"] += int(bad.numel())
        idx[bad], dist[bad] = _launch_nearest(x[bad], codebook, 0)
    return idx, dist


_STATS = {"rows": 0, "fallback_rows": 0}


def certified_stats(reset: bool = False) -> dict[str, int]:
    """Rows searched by ``precision="certified"`` and how many needed the exact fallback."""
    out = dict(_STATS)
    if reset:
        _STATS.update(rows=0, fallback_rows=0)
    return out


@register("triton", "nearest_code")
def nearest_code(x: Tensor, codebook: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    """Fused nearest-code search; see :mod:`rvqfast.backends.triton.search`."""
    if precision == "certified":
        return certified_nearest(x, codebook)
    return _launch_nearest(x, codebook, _bf16_mode(precision))


nearest_code.precisions = ("exact", "certified", "bf16")


@register("triton", "rvq_encode")
def rvq_encode(x: Tensor, codebooks: Tensor, precision: str) -> tuple[Tensor, Tensor]:
    """All stages in one launch when D <= 1024 (residual kept on chip); per stage otherwise, and
    for ``"certified"`` (bf16 screen + exact search of the uncertified rows, per stage)."""
    n, d = x.shape
    q, k, _ = codebooks.shape
    if precision == "certified":
        return rvq_encode_by_stage(x, codebooks, certified_nearest)
    use_bf16 = _bf16_mode(precision)
    if d > MAX_FUSED_D or q * k * d >= 2**31:
        return _rvq_encode_per_stage(x, codebooks, use_bf16)
    cb, mu, cc, cn = centred(codebooks)
    idx = torch.empty(n, q, dtype=torch.int64, device=x.device)
    quant = torch.empty(n, d, dtype=torch.float32, device=x.device)
    _launch_rows(search.rvq_encode_kernel, search.rvq_encode_tuned, n,
                 (x, mu, cc, cn, cb, idx, quant, n, k, d, q), _pow2(d), encode=True, USE_BF16=use_bf16)
    return idx, quant


rvq_encode.precisions = ("exact", "certified", "bf16")


def _rvq_encode_per_stage(x: Tensor, codebooks: Tensor, use_bf16: int) -> tuple[Tensor, Tensor]:
    # D too large to keep the residual on chip: one fused search launch per stage.
    return rvq_encode_by_stage(x, codebooks, lambda r, cb: _launch_nearest(r, cb, use_bf16))


# No grouped Triton kernel yet: the grouped ops loop over groups, one fused all-stages
# rvq_encode launch (or per-stage search) per group.
grouped_nearest_code, grouped_rvq_encode = register_per_group(
    "triton", nearest_code, rvq_encode, "one Triton nearest_code / rvq_encode call per group (no grouped kernel)."
)


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
