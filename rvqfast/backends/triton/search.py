"""Triton kernels for the nearest-code search and the fused multi-stage RVQ encode.

Both kernels keep a block of rows per program and stream the codebook through in tiles of
``BLOCK_K`` codes; the distance tile ``‖c−μ‖² − 2 (x−μ)·(c−μ)`` lives in registers only and is
folded into a running (min, argmin) per row, so no N×K matrix ever reaches memory.

Exactness: ``tl.dot`` runs with ``input_precision="ieee"`` (true fp32 products, no TF32), so the
candidate distances carry the same kind of rounding as the reference backend's fp32 ``addmm``;
only the summation order differs, which can flip an index on a near-tie and nowhere else. The
winner's squared distance is then recomputed directly as ``‖x − c‖²`` (no cancellation). With
``precision="bf16"`` the dot takes bf16 operands (fp32 accumulate) and nothing is certified.

Ties: within a tile ``tl.argmin`` returns the first minimum; across tiles a later tile only wins
with a strictly smaller distance, so exact ties resolve to the lowest index like the reference.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .config import INTERPRET, search_configs, encode_configs, prune_encode_configs


@triton.jit
def _dot(a, b, USE_BF16: tl.constexpr):
    """fp32 (IEEE) product; USE_BF16=1: bf16 operands on the tensor cores, fp32 accumulate;
    USE_BF16=2: the same rounding emulated in fp32 (the interpreter's bf16 dot is broken)."""
    if USE_BF16 == 1:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
    elif USE_BF16 == 2:
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _tile_dists(xc, cc_ptr, cn_ptr, k0, K, D, ds, dmask, BLOCK_K: tl.constexpr, USE_BF16: tl.constexpr):
    """Distances (BLOCK_N, BLOCK_K) of centred rows ``xc`` to codes k0..k0+BLOCK_K (inf past K)."""
    cols = k0 + tl.arange(0, BLOCK_K)
    cmask = cols < K
    # Loaded transposed, (BLOCK_D, BLOCK_K), so the dot needs no in-register transpose.
    ct = tl.load(cc_ptr + cols[None, :].to(tl.int64) * D + ds[:, None], mask=dmask[:, None] & cmask[None, :], other=0.0)
    dots = _dot(xc, ct, USE_BF16)
    cn = tl.load(cn_ptr + cols, mask=cmask, other=0.0)
    dist = cn[None, :] - 2.0 * dots
    return tl.where(cmask[None, :], dist, float("inf")), cols


@triton.jit
def _fold_min(dist, best, besti, k0):
    """Fold one tile into the running (min, argmin); ties keep the earlier (lower) index."""
    tmin = tl.min(dist, axis=1)
    targ = tl.argmin(dist, axis=1).to(tl.int32) + k0
    better = tmin < best
    return tl.where(better, tmin, best), tl.where(better, targ, besti)


@triton.jit
def nearest_kernel(
    x_ptr, mu_ptr, cc_ptr, cn_ptr, cb_ptr, idx_ptr, dist_ptr,
    N, K, D,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, USE_BF16: tl.constexpr,
):
    """One program = BLOCK_N rows; D is streamed in BLOCK_D chunks so any D works."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    besti = tl.zeros([BLOCK_N], tl.int32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        cmask = cols < K
        dots = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            dmask = ds < D
            m2 = rmask[:, None] & dmask[None, :]
            xt = tl.load(x_ptr + rows64[:, None] * D + ds[None, :], mask=m2, other=0.0).to(tl.float32)
            mu = tl.load(mu_ptr + ds, mask=dmask, other=0.0)
            xc = tl.where(m2, xt - mu[None, :], 0.0)
            ct = tl.load(cc_ptr + cols[None, :].to(tl.int64) * D + ds[:, None], mask=dmask[:, None] & cmask[None, :], other=0.0)
            dots += _dot(xc, ct, USE_BF16)
        cn = tl.load(cn_ptr + cols, mask=cmask, other=0.0)
        dist = tl.where(cmask[None, :], cn[None, :] - 2.0 * dots, float("inf"))
        best, besti = _fold_min(dist, best, besti, k0)
    # Exact squared distance of the winner, computed directly (no expansion, no cancellation).
    sq = tl.zeros([BLOCK_N], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        m2 = rmask[:, None] & (ds < D)[None, :]
        xt = tl.load(x_ptr + rows64[:, None] * D + ds[None, :], mask=m2, other=0.0).to(tl.float32)
        c = tl.load(cb_ptr + besti[:, None].to(tl.int64) * D + ds[None, :], mask=m2, other=0.0)
        diff = xt - c
        sq += tl.sum(diff * diff, axis=1)
    tl.store(idx_ptr + rows, besti.to(tl.int64), mask=rmask)
    tl.store(dist_ptr + rows, sq, mask=rmask)


@triton.jit
def rvq_encode_kernel(
    x_ptr, mu_ptr, cc_ptr, cn_ptr, cb_ptr, idx_ptr, quant_ptr,
    N, K, D, Q,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, USE_BF16: tl.constexpr,
):
    """All Q stages in one launch: the residual of BLOCK_N rows stays in registers throughout.

    Needs BLOCK_D >= D (the caller only uses it for D <= 1024). Stage q searches the centred
    codebook q (``cc``, ``cn``, ``mu``), then subtracts the chosen original code (``cb``) from
    the residual and adds it to ``quantized`` in fp32, in the same order as the reference.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    ds = tl.arange(0, BLOCK_D)
    dmask = ds < D
    m2 = rmask[:, None] & dmask[None, :]
    res = tl.load(x_ptr + rows64[:, None] * D + ds[None, :], mask=m2, other=0.0).to(tl.float32)
    quant = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for q in range(0, Q):
        # Q*K*D < 2**31 is checked by the caller, so the stage offset fits in int32.
        stage = q * K * D
        mu = tl.load(mu_ptr + q * D + ds, mask=dmask, other=0.0)
        rc = tl.where(m2, res - mu[None, :], 0.0)
        best = tl.full([BLOCK_N], float("inf"), tl.float32)
        besti = tl.zeros([BLOCK_N], tl.int32)
        for k0 in range(0, K, BLOCK_K):
            dist, cols = _tile_dists(rc, cc_ptr + stage, cn_ptr + q * K, k0, K, D, ds, dmask, BLOCK_K, USE_BF16)
            best, besti = _fold_min(dist, best, besti, k0)
        code = tl.load(cb_ptr + stage + besti[:, None].to(tl.int64) * D + ds[None, :], mask=m2, other=0.0)
        res = res - code
        quant = quant + code
        tl.store(idx_ptr + rows64 * Q + q, besti.to(tl.int64), mask=rmask)
    tl.store(quant_ptr + rows64[:, None] * D + ds[None, :], quant, mask=m2)



@triton.jit
def _insert4(v, j, l0, l1, l2, l3, i0, i1, i2, i3):
    """Insert (v, j) into the sorted per-row list l0 <= l1 <= l2 <= l3 (the largest falls off).
    Strict < keeps an earlier (lower-index) entry ahead of an equal newcomer."""
    c0 = v < l0
    c1 = v < l1
    c2 = v < l2
    c3 = v < l3
    n3 = tl.where(c2, l2, tl.where(c3, v, l3))
    m3 = tl.where(c2, i2, tl.where(c3, j, i3))
    n2 = tl.where(c1, l1, tl.where(c2, v, l2))
    m2 = tl.where(c1, i1, tl.where(c2, j, i2))
    n1 = tl.where(c0, l0, tl.where(c1, v, l1))
    m1 = tl.where(c0, i0, tl.where(c1, j, i1))
    n0 = tl.where(c0, v, l0)
    m0 = tl.where(c0, j, i0)
    return n0, n1, n2, n3, m0, m1, m2, m3


@triton.jit
def _exact_sqdist(x_ptr, cb_ptr, rows64, rmask, j, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """fp32 ||x - c_j||^2 per row (inf where j < 0)."""
    valid = j >= 0
    acc = tl.zeros([BLOCK_N], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        m2 = (rmask & valid)[:, None] & (ds < D)[None, :]
        xt = tl.load(x_ptr + rows64[:, None] * D + ds[None, :], mask=m2, other=0.0).to(tl.float32)
        ct = tl.load(cb_ptr + j[:, None].to(tl.int64) * D + ds[None, :], mask=m2, other=0.0)
        diff = xt - ct
        acc += tl.sum(diff * diff, axis=1)
    return tl.where(valid, acc, float("inf"))


@triton.jit
def _pick(dist, j, best, bi):
    better = (dist < best) | ((dist == best) & (j >= 0) & (j < bi))
    return tl.where(better, dist, best), tl.where(better, j, bi)


@triton.jit
def certified_screen_kernel(
    xb_ptr, cbb_ptr, cn_ptr, cp_ptr, cq_ptr, cw_ptr, ea_ptr, abar_ptr, rr_ptr, plo_ptr, x_ptr, cb_ptr,
    idx_ptr, dist_ptr, ok_ptr, N, K, D, up_scale, up_add,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, EMULATE: tl.constexpr,
):
    """BF16 screen with rigorous per-(row, code) lower bounds lb_k <= T_k, where
    T_k = ||x - c_k||^2 - ||x - mu||^2 (see :func:`rvqfast.backends.triton.certified_nearest`),
    the 4 smallest kept per row, then an exact fp32 re-rank of those 4.

    Every code not kept has lb >= L (the 4th smallest). ``ok`` = an upper bound of the winner's T
    (from its fp32 distance, ``up_scale`` / ``up_add``, minus the row's lower bound of
    ||x - mu||^2) is < L: no excluded code can be nearer. Rows with ``ok`` = 0 are searched
    exactly afterwards. xb / cbb are the centred rows and codes already rounded to bf16 (by torch,
    round to nearest), so the kernel does no rounding of its own; EMULATE widens them to fp32 for an
    IEEE dot (the same exact products, fp32 sums) because the interpreter's bf16 dot is broken.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    ea = tl.load(ea_ptr + rows, mask=rmask, other=0.0)
    abar = tl.load(abar_ptr + rows, mask=rmask, other=0.0)
    rr = tl.load(rr_ptr + rows, mask=rmask, other=0.0)
    inf = tl.full([BLOCK_N], float("inf"), tl.float32)
    none = tl.full([BLOCK_N], -1, tl.int32)
    l0, l1, l2, l3 = inf, inf, inf, inf
    i0, i1, i2, i3 = none, none, none, none
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        cmask = cols < K
        dots = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            dmask = ds < D
            xt = tl.load(xb_ptr + rows64[:, None] * D + ds[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
            ct = tl.load(cbb_ptr + cols[None, :].to(tl.int64) * D + ds[:, None], mask=dmask[:, None] & cmask[None, :],
                         other=0.0)
            if EMULATE:
                dots += tl.dot(xt.to(tl.float32), ct.to(tl.float32), input_precision="ieee")
            else:
                dots += tl.dot(xt, ct, out_dtype=tl.float32)
        cn = tl.load(cn_ptr + cols, mask=cmask, other=float("inf"))
        cp = tl.load(cp_ptr + cols, mask=cmask, other=0.0)
        cq = tl.load(cq_ptr + cols, mask=cmask, other=0.0)
        cw = tl.load(cw_ptr + cols, mask=cmask, other=0.0)
        sk = cn[None, :] - 2.0 * dots
        err = ea[:, None] * cp[None, :] + abar[:, None] * cq[None, :] + (cw[None, :] + rr[:, None])
        # Covers the fp32 rounding of err itself and of s - err (no directed rounding here).
        err = (err + 1.1920928955078125e-07 * tl.abs(sk)) * 1.0009765625
        lb = sk - err
        lb = tl.where(lb != lb, float("-inf"), lb)  # NaN: keep the code (forces the exact path)
        # Past K, and copies of an earlier code (cn = +inf), are not candidates.
        lb = tl.where((cmask & (cn < float("inf")))[None, :], lb, float("inf"))
        for _ in tl.static_range(4):  # the tile's 4 smallest, lowest index first on ties
            t = tl.min(lb, axis=1)
            a = tl.argmin(lb, axis=1).to(tl.int32) + k0
            lb = tl.where(cols[None, :] == a[:, None], float("inf"), lb)
            a = tl.where(t < float("inf"), a, -1)
            l0, l1, l2, l3, i0, i1, i2, i3 = _insert4(t, a, l0, l1, l2, l3, i0, i1, i2, i3)
    # Exact fp32 re-rank of the kept candidates (ties -> lowest index).
    best, bi = inf, none
    best, bi = _pick(_exact_sqdist(x_ptr, cb_ptr, rows64, rmask, i0, D, BLOCK_N, BLOCK_D), i0, best, bi)
    best, bi = _pick(_exact_sqdist(x_ptr, cb_ptr, rows64, rmask, i1, D, BLOCK_N, BLOCK_D), i1, best, bi)
    best, bi = _pick(_exact_sqdist(x_ptr, cb_ptr, rows64, rmask, i2, D, BLOCK_N, BLOCK_D), i2, best, bi)
    best, bi = _pick(_exact_sqdist(x_ptr, cb_ptr, rows64, rmask, i3, D, BLOCK_N, BLOCK_D), i3, best, bi)
    plo = tl.load(plo_ptr + rows, mask=rmask, other=0.0)
    upper = best * up_scale + up_add - plo
    ok = (upper < l3) & (bi >= 0)
    tl.store(idx_ptr + rows, tl.maximum(bi, 0).to(tl.int64), mask=rmask)
    tl.store(dist_ptr + rows, best, mask=rmask)
    tl.store(ok_ptr + rows, ok.to(tl.int8), mask=rmask)

if not INTERPRET:
    # On a GPU the tile sizes are tuned per (K, D); the interpreter runs one fixed small config.
    nearest_tuned = triton.autotune(configs=search_configs(), key=["K", "D", "USE_BF16"])(nearest_kernel)
    certified_tuned = triton.autotune(configs=search_configs(), key=["K", "D"])(certified_screen_kernel)
    rvq_encode_tuned = triton.autotune(
        configs=encode_configs(), key=["K", "D", "USE_BF16"],
        prune_configs_by={"early_config_prune": prune_encode_configs},
    )(rvq_encode_kernel)
else:
    nearest_tuned = rvq_encode_tuned = certified_tuned = None
