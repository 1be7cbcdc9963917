"""The quantizer engine shared by :class:`VectorQuantize`, :class:`ResidualVQ` and
:class:`GroupedResidualVQ` (groups, and separate codebooks per head, are independent sets of
stages whose codebooks sit side by side in the same tensors).

Works on flat rows ``(M, D)``: searches through :mod:`rvqfast.ops` (``rvq_encode`` for the
all-stages eval path, ``nearest_code`` per stage in training, where k-means init, EMA updates
and dead-code expiry happen between stages), each stage's residual update and EMA statistics
in one ``residual_update`` op pass on CPU (``ema_stats`` elsewhere), and the gradients through
one autograd node (:mod:`.grad`, whose Euclidean backward is the ``rvq_stages_grad`` op). The
training pass's scratch buffers are reused across steps (:mod:`.scratch`). The public modules
only reshape.

Buffers (our own state_dict layout; :mod:`.compat` converts vector-quantize-pytorch's):
``embed`` (S, K, D) codes (an ``nn.Parameter`` when learnable or orthogonally regularised), ``embed_avg``
(S, K, D) and ``cluster_size`` (S, K) EMA statistics, ``initted`` (S,) bool; S is the number of
distinct codebooks: groups x stages, or one per group when the stages share a codebook.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _ops, ops
from . import distributed as ddp
from .compat import from_vector_quantize_pytorch, is_foreign
from .grad import _EPS, StagePass, rotation_value_correction, rotation_value_fixup, stages_autograd
from .kmeans import all_finite, kmeans, resolve_backend, sample_rows, search, stats
from .scratch import StepBuffer
from .stages import dropout_last_index


class _TrainPass:
    """One group's training pass between stages (what :meth:`QuantizerCore._train_begin` sets up
    and the stage steps fill in): residuals, indices, losses, norms, EMA statistics."""


class QuantizerCore(nn.Module):
    """Codebooks, their EMA state and the flat quantization passes (internal base class)."""

    def __init__(
        self,
        *,
        codebook_dim: int,
        codebook_size: int,
        num_stages: int,
        shared_codebook: bool,
        decay: float,
        eps: float,
        kmeans_init: bool,
        kmeans_iters: int,
        threshold_ema_dead_code: float,
        commitment_weight: float,
        ema_update: bool,
        learnable_codebook: bool,
        use_cosine_sim: bool,
        sync_codebook: bool | None,
        rotation_trick: bool,
        stochastic_sample_codes: bool,
        sample_codebook_temp: float,
        straight_through: bool,
        backend: str,
        precision: str,
        num_groups: int = 1,
        codebook_param: bool = False,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.num_stages = num_stages
        # Groups (GroupedResidualVQ, separate codebooks per head) are independent quantizers of
        # ``num_stages`` stages each whose codebooks live in the same (S, K, D) tensor.
        self.num_groups = num_groups
        self.shared_codebook = shared_codebook
        self.decay = float(decay)
        self.eps = float(eps)
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.commitment_weight = float(commitment_weight)
        self.ema_update = ema_update
        self.learnable_codebook = learnable_codebook
        self.use_cosine_sim = use_cosine_sim
        self.sync_codebook = sync_codebook
        self.rotation_trick = rotation_trick
        self.stochastic_sample_codes = stochastic_sample_codes
        self.sample_codebook_temp = float(sample_codebook_temp)
        self.straight_through = straight_through
        self.backend = backend
        self.precision = precision
        self._warned_nograd = False
        self._frozen = False
        # The training pass's residual buffer and per-stage EMA statistics, reused across steps
        # once released (scratch.py).
        self._residual_buffer = StepBuffer()
        self._counts_buffer = StepBuffer()
        self._sums_buffer = StepBuffer()

        s = num_groups * (1 if shared_codebook else num_stages)
        if kmeans_init:
            embed = torch.zeros(s, codebook_size, codebook_dim)
        else:
            # Same distribution as vector-quantize-pytorch: kaiming-uniform on a (S, K, D) tensor,
            # whose fan-in is K * D.
            bound = math.sqrt(6.0 / (codebook_size * codebook_dim))
            embed = torch.empty(s, codebook_size, codebook_dim).uniform_(-bound, bound)
            if use_cosine_sim:
                embed = F.normalize(embed, dim=-1, eps=1e-6)
        self.register_buffer("initted", torch.full((s,), not kmeans_init, dtype=torch.bool))
        # Python mirror of ``initted.all()``, read only while torch.compile traces: reading the
        # buffer there is a data-dependent branch. Kept in step wherever rvqfast writes the buffer.
        self._all_initted = not kmeans_init
        self.register_buffer("cluster_size", torch.ones(s, codebook_size))
        self.register_buffer("embed_avg", embed.clone())
        # ``codebook_param``: a parameter that only a regulariser trains (vector-quantize-pytorch's
        # orthogonal regularisation), still EMA-updated, commitment loss detached from it.
        if learnable_codebook or codebook_param:
            self.embed = nn.Parameter(embed)
        else:
            self.register_buffer("embed", embed)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Runs for nested modules too, so a whole model saved with vector-quantize-pytorch loads.
        if is_foreign(list(state_dict.keys()), prefix):
            from_vector_quantize_pytorch(state_dict, prefix, self.embed.shape[0], self.num_groups)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._all_initted = bool(self.initted.all())

    # ----------------------------------------------------------------------------- helpers
    def _is_initted(self, slot: int) -> bool:
        if torch.compiler.is_compiling() and self._all_initted:
            return True
        return bool(self.initted[slot])

    def _slot(self, stage: int, group: int = 0) -> int:
        if self.shared_codebook:
            return group
        return group * self.num_stages + stage

    def _stage_codebooks(self, n: int, group: int = 0) -> Tensor:
        """(n, K, D) fp32 codebooks of the first ``n`` stages of ``group`` (detached)."""
        e = self.embed.detach().float()
        if self.shared_codebook:
            return e[group : group + 1].expand(n, -1, -1)
        base = group * self.num_stages
        return e[base : base + n]

    def _transform(self, r: Tensor) -> Tensor:
        return F.normalize(r, dim=-1, eps=1e-6) if self.use_cosine_sim else r

    def _search(self, z: Tensor, slot: int) -> tuple[Tensor, Tensor]:
        cb = self.embed.detach()[slot]
        if self.training and self.stochastic_sample_codes and self.sample_codebook_temp > 0:
            return self._gumbel_search(z, cb.float())
        return search(z, cb, cosine=self.use_cosine_sim, backend=self._rb, precision=self._rp)

    def _grouped_search(self, zs: Tensor, slots: list[int]) -> tuple[Tensor, Tensor]:
        """:meth:`_search` of several groups at once: rows ``zs`` (G, M, D), group g against
        codebook slot ``slots[g]``, in one ``grouped_nearest_code`` op call. The same answers
        as one ``search`` per group (cosine: the same appended column, per group's codebook)."""
        cbs = self.embed.detach()[slots].float()
        if not self.use_cosine_sim:
            return _ops.grouped_nearest_code(zs.float().contiguous(), cbs.contiguous(), self._rb, self._rp)
        norms = (cbs * cbs).sum(-1)
        extra = (norms.amax(-1, keepdim=True) - norms).clamp(min=0).sqrt()
        cb_aug = torch.cat([cbs, extra[..., None]], -1)
        idx, _ = _ops.grouped_nearest_code(F.pad(zs.float(), (0, 1)).contiguous(), cb_aug, self._rb, self._rp)
        diff = zs.float() - torch.gather(cbs, 1, idx[..., None].expand(-1, -1, cbs.shape[-1]))
        return idx, (diff * diff).sum(-1)

    def _gumbel_search(self, z: Tensor, cb: Tensor) -> tuple[Tensor, Tensor]:
        # Logits as in vector-quantize-pytorch: -L2 distance (or the dot product for cosine),
        # over the temperature, plus Gumbel noise; rows in chunks to bound memory.
        n = z.shape[0]
        idx = torch.empty(n, dtype=torch.int64, device=z.device)
        step = max(1, (1 << 22) // cb.shape[0])
        c2 = (cb * cb).sum(1)
        for s in range(0, n, step):
            zz = z[s : s + step]
            dots = zz @ cb.t()
            if self.use_cosine_sim:
                logits = dots
            else:
                d2 = ((zz * zz).sum(1, keepdim=True) + c2 - 2 * dots).clamp(min=1e-8)
                logits = -d2.sqrt()
            u = torch.rand_like(logits).clamp(min=1e-20)
            gumbel = -torch.log((-torch.log(u)).clamp(min=1e-20))
            idx[s : s + step] = (logits / self.sample_codebook_temp + gumbel).argmax(1)
        diff = z - cb[idx]
        return idx, (diff * diff).sum(1)

    def set_forward_options(self, sample_codebook_temp: float | None, freeze_codebook: bool | None) -> tuple:
        """Apply one forward's ``sample_codebook_temp`` / ``freeze_codebook`` overrides
        (vector-quantize-pytorch's forward arguments); returns what :meth:`restore_forward_options`
        puts back. A frozen codebook gets no EMA update and no dead-code replacement."""
        saved = (self.sample_codebook_temp, self._frozen)
        if sample_codebook_temp is not None:
            if float(sample_codebook_temp) < 0:
                raise ValueError(f"sample_codebook_temp must be >= 0, got {sample_codebook_temp!r}")
            self.sample_codebook_temp = float(sample_codebook_temp)
        if freeze_codebook is not None:
            self._frozen = bool(freeze_codebook)
        return saved

    def restore_forward_options(self, saved: tuple) -> None:
        self.sample_codebook_temp, self._frozen = saved

    # ------------------------------------------------------------------- codebook updates
    def _sync_now(self) -> bool:
        return self.training and torch.is_grad_enabled() and ddp.resolve_sync(self.sync_codebook)

    def _updates_allowed(self) -> bool:
        """Training updates run in training mode; under no_grad only when not distributed."""
        if not self.training or self._frozen:
            return False
        if torch.is_grad_enabled() or not ddp.resolve_sync(self.sync_codebook):
            return True
        if not self._warned_nograd:
            self._warned_nograd = True
            warnings.warn(
                "rvqfast: training-mode forward under torch.no_grad() with a synchronised "
                "codebook: codebook updates are skipped so that no rank waits on a collective "
                "the others never reach",
                RuntimeWarning,
                stacklevel=4,
            )
        return False

    @torch.no_grad()
    def _kmeans_init(self, slot: int, z: Tensor, sync: bool) -> None:
        means, counts = kmeans(
            z,
            self.codebook_size,
            self.kmeans_iters,
            cosine=self.use_cosine_sim,
            sync=sync,
            backend=self.backend,
            precision=self.precision,
        )
        self.embed_avg[slot] = means * counts[:, None]
        self.cluster_size[slot] = counts
        self._refresh_embed(slot)
        self.initted[slot] = True
        self._all_initted = bool(self.initted.all())

    @torch.no_grad()
    def _refresh_embed(self, slot: int | slice) -> None:
        """embed = embed_avg / Laplace-smoothed cluster_size, for one slot or a slice of them."""
        cs = self.cluster_size[slot]
        total = cs.sum(-1, keepdim=True)
        smoothed = (cs + self.eps) / (total + self.codebook_size * self.eps) * total
        target = self.embed.data[slot]
        if not self.use_cosine_sim and target.dtype == torch.float32 and target.is_contiguous():
            # Written in place: one pass over the codes instead of a quotient and its copy.
            torch.div(self.embed_avg[slot], smoothed.unsqueeze(-1), out=target)
            return
        new = self.embed_avg[slot] / smoothed.unsqueeze(-1)
        if self.use_cosine_sim:
            new = F.normalize(new, dim=-1, eps=1e-6)
        self.embed.data[slot] = new

    @torch.no_grad()
    def _accumulate(self, slot: int | slice, counts: Tensor, sums: Tensor, sync: bool) -> None:
        """EMA of per-code counts (.., K) and sums (.., K, D); one all-reduce when synced."""
        if sync:
            packed = ddp.all_reduce_sum_(torch.cat([counts.unsqueeze(-1), sums], -1).contiguous())
            counts, sums = packed[..., 0], packed[..., 1:]
        w = 1.0 - self.decay
        self.cluster_size[slot].lerp_(counts, w)
        self.embed_avg[slot].lerp_(sums, w)

    @torch.no_grad()
    def _expire(self, slot: int, z: Tensor, sync: bool) -> None:
        if self.threshold_ema_dead_code <= 0:
            return
        if torch.compiler.is_compiling() and not sync:
            self._expire_dense(slot, z)
            return
        dead = self.cluster_size[slot] < self.threshold_ema_dead_code
        if not bool(dead.any()):
            return
        reset = float(self.threshold_ema_dead_code)
        if sync:
            num_dead = int(dead.sum())
            pool = ddp.gather_pool(z, num_dead)
            g = ddp.shared_generator(z.device)
            if pool.shape[0] == 0:
                return
            dead_idx = dead.nonzero().squeeze(1)
            if num_dead > pool.shape[0]:
                dead_idx = dead_idx[torch.randperm(num_dead, generator=g, device=z.device)[: pool.shape[0]]]
                num_dead = pool.shape[0]
            sampled = pool[torch.randperm(pool.shape[0], generator=g, device=z.device)[:num_dead]]
        else:
            if z.shape[0] == 0:
                return
            dead_idx = dead.nonzero().squeeze(1)
            num_dead = dead_idx.numel()
            # More dead codes than samples: replace a random subset now, the rest later, rather
            # than fill several codes with one sample.
            if num_dead > z.shape[0]:
                dead_idx = dead_idx[torch.randperm(num_dead, device=z.device)[: z.shape[0]]]
                num_dead = z.shape[0]
            sampled = sample_rows(z, num_dead)
        sampled = sampled.to(self.embed.dtype)
        self.embed.data[slot, dead_idx] = sampled
        self.cluster_size[slot, dead_idx] = reset
        self.embed_avg[slot, dead_idx] = sampled * reset

    @torch.no_grad()
    def _expire_dense(self, slot: int, z: Tensor) -> None:
        """Dead-code replacement without data-dependent shapes or branches (what torch.compile
        traces): every code draws a random input row, dead ones take it. Same rule as
        :meth:`_expire` (rows drawn with replacement here, so the random draws differ)."""
        if z.shape[0] == 0:
            return
        reset = float(self.threshold_ema_dead_code)
        dead = (self.cluster_size[slot] < reset)[:, None]
        sampled = z[torch.randint(0, z.shape[0], (self.codebook_size,), device=z.device)].to(self.embed.dtype)
        self.embed.data[slot] = torch.where(dead, sampled, self.embed.data[slot])
        self.cluster_size[slot] = torch.where(dead[:, 0], reset, self.cluster_size[slot])
        self.embed_avg[slot] = torch.where(dead, sampled * reset, self.embed_avg[slot])

    # --------------------------------------------------------------------------- passes
    def dropout_cutoff(self, enabled: bool, cutoff: int, sync: bool, device: torch.device, multiple_of: int = 1) -> int:
        """Last active stage under quantize dropout (same RNG use as vector-quantize-pytorch)."""
        if not enabled:
            return self.num_stages - 1
        seed_t = torch.randint(0, 10_000, (), device=device)
        if sync:
            ddp.all_reduce_sum_(seed_t)
        last = dropout_last_index(int(seed_t.item()), cutoff, self.num_stages, multiple_of)
        return min(last, self.num_stages - 1)

    def quantize_seq(self, xs: Tensor, mask: Tensor | None, last_stage: int, group: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, D) -> quantized (B, N, D) in ``xs``'s dtype, indices (B, N, A), losses (A,).

        Masked-out positions (``mask`` False) are left out of the search, the losses and the
        codebook statistics; they get zeros and index ``-1``.
        """
        b, n, d = xs.shape
        rows = xs.reshape(b * n, d)
        flat = None
        if mask is not None:
            flat = mask.reshape(-1)
            rows = rows[flat]
        out, idx, losses = self.quantize_flat(rows, last_stage, group)
        if flat is not None:
            full = out.new_zeros(b * n, d)
            full[flat] = out
            out = full
            full_idx = idx.new_full((b * n, idx.shape[1]), -1)
            full_idx[flat] = idx
            idx = full_idx
        return out.to(xs.dtype).reshape(b, n, d), idx.reshape(b, n, -1), losses

    def _begin_pass(self, x: Tensor) -> tuple[bool, bool]:
        """Check the rows and codebooks, resolve the backend for this forward; returns whether
        codebook updates run and whether they are synchronised."""
        if not all_finite(x):
            raise ValueError("x contains NaN or Inf values")
        if not all_finite(self.embed.detach()):
            raise ValueError("the codebook contains NaN or Inf values")
        self._rb, self._rp = resolve_backend(self.backend, self.precision, x.device, x.shape[-1])
        updates = self._updates_allowed()
        return updates, updates and self._sync_now()

    def quantize_flat(self, x: Tensor, last_stage: int, group: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize rows ``x`` (M, D) through stages ``0..last_stage`` of ``group``.

        Returns ``(quantized (M, D) fp32, indices (M, last_stage+1) int64, losses (A,) fp32)``.
        Gradients reach ``x`` (and learnable codes) in training mode; in eval the output is the
        codes themselves, as in vector-quantize-pytorch.
        """
        n_active = last_stage + 1
        updates, sync = self._begin_pass(x)
        if not self.training:
            return self._eval_flat(x, n_active, group)
        return self._train_groups([x], n_active, [group], updates, sync)[0]

    def train_groups_flat(self, x: Tensor, last_stage: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Training pass of every group: rows ``x`` (G, M, D), group ``g`` through its stages
        ``0..last_stage``; per group what :meth:`quantize_flat` returns for ``x[g]``.

        Where it changes nothing (see :meth:`_groups_in_lockstep`), each stage searches all
        groups in one ``grouped_nearest_code`` op call; else the groups run one after another.
        """
        n_active = last_stage + 1
        updates, sync = self._begin_pass(x)
        rows, groups = list(x.unbind(0)), list(range(x.shape[0]))
        if self._groups_in_lockstep():
            return self._train_groups(rows, n_active, groups, updates, sync)
        return [self._train_groups([r], n_active, [g], updates, sync)[0] for r, g in zip(rows, groups)]

    def _groups_in_lockstep(self) -> bool:
        """Whether searching stage q of all groups together (then updating each group) gives
        exactly what running the groups one after another gives. The groups' codebooks are
        disjoint, so only the order of random draws can differ: lockstep needs no k-means init
        in this step, no per-stage dead-code replacement (shared codebooks) and no Gumbel
        sampling."""
        if self.stochastic_sample_codes and self.sample_codebook_temp > 0:
            return False
        if self.shared_codebook and self.threshold_ema_dead_code > 0:
            return False
        return self._all_initted if torch.compiler.is_compiling() else bool(self.initted.all())

    def _train_groups(self, rows: list[Tensor], n_active: int, groups: list[int], updates: bool, sync: bool) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Training pass of ``groups`` (rows ``rows[i]`` (M, D) each), stage by stage; with
        several groups each stage's search is one grouped op call (callers ensure that is
        equivalent, :meth:`_groups_in_lockstep`)."""
        together = len(rows) > 1
        # Together, the groups' residuals share one (A+1, G, M, D) buffer: stage q's search
        # inputs of all groups are then one contiguous (G, M, D) block (z_q = r_q here), read in
        # place. Not under torch.compile: functionalised writes into views of a shared buffer
        # copy the whole buffer per write there, so each group keeps its own and stage inputs
        # are stacked.
        shared = None
        if together and not self.use_cosine_sim and not torch.compiler.is_compiling():
            shared = self._residual_buffer.get((n_active + 1, len(rows), *rows[0].shape), rows[0])
        passes = [self._train_begin(x, n_active, g, updates, None if shared is None else shared[:, i])
                  for i, (x, g) in enumerate(zip(rows, groups))]
        for q in range(n_active):
            zs = [self._train_stage_input(p, q, sync) for p in passes]
            if together and zs[0] is not None:
                zq = shared[q] if shared is not None else torch.stack(zs)
                idx, d2 = self._grouped_search(zq, [p.slots[q] for p in passes])
                found = list(zip(idx.unbind(0), d2.unbind(0)))
            else:
                found = [None if z is None else self._search(z, p.slots[q]) for p, z in zip(passes, zs)]
            for p, z, f in zip(passes, zs, found):
                if z is not None:
                    self._train_stage_update(p, q, z, f[0], f[1], sync)
        return [self._train_end(p, n_active, sync) for p in passes]

    def _train_begin(self, x: Tensor, n_active: int, group: int, updates: bool, residuals: Tensor | None = None) -> _TrainPass:
        p = _TrainPass()
        p.xf = xf = x.float()
        p.m, p.d = m, d = xf.shape
        p.residuals = self._residual_buffer.get((n_active + 1, m, d), xf) if residuals is None else residuals
        p.residuals[0] = xf.detach()
        p.indices = torch.empty(m, n_active, dtype=torch.int64, device=xf.device)
        p.losses = torch.zeros(n_active, dtype=torch.float32, device=xf.device)
        p.fast = fast = not self.use_cosine_sim
        p.sqnorm = xf.new_zeros(n_active + 1, m) if fast else None
        p.code_sq = xf.new_zeros(n_active, m) if fast else None
        p.dist_sq = xf.new_zeros(n_active, m) if fast else None
        if fast and m:
            torch.linalg.vector_norm(p.residuals[0], dim=1, out=p.sqnorm[0]).square_()
        p.slots = [self._slot(q, group) for q in range(n_active)]
        p.base = base = p.slots[0]
        p.stage_inputs = []
        p.track = updates and (self.ema_update or self.threshold_ema_dead_code > 0) and m > 0
        if p.track and not self.shared_codebook:
            p.all_counts = self._counts_buffer.get((n_active, self.codebook_size), xf)
            p.all_sums = self._sums_buffer.get((n_active, self.codebook_size, d), xf)
        p.code_norms = None
        if fast and not self.shared_codebook:
            # Codes searched at stage q are the pre-update ones, so norms taken now stay valid.
            p.code_norms = torch.linalg.vector_norm(self.embed.detach()[base : base + n_active].float(), dim=-1).square_()
        return p

    def _train_stage_input(self, p: _TrainPass, q: int, sync: bool) -> Tensor | None:
        """Stage ``q``'s search input (k-means init of its codebook first, when due); ``None``
        when there are no rows."""
        slot = p.slots[q]
        r = p.residuals[q]
        if p.m == 0:  # everything masked: nothing to search or learn from
            p.residuals[q + 1] = r
            return None
        z = self._transform(r)
        # ``initted`` decides whether k-means collectives run, so with a synchronised
        # codebook it may only change where those collectives run (see distributed.py).
        p.fresh = False
        if not self._is_initted(slot) and (sync or not ddp.resolve_sync(self.sync_codebook)):
            self._kmeans_init(slot, z, sync)
            p.fresh = True
        p.cb = self.embed.detach()[slot].float()
        return z

    def _train_stage_update(self, p: _TrainPass, q: int, z: Tensor, idx: Tensor, d2: Tensor, sync: bool) -> None:
        """Record stage ``q``'s search result: residual, norms, commitment loss, statistics."""
        slot, r, cb, residuals = p.slots[q], p.residuals[q], p.cb, p.residuals
        p.indices[:, q] = idx
        counts = sums = None
        if torch.compiler.is_compiling() or r.device.type != "cpu" or not residuals[q + 1].is_contiguous():
            # r_{q+1} = r_q - c_q, written in place over the gathered codes (GPU backends:
            # their own ema_stats kernel below).
            torch.index_select(cb, 0, idx, out=residuals[q + 1])
            torch.sub(r, residuals[q + 1], out=residuals[q + 1])
        else:
            # One pass: r_{q+1} = r_q - c_q and, for Euclidean codebooks (z_q = r_q), the
            # stage's EMA statistics (the same values as the two ops above and ``stats``),
            # written where the codebook update reads them.
            if p.track and p.fast:
                if self.shared_codebook:
                    counts, sums = r.new_empty(self.codebook_size), r.new_empty(self.codebook_size, p.d)
                else:
                    counts, sums = p.all_counts[q], p.all_sums[q]
            _ops.residual_update(r, cb, idx, residuals[q + 1], counts, sums, self._rb)
        if p.fast:
            norms = p.code_norms[q] if p.code_norms is not None and not p.fresh else torch.linalg.vector_norm(cb, dim=1).square_()
            torch.index_select(norms, 0, idx, out=p.code_sq[q])
            p.dist_sq[q] = d2
            p.sqnorm[q + 1] = d2  # |r_{q+1}|^2 = |r_q - c_q|^2, already computed by the search
        if self.commitment_weight > 0:
            p.losses[q] = d2.sum() * (self.commitment_weight / (p.m * p.d))
        if p.track:
            stats_in_place = counts is not None
            if not stats_in_place:
                counts, sums = stats(z, idx, self.codebook_size, self._rb)
            if self.shared_codebook:
                # One codebook, updated stage after stage (searches of later stages see
                # dead-code replacements), as vector-quantize-pytorch does.
                self._accumulate(slot, counts, sums, sync)
                self._expire(slot, z, sync)
                p.stage_inputs.append(z)
            else:
                if not stats_in_place:
                    p.all_counts[q], p.all_sums[q] = counts, sums
                p.stage_inputs.append(z)

    def _train_end(self, p: _TrainPass, n_active: int, sync: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Codebook updates of the pass, then the output through the gradient node."""
        base, slots, residuals, stage_inputs, fast, sqnorm = p.base, p.slots, p.residuals, p.stage_inputs, p.fast, p.sqnorm
        if p.track and self.shared_codebook:
            if self.ema_update:
                self._refresh_embed(base)
            if stage_inputs:
                self._expire(base, torch.cat(stage_inputs), sync)
        elif p.track and stage_inputs:
            # A stage's codebook update cannot change any stage's search (each stage has its
            # own codebook, searched before), so all stages update at once: one collective.
            self._accumulate(slice(base, base + n_active), p.all_counts, p.all_sums, sync)
            if self.ema_update:
                self._refresh_embed(slice(base, base + n_active))
            for q, z in enumerate(stage_inputs):
                self._expire(slots[q], z, sync)
        # The sum of the chosen codes is what the residual lost over all stages; the gradient
        # node computes it (``None``) unless a rotation value fix-up below needs it here.
        quantized = None
        if self.rotation_trick and p.xf.requires_grad and p.m:
            # s R z equals the code except for (near-)zero inputs, where the clamped formula
            # of vector-quantize-pytorch gives another value; reproduce it there.
            if torch.compiler.is_compiling():
                quantized = residuals[0] - residuals[n_active]
                for q in range(n_active):
                    code = residuals[q] - residuals[q + 1]
                    quantized = quantized + rotation_value_correction(self._transform(residuals[q]), code)
            for q in range(n_active if not torch.compiler.is_compiling() else 0):
                if fast and not bool((sqnorm[q] < _EPS * _EPS).any()):
                    continue
                code = residuals[q] - residuals[q + 1]
                fix = rotation_value_fixup(self._transform(residuals[q]), code)
                if fix is not None:
                    rows, vals = fix
                    if quantized is None:
                        quantized = residuals[0] - residuals[n_active]
                    quantized[rows] += vals - code[rows]
        sp = StagePass(
            residuals=residuals,
            indices=p.indices,
            stage_codebook=slots,
            quantized=quantized,
            losses=p.losses,
            rotation=self.rotation_trick,
            cosine=self.use_cosine_sim,
            commit_weight=self.commitment_weight,
            learnable=self.learnable_codebook,
            sqnorm=sqnorm,
            code_sq=p.code_sq,
            dist_sq=p.dist_sq,
            backend=self._rb,
        )
        out, losses = stages_autograd(p.xf, self.embed, sp)
        return out, p.indices, losses

    def _eval_flat(self, x: Tensor, n_active: int, group: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        m = x.shape[0]
        losses = torch.zeros(n_active, dtype=torch.float32, device=x.device)
        xd = x.detach()
        self._init_on_eval(xd, n_active, group)
        if m == 0:
            return x.new_zeros(0, x.shape[1], dtype=torch.float32), torch.empty(0, n_active, dtype=torch.int64, device=x.device), losses
        if self.use_cosine_sim:
            r = xd.float()
            indices = torch.empty(m, n_active, dtype=torch.int64, device=x.device)
            for q in range(n_active):
                idx, _ = self._search(self._transform(r), self._slot(q, group))
                indices[:, q] = idx
                r = r - self.embed.detach()[self._slot(q, group)].float()[idx]
        else:
            indices, quantized = _ops.rvq_encode(xd.float().contiguous(), self._stage_codebooks(n_active, group).contiguous(), self._rb, self._rp)
            if not (self.learnable_codebook and torch.is_grad_enabled()):
                return quantized, indices, losses
        out = self.decode_flat(indices, grad=self.learnable_codebook and torch.is_grad_enabled(), group=group)
        return out, indices, losses

    def _init_on_eval(self, xd: Tensor, n_active: int, group: int) -> None:
        """k-means init of ``group``'s codebooks on first use by an eval forward (see below)."""
        for q in range(n_active):
            slot = self._slot(q, group)
            if not self._is_initted(slot):
                # vector-quantize-pytorch initialises on first use even in eval; we do too when
                # not distributed. With a synchronised codebook an init here would run on this
                # rank alone (no collective may run in eval) and desynchronise the ranks.
                if ddp.resolve_sync(self.sync_codebook):
                    warnings.warn(
                        "rvqfast: eval forward with a codebook not yet k-means initialised; "
                        "the init waits for a synchronised training step",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                else:
                    self._fill_uninitted(xd.float(), group)
                break

    def eval_groups_flat(self, x: Tensor, last_stage: int) -> tuple[Tensor, Tensor, Tensor]:
        """Eval pass of every group at once: rows ``x`` (G, M, D), group ``g`` through its stages
        ``0..last_stage``, all groups and stages in one ``grouped_rvq_encode`` op call.

        Returns ``(quantized (G, M, D) fp32, indices (G, M, A) int64, losses (G, A) zeros)``:
        the same as :meth:`quantize_flat` in eval mode on each group. Cosine codebooks search
        stage by stage (normalised residuals): one grouped search op call per stage.
        """
        g_n, m, d = x.shape
        n_active = last_stage + 1
        if self.training:
            raise RuntimeError("eval_groups_flat is the eval pass")
        self._begin_pass(x)
        xd = x.detach()
        for g in range(g_n):
            self._init_on_eval(xd[g], n_active, g)
        losses = torch.zeros(g_n, n_active, dtype=torch.float32, device=x.device)
        if m == 0:
            return x.new_zeros(g_n, 0, d, dtype=torch.float32), torch.empty(g_n, 0, n_active, dtype=torch.int64, device=x.device), losses
        grad = self.learnable_codebook and torch.is_grad_enabled()
        if self.use_cosine_sim:
            # Normalised residuals: one grouped search per stage, all groups together.
            r = xd.float()
            indices = torch.empty(g_n, m, n_active, dtype=torch.int64, device=x.device)
            for q in range(n_active):
                slots = [self._slot(q, g) for g in range(g_n)]
                idx, _ = self._grouped_search(self._transform(r), slots)
                indices[..., q] = idx
                cbs = self.embed.detach()[slots].float()
                r = r - torch.gather(cbs, 1, idx[..., None].expand(-1, -1, d))
        else:
            e = self.embed.detach().float()
            e = e.view(g_n, -1, *e.shape[1:])
            cbs = e.expand(-1, n_active, -1, -1) if self.shared_codebook else e[:, :n_active]
            indices, quantized = _ops.grouped_rvq_encode(xd.float().contiguous(), cbs.contiguous(), self._rb, self._rp)
            if not grad:
                return quantized, indices, losses
        out = torch.stack([self.decode_flat(indices[g], grad=grad, group=g) for g in range(g_n)])
        return out, indices, losses

    @torch.no_grad()
    def _fill_uninitted(self, x: Tensor, group: int = 0) -> None:
        """Run k-means init (locally) for uninitialised stages reached by an eval forward."""
        r = x
        for q in range(self.num_stages):
            slot = self._slot(q, group)
            z = self._transform(r)
            if not bool(self.initted[slot]):
                self._kmeans_init(slot, z, False)
            idx, _ = self._search(z, slot)
            r = r - self.embed[slot].float()[idx]

    def decode_flat(self, indices: Tensor, grad: bool = False, group: int = 0) -> Tensor:
        """Sum of codes for ``indices`` (M, Q') (``-1`` = none) -> (M, D) fp32."""
        n = indices.shape[1]
        if not grad:
            return ops.rvq_decode(indices, self._stage_codebooks(n, group).contiguous(), backend=self.backend)
        out = 0
        for q in range(n):
            idx = indices[:, q]
            code = self.embed[self._slot(q, group)].float()[idx.clamp(min=0)]
            out = out + code * (idx >= 0).unsqueeze(1)
        return out
