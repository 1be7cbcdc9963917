"""Gradients of a residual-quantization pass, in one autograd node.

The forward search (nearest codes, EMA updates) is not differentiable and runs outside autograd.
What is differentiable, per stage ``q`` with stage input ``r_q`` (``r_{q+1} = r_q - c_q``):

- the output ``sum_q out_q`` where ``out_q`` equals the chosen code ``c_q`` in value and routes
  the gradient to ``z_q`` (the stage input, l2-normalised for cosine codebooks) either
  straight through (identity) or by the rotation trick (Fifty et al. 2024, arXiv:2410.06424,
  sec. 4.2): ``out = s R z`` with ``R = I - 2 w w^T + 2 q u^T``, ``u = z/|z|``, ``q = c/|c|``,
  ``w = (u+q)/|u+q|``, ``s = |c|/|z|`` (``R``, ``s`` held constant), whose value is exactly ``c``;
- the commitment loss ``weight * mean((c_q - z_q)^2)``.

Every per-row term is a linear combination of ``g``, ``z`` and ``c``, so the backward pass needs
a few row dot products and ``O(N D)`` updates per stage and never builds an autograd graph of
``O(Q)`` temporaries. Norms are clamped at 1e-6 exactly as vector-quantize-pytorch's
``safe_div``/``l2norm`` do, so degenerate rows get the same gradient as there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import _ops

_EPS = 1e-6


@dataclass
class StagePass:
    """What the no-grad forward leaves for the backward pass."""

    residuals: Tensor  # (A+1, M, D) fp32: r_0 .. r_A (stage inputs before normalisation)
    indices: Tensor  # (M, A) int64 codes chosen per stage
    stage_codebook: list[int]  # codebook slot used by each stage
    # (M, D) fp32 sum of the chosen codes (handed to autograd, then dropped); None: the node
    # computes it as r_0 - r_A
    quantized: Tensor | None
    losses: Tensor | None  # (A,) fp32 commitment loss per stage, weighted (likewise)
    rotation: bool
    cosine: bool
    commit_weight: float
    learnable: bool
    # Euclidean fast path: per-row |r_j|^2 (A+1, M), |c_q|^2 (A, M) and |r_q - c_q|^2 (A, M),
    # from which every dot product but r_j.g follows.
    sqnorm: Tensor | None = None
    code_sq: Tensor | None = None
    dist_sq: Tensor | None = None
    backend: str = "reference"  # resolved backend of the row kernels (rvqfast._ops)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    return torch.linalg.vecdot(a, b)


def _normalize(r: Tensor) -> tuple[Tensor, Tensor]:
    n = r.norm(dim=1, keepdim=True).clamp(min=_EPS)
    return r / n, n


def rotation_value_fixup(z: Tensor, c: Tensor) -> tuple[Tensor, Tensor] | None:
    """Rows whose input is (near) zero, and the rotation formula's value there.

    ``s R z`` equals ``c`` exactly in real arithmetic unless ``|z| < 1e-6``, where the clamped
    norms of vector-quantize-pytorch give a different value; returns ``(row mask, values)``
    for those rows, or ``None`` when there are none (the usual case).
    """
    nz = torch.linalg.vector_norm(z, dim=1)
    bad = nz < _EPS
    if not bool(bad.any()):
        return None
    return bad, _rotation_value(z[bad], c[bad], nz[bad])


def rotation_value_correction(z: Tensor, c: Tensor) -> Tensor:
    """What the rotation formula's value differs from ``c`` by, for every row, without a
    data-dependent branch (what torch.compile traces): exactly 0 where ``|z| >= 1e-6``."""
    nz = torch.linalg.vector_norm(z, dim=1)
    return torch.where((nz < _EPS)[:, None], _rotation_value(z, c, nz) - c, 0.0)


def _rotation_value(zb: Tensor, cb: Tensor, nz: Tensor) -> Tensor:
    nzb = nz.clamp(min=_EPS)[:, None]
    ncb = cb.norm(dim=1, keepdim=True)
    u, q = zb / nzb, cb / ncb.clamp(min=_EPS)
    p = u + q
    w = p / p.norm(dim=1, keepdim=True).clamp(min=_EPS)
    val = zb - 2 * w * _rowdot(zb, w)[:, None] + 2 * q * _rowdot(zb, u)[:, None]
    return val * (ncb / nzb)


# The gradient node is a ``torch.library`` op with a registered autograd formula, not a bare
# ``autograd.Function`` holding a Python object: torch.compile traces such an op (its fake impl
# gives shapes, AOT autograd traces the backward below), whereas it dropped the outputs of the
# old Function from the graph and every gradient before the quantizer was lost. The op returns
# copies of ``quantized``/``losses`` (an op's outputs may not alias its inputs); one (M, D) copy
# is cheap next to the search. Without ``quantized`` the op computes it as ``r_0 - r_A`` (one pass
# instead of a difference and its copy).
@torch.library.custom_op("rvqfast::quantizer_stages", mutates_args=())
def _stages_op(
    x: Tensor,
    embed: Tensor,
    quantized: Optional[Tensor],
    losses: Tensor,
    residuals: Tensor,
    indices: Tensor,
    sqnorm: Optional[Tensor],
    code_sq: Optional[Tensor],
    dist_sq: Optional[Tensor],
    stage_codebook: list[int],
    rotation: bool,
    cosine: bool,
    commit_weight: float,
    learnable: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    out = residuals[0] - residuals[-1] if quantized is None else quantized.clone()
    return out, losses.clone()


@_stages_op.register_fake
def _(x, embed, quantized, losses, residuals, indices, sqnorm, code_sq, dist_sq, stage_codebook, rotation, cosine, commit_weight, learnable, backend):
    return residuals.new_empty(residuals.shape[1:]), torch.empty_like(losses)


def _setup_context(ctx, inputs, output) -> None:
    (_, embed, _, _, residuals, indices, sqnorm, code_sq, dist_sq, stage_codebook, rotation, cosine, commit_weight, learnable, backend) = inputs
    # The outputs are not saved: the backward needs neither, and holding them would keep every
    # step's activations alive.
    ctx.save_for_backward(residuals, indices, sqnorm, code_sq, dist_sq)
    ctx.cfg = (list(stage_codebook), bool(rotation), bool(cosine), float(commit_weight), bool(learnable), str(backend))
    ctx.embed_shape = tuple(embed.shape)


def _backward_op(ctx, g: Tensor | None, gl: Tensor | None):
    residuals, indices, sqnorm, code_sq, dist_sq = ctx.saved_tensors
    stage_codebook, rotation, cosine, commit_weight, learnable, backend = ctx.cfg
    sp = StagePass(
        residuals=residuals, indices=indices, stage_codebook=stage_codebook, quantized=None, losses=None,
        rotation=rotation, cosine=cosine, commit_weight=commit_weight, learnable=learnable,
        sqnorm=sqnorm, code_sq=code_sq, dist_sq=dist_sq, backend=backend,
    )
    grad_embed = None
    if learnable and ctx.needs_input_grad[1]:
        grad_embed = residuals.new_zeros(ctx.embed_shape)
    grad_x, grad_embed = stage_gradients(sp, g, gl, grad_embed)
    return (grad_x, grad_embed) + (None,) * 13


_stages_op.register_autograd(_backward_op, setup_context=_setup_context)


def stage_gradients(sp: StagePass, g: Tensor | None, gl: Tensor | None, grad_embed: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Gradients of ``sum_q out_q`` (upstream ``g``) and the losses (upstream ``gl``) with
    respect to the quantizer input and, when learnable, the codebooks (accumulated into
    ``grad_embed``)."""
    res = sp.residuals
    a, m, d = res.shape[0] - 1, res.shape[1], res.shape[2]
    if g is not None:
        g = g.float()
    if not sp.cosine:
        return _backward_euclidean(sp, g, gl, grad_embed, m, d)
    grad_x = torch.zeros(m, d, dtype=torch.float32, device=res.device)
    for q in range(a):
        r, c = res[q], res[q] - res[q + 1]
        z, nr_in = _normalize(r)
        v = None
        if g is not None:
            if sp.rotation:
                nz = z.norm(dim=1, keepdim=True)
                nzc = nz.clamp(min=_EPS)
                nc = c.norm(dim=1, keepdim=True)
                ncc = nc.clamp(min=_EPS)
                zg, cg, zc = _rowdot(z, g)[:, None], _rowdot(c, g)[:, None], _rowdot(z, c)[:, None]
                ug, qg = zg / nzc, cg / ncc
                uu, qq, uq = (nz / nzc) ** 2, (nc / ncc) ** 2, zc / (nzc * ncc)
                pp = (uu + qq + 2 * uq).clamp(min=_EPS * _EPS)
                k = 2 * (ug + qg) / pp
                # R^T g = g - 2 w (w.g) + 2 u (q.g), written on z and c directly.
                s = nc / nzc
                v = s * g + (s * (2 * qg - k) / nzc) * z - (s * k / ncc) * c
            else:
                v = g
        if gl is not None and sp.commit_weight != 0:
            coef = gl[q].float() * (2.0 * sp.commit_weight / (m * d))
            diff = z - c
            v = coef * diff if v is None else v + coef * diff
            if grad_embed is not None:
                grad_embed[sp.stage_codebook[q]].index_add_(0, sp.indices[:, q], diff * -coef)
        if v is None:
            continue
        # Jacobian of r / max(|r|, eps): (I - z z^T)/|r| above eps, I/eps below.
        big = (r.norm(dim=1, keepdim=True) > _EPS).float()
        v = (v - big * z * _rowdot(z, v)[:, None]) / nr_in
        grad_x = grad_x + v
    return grad_x, grad_embed


def _backward_euclidean(sp: StagePass, g: Tensor | None, gl: Tensor | None, grad_embed: Tensor | None, m: int, d: int):
    """All stages' gradient as ``S g + sum_j gamma_j r_j`` with per-row ``S``, ``gamma_j``.

    With ``z_q = r_q`` and ``c_q = r_q - r_{q+1}``, every dot product the rotation needs follows
    from ``r_j . g`` and the norms saved by the forward, so the pass costs ``A+1`` row-dots and
    ``A+1`` fused multiply-adds over (M, D) and allocates nothing of size ``A x M x D``: the
    ``rvq_stages_grad`` op (reference: :func:`rvqfast.backends.reference.rvq_stages_grad`).
    """
    res = sp.residuals
    a = res.shape[0] - 1
    commit = res.new_zeros(a)
    if gl is not None and sp.commit_weight != 0:
        commit = (2.0 * sp.commit_weight / (m * d)) * gl.float()
        if grad_embed is not None:
            for q in range(a):
                grad_embed[sp.stage_codebook[q]].index_add_(0, sp.indices[:, q], res[q + 1] * -commit[q])
    # No upstream gradient: g = 0 gives every rotation term 0, leaving the commitment terms.
    g = res.new_zeros(m, d) if g is None else g.contiguous()
    grad_x = _ops.rvq_stages_grad(res, g, sp.sqnorm, sp.code_sq, sp.dist_sq, commit.contiguous(), sp.rotation, sp.backend)
    return grad_x, grad_embed


def stages_autograd(x: Tensor, embed: Tensor, sp: StagePass) -> tuple[Tensor, Tensor]:
    """Attach ``sp``'s outputs to the graph of ``x`` (and ``embed`` when learnable)."""
    quantized, losses = sp.quantized, sp.losses
    sp.quantized = sp.losses = None
    return _stages_op(
        x, embed, quantized, losses, sp.residuals, sp.indices, sp.sqnorm, sp.code_sq, sp.dist_sq,
        list(sp.stage_codebook), sp.rotation, sp.cosine, float(sp.commit_weight), sp.learnable, sp.backend,
    )


def rotate_to(src: Tensor, tgt: Tensor) -> Tensor:
    """``tgt`` in value, the rotation trick's gradient to ``src`` (none to ``tgt``): ``s R src``
    with ``R``, ``s`` as in this module's docstring, all held constant. Plain autograd, for the
    modules that do not use the fused stage node (SimVQ); rows along the last axis."""
    ns = src.norm(dim=-1, keepdim=True)
    nt = tgt.norm(dim=-1, keepdim=True)
    u = (src / ns.clamp(min=_EPS)).detach()
    q = (tgt / nt.clamp(min=_EPS)).detach()
    w = torch.nn.functional.normalize(u + q, dim=-1, eps=_EPS)
    rotated = src - 2 * (src * w).sum(-1, keepdim=True) * w + 2 * (src * u).sum(-1, keepdim=True) * q
    return rotated * (nt / ns.clamp(min=_EPS)).detach()
