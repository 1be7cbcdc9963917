"""The training loop of ``python -m rvqfast.train`` (single process or torchrun data-parallel).

Reproducibility: the batch of step ``s`` and the random draws of the model (quantize dropout
depth, residual dropout) come from generators seeded with ``(seed, s, ...)``, and checkpoints
hold the model, the optimizer and the global RNG state, so a resumed run repeats an
uninterrupted one exactly on CPU.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from rvqfast.models.tokenizer import MotionTokenizer
from rvqfast.motion.features import features_to_joints
from rvqfast.motion.skeleton import FEATURE_DIM

from .checkpoint import (
    CheckpointError, atomic_write_json, list_checkpoints, load_checkpoint, save_checkpoint,
)
from .config import TrainConfig
from .losses import bone_length_loss, heading_drift_loss, posecode_consistency_loss

# Settings that may change when resuming; everything else must match the checkpoint.
RESUMABLE_KEYS = {"steps", "val_every", "ckpt_every", "log_every", "num_threads", "device", "gif", "data",
                  "val_max_windows"}


class TrainingError(RuntimeError):
    """A problem found before training starts (bad data, existing run folder, ...)."""


@dataclass
class TrainResult:
    out: Path
    step: int
    interrupted: bool = False
    signal: int = 0
    val: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # per step of this process (rank 0)
    seconds: float = 0.0
    model: Any = None  # the trained MotionTokenizer (unwrapped from DDP)


# ---------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        dist.barrier()


# ---------------------------------------------------------------------------- data


def _seeded(seed: int, step: int, stream: int, rank: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, stream, rank])


def _torch_gen(seed: int, step: int, stream: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(int(_seeded(seed, step, stream, rank).integers(2**62)))


class WindowSampler:
    """Batch of step ``s`` = a pure function of (seed, s): windows drawn uniformly over all
    ``window``-frame crops of the training motions; rank ``r`` takes rows ``[r*B, (r+1)*B)``."""

    def __init__(self, normalized: list[np.ndarray], window: int, seed: int) -> None:
        self.window, self.seed = window, seed
        self.motions = [m for m in normalized if m.shape[0] >= window]
        if not self.motions:
            raise TrainingError(f"no training motion has at least --window {window} frames; "
                                f"use a smaller --window (a multiple of 4)")
        counts = np.array([m.shape[0] - window + 1 for m in self.motions], dtype=np.float64)
        self.p = counts / counts.sum()

    def batch(self, step: int, global_batch: int, rank: int, world: int) -> Tensor:
        g = _seeded(self.seed, step, 0)
        which = g.choice(len(self.motions), size=global_batch, p=self.p)
        u = g.random(global_batch)
        per = global_batch // world
        rows = []
        for k in range(rank * per, (rank + 1) * per):
            m = self.motions[which[k]]
            start = int(u[k] * (m.shape[0] - self.window + 1))
            rows.append(m[start:start + self.window])
        return torch.from_numpy(np.stack(rows))


def _val_windows(normalized: list[np.ndarray], window: int, cap: int) -> Tensor | None:
    rows = []
    for m in normalized:
        for s in range(0, m.shape[0] - window + 1, window):
            rows.append(m[s:s + window])
            if len(rows) >= cap:
                return torch.from_numpy(np.stack(rows))
    return torch.from_numpy(np.stack(rows)) if rows else None


def _load_data(cfg: TrainConfig, d: _Dist):
    from rvqfast.data import DatasetError, HumanML3D, resolve_dataset

    try:
        if d.main:
            root = resolve_dataset(cfg.data)
        _barrier(d)  # rank 0 generates the default dataset once; the others then find it
        if not d.main:
            root = resolve_dataset(cfg.data)
        train_ds = HumanML3D(root, "train")
        val_ds = HumanML3D(root, "val")
    except (DatasetError, FileNotFoundError, FileExistsError) as e:
        raise TrainingError(f"--data {cfg.data}: {e}") from e
    if len(train_ds) == 0:
        raise TrainingError(f"--data {cfg.data}: the train split has no usable motion ({train_ds.summary()})")
    mean, std = np.asarray(train_ds.mean), np.asarray(train_ds.std)
    if mean.shape != (FEATURE_DIM,) or std.shape != (FEATURE_DIM,) or not (std > 0).all():
        raise TrainingError(f"--data {cfg.data}: Mean.npy/Std.npy must be ({FEATURE_DIM},) with Std > 0")
    return root, train_ds, val_ds


# ---------------------------------------------------------------------------- metrics


def codebook_stats(indices: Tensor, codebook_size: int) -> tuple[float, float]:
    """(fraction of codes used, perplexity) averaged over the residual stages that ran."""
    usages, ppls = [], []
    for q in range(indices.shape[-1]):
        idx = indices[..., q].reshape(-1)
        idx = idx[idx >= 0]
        if idx.numel() == 0:
            continue
        counts = torch.bincount(idx.cpu(), minlength=codebook_size).double()
        p = counts / counts.sum()
        ent = -(p[p > 0] * p[p > 0].log()).sum()
        usages.append(float((counts > 0).double().mean()))
        ppls.append(float(ent.exp()))
    if not usages:
        return 0.0, 0.0
    return sum(usages) / len(usages), sum(ppls) / len(ppls)


@torch.no_grad()
def validate(model: MotionTokenizer, windows: Tensor, batch_size: int, device: torch.device) -> dict[str, float]:
    """Mean losses over fixed validation windows (eval mode: all stages, no dropout)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for s in range(0, windows.shape[0], batch_size):
        x = windows[s:s + batch_size].to(device)
        out = model(x)
        for k in ("loss", "recon", "joint", "commit"):
            sums[k] = sums.get(k, 0.0) + float(out[k]) * x.shape[0]
        n += x.shape[0]
    model.train(was_training)
    return {f"val_{k}": v / n for k, v in sums.items()}


# ---------------------------------------------------------------------------- logging


class _Logger:
    def __init__(self, out: Path, enabled: bool, truncate_after: int | None) -> None:
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        if truncate_after is not None and self.path.exists():
            # Drop lines past the checkpoint we resume from, so the log has each step once.
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= truncate_after:
                        keep.append(line)
                except json.JSONDecodeError:
                    continue
            self.path.write_text("".join(k + "\n" for k in keep))
        elif truncate_after is None:
            self.path.write_text("")
        self.f = self.path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard not installed: JSON lines only
            self.tb = None

    def write(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, rec["step"])

    def close(self) -> None:
        if self.enabled:
            self.f.close()
            if self.tb is not None:
                self.tb.close()


# ---------------------------------------------------------------------------- main loop


def _prepare_out(out: Path, resume: bool) -> None:
    from rvqfast._cli import out_folder_problem
    from rvqfast.models.tokenizer import CONFIG_FORMAT

    problem = out_folder_problem(out, "config.json", (CONFIG_FORMAT,), "an rvqfast run folder")
    if problem:
        raise TrainingError(problem)
    ckpts = list_checkpoints(out / "checkpoints")
    if resume:
        if not ckpts:
            raise TrainingError(f"--resume: no checkpoint in {out / 'checkpoints'}; start a new run without --resume")
        return
    # A run that died before its first checkpoint (config.json + log only) may be started again.
    if out.exists() and (ckpts or (out / "model.safetensors").exists()):
        raise TrainingError(f"--out {out} already holds a run; pass --resume to continue it or choose another --out")


def _latest_loadable(out: Path) -> Path:
    return list_checkpoints(out / "checkpoints")[-1][1]


def _render_gif(model: MotionTokenizer, val_ds, out: Path, device: torch.device) -> Path | None:
    from rvqfast.viz import render_motion

    unit = model.config.frames_per_token
    i = next((k for k, f in enumerate(val_ds.features) if f.shape[0] >= unit), None)
    if i is None:
        return None
    raw = val_ds.features[i]
    t = min(raw.shape[0] // unit * unit, 160)
    x = torch.from_numpy(np.ascontiguousarray(raw[:t])).unsqueeze(0).to(device)
    model.eval()
    with torch.no_grad():
        cats, idx = model.encode(x)
        recon = model.decode_joints(cats, idx)[0].cpu().numpy()
    orig = features_to_joints(x[0].cpu()).numpy()
    caption = val_ds.captions[i][0] if val_ds.captions[i] else None
    return render_motion([orig, recon], out / "recon.gif", titles=["original", "reconstruction"], caption=caption)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train a tokenizer as configured; returns where it stopped. Raises TrainingError /
    ValueError before any training when the setup is wrong."""
    cfg.validate()
    d = _init_distributed(cfg.device)
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device is available; use --device cpu")
        device = torch.device("cuda", d.local_rank) if d.world > 1 else torch.device(cfg.device)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if cfg.batch_size % d.world:
        raise TrainingError(f"--batch-size {cfg.batch_size} must be divisible by the {d.world} processes")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    _prepare_out(out, resume)

    _, train_ds, val_ds = _load_data(cfg, d)
    train_norm = [train_ds.normalize(f) for f in train_ds.features]
    if cfg.splice_fraction > 0:
        from .splice import splice_pool
        spliced = splice_pool(train_ds.features, int(round(cfg.splice_fraction * len(train_ds.features))),
                              cfg.seed, cfg.window)
        train_norm += [train_ds.normalize(f) for f in spliced]
    if cfg.augment:
        from .augment import augment_pool
        train_norm += [train_ds.normalize(f) for f in augment_pool(
            train_ds.features, cfg.augment, cfg.seed, cfg.augment_fraction, cfg.window)]
    sampler = WindowSampler(train_norm, cfg.window, cfg.seed)
    val_windows = _val_windows([val_ds.normalize(f) for f in val_ds.features], cfg.window, cfg.val_max_windows)

    torch.manual_seed(cfg.seed)
    model = MotionTokenizer(cfg.tokenizer)
    model.set_normalization(torch.from_numpy(np.asarray(train_ds.mean)), torch.from_numpy(np.asarray(train_ds.std)))
    if cfg.skeleton:
        model.set_skeleton(_training_skeleton(train_ds.features, d.main))
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    start = 0
    if resume:
        path = _latest_loadable(out)
        meta = load_checkpoint(path, model, opt)
        start = int(meta["step"])
        model.to(device)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json({"format": "rvqfast.tokenizer/1", "tokenizer": cfg.tokenizer.to_dict(),
                           "train": cfg.to_flat_dict()}, out / "config.json")
    logger = _Logger(out, d.main, start if resume else None)

    net: torch.nn.Module = model
    if d.world > 1:
        # Codebooks are buffers kept identical by the quantizer's own statistics sync, so DDP
        # need not broadcast buffers (which would also clobber the EMA state mid-step).
        ddp_cls = torch.nn.parallel.DistributedDataParallel
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(ddp_cls.__init__).parameters
                          else {"broadcast_buffers": False})
        net = ddp_cls(model, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync)

    stop = {"sig": 0}
    old_handlers = {}

    def _on_signal(signum, frame):  # noqa: ARG001
        stop["sig"] = signum

    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[s] = signal.signal(s, _on_signal)
        except ValueError:  # not the main thread (e.g. called from a worker thread)
            pass

    def _ckpt(step: int) -> None:
        if d.main:
            save_checkpoint(out / "checkpoints", step, model, opt,
                            {"config": cfg.to_dict(), "world_size": d.world})

    bar = None
    if d.main and progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.tokenizer.model}", dynamic_ncols=True,
                   mininterval=0.5, file=sys.stderr)
    result = TrainResult(out=out, step=start, model=model)
    t0 = time.time()
    last_t, last_step = t0, start
    model.train()
    step = start
    try:
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = cfg.lr_at(step)
            x = sampler.batch(step, cfg.batch_size, d.rank, d.world).to(device)
            try:
                res = net(x, generator=_torch_gen(cfg.seed, step, 1), sample_generator=_torch_gen(cfg.seed, step, 2, d.rank))
            except (ValueError, FloatingPointError) as e:  # e.g. NaN/Inf reaching the quantizer
                raise TrainingError(f"step {step}: {e}; the batch comes from --data {cfg.data} (check it with "
                                    f"`python -m rvqfast.data check`), run folder {out}") from e
            loss = res["loss"]
            if cfg.posecode_loss_weight > 0 and cfg.tokenizer.uses_posecodes:
                res["posecode"] = posecode_consistency_loss(model, x, res["output"])
                loss = loss + cfg.posecode_loss_weight * res["posecode"]
            if cfg.bone_loss_weight > 0 and cfg.tokenizer.uses_posecodes:
                res["bone"] = bone_length_loss(model, x, res["output"])
                loss = loss + cfg.bone_loss_weight * res["bone"]
            if cfg.heading_loss_weight > 0:
                res["heading"] = heading_drift_loss(model, x, res["output"])
                loss = loss + cfg.heading_loss_weight * res["heading"]
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingError(f"loss became {loss_value} at step {step} (run {out}, --data {cfg.data}); "
                                    "lower --lr or check the data with `python -m rvqfast.data check`")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            result.losses.append(loss_value)
            if d.main and (step % cfg.log_every == 0 or step == cfg.steps):
                usage, ppl = codebook_stats(res["indices"], cfg.tokenizer.codebook_size)
                now = time.time()
                its = (step - last_step) / max(now - last_t, 1e-9)
                last_t, last_step = now, step
                rec = {"step": step, "loss": loss_value, "recon": float(res["recon"].detach()), "joint": float(res["joint"].detach()),
                       "commit": float(res["commit"].detach()), "lr": cfg.lr_at(step - 1), "usage": usage,
                       "perplexity": ppl, "it_s": its, "time": now - t0}
                for k in ("posecode", "bone", "heading"):
                    if k in res:
                        rec[k] = float(res[k].detach())
                logger.write(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", recon=f"{rec['recon']:.4f}",
                                    commit=f"{rec['commit']:.3f}", usage=f"{usage:.2f}", ppl=f"{ppl:.1f}",
                                    refresh=False)
            if bar is not None:
                bar.update(1)
            if d.main and cfg.val_every and step % cfg.val_every == 0 and val_windows is not None:
                v = validate(model, val_windows, max(1, cfg.batch_size // d.world), device)
                logger.write({"step": step, **v})
                result.val = v
                if bar is not None:
                    bar.write(f"step {step}: val_loss {v['val_loss']:.4f} (recon {v['val_recon']:.4f})", file=sys.stderr)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
                _ckpt(step)
            sig = stop["sig"]
            if d.world > 1:
                flag = torch.tensor([sig], dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                sig = int(flag.item())
            if sig:
                _ckpt(step)
                result.interrupted = True
                result.signal = sig
                if d.main:
                    msg = (f"stopped by signal {sig} at step {step}; checkpoint saved. "
                           f"Continue with: python -m rvqfast.train --out {out} --resume")
                    if bar is not None:
                        bar.write(msg, file=sys.stderr)
                    else:
                        print(msg, file=sys.stderr)
                break
    finally:
        if bar is not None:
            bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    result.step = step
    # A signal during the final save/validation/GIF must not cut it short: keep handling it.
    if not result.interrupted:
        for s in old_handlers:
            signal.signal(s, _on_signal)
        try:
            _ckpt(step)
            if d.main:
                if val_windows is not None and (not result.val or not cfg.val_every or step % cfg.val_every):
                    v = validate(model, val_windows, max(1, cfg.batch_size // d.world), device)
                    logger.write({"step": step, **v})
                    result.val = v
                model.save(out, extra={"train": cfg.to_flat_dict(), "step": step,
                                       "val": result.val, "posecode_seen": _seen_posecodes(train_ds)})
                if cfg.tokenizer.uses_posecodes:
                    _write_posecode_bank(train_ds, out)
                if cfg.gif:
                    try:
                        gif = _render_gif(model, val_ds, out, device)
                        if gif is not None:
                            print(f"reconstruction: {gif}", file=sys.stderr)
                    except ImportError as e:
                        print(f"skipping recon.gif ({e}); pip install matplotlib imageio", file=sys.stderr)
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        if stop["sig"] and d.main:
            print(f"signal {stop['sig']} arrived during the final validation/save; the run finished and "
                  f"is saved in {out}", file=sys.stderr)
    logger.close()
    result.seconds = time.time() - t0
    _barrier(d)
    return result


def _training_skeleton(features: list[np.ndarray], main: bool) -> np.ndarray | None:
    """The bone lengths every training motion shares (frames subsampled: lengths are per-motion
    medians), or None with a line saying why decoded poses keep their own."""
    from rvqfast.motion.retarget import shared_skeleton

    bones = shared_skeleton([features_to_joints(f[::4]) for f in features])
    if bones is None and main:
        print("rvqfast.train: the training motions do not share one skeleton (bone lengths differ by more "
              "than 5 mm); decoded poses keep the decoder's bone lengths", file=sys.stderr)
    return bones


def _seen_posecodes(train_ds) -> dict[str, list[str]]:
    """Pose-code labels of the training motions per slot (edits check requests against it)."""
    from rvqfast.motion.posecodes import seen_categories
    return seen_categories(features_to_joints(f) for f in train_ds.features)


def _write_posecode_bank(train_ds, out: Path) -> None:
    """Seen pose-code assignments for token-level edits (edit.onnx; rvqfast.editing.bank)."""
    from rvqfast._io import atomic_write
    from rvqfast.editing.bank import BANK_FILE, bank_from_features
    bank = bank_from_features(train_ds.features)
    atomic_write(out / BANK_FILE, lambda f: np.save(f, bank))


_OUTPUT_ONLY_DEFAULTS: dict[str, Any] = {"skeleton": True}
# Losses added after a run was saved: the run trained without them, so it resumes without them.
_ADDED_LOSSES_OFF: dict[str, Any] = {"heading_loss_weight": 0.0}


def resume_config(out: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The config saved in ``out``'s newest checkpoint, with the resumable ``overrides``."""
    from .checkpoint import read_checkpoint_meta
    from .config import apply_overrides

    ckpts = list_checkpoints(out / "checkpoints")
    if not ckpts:
        raise TrainingError(f"--resume: no checkpoint in {out / 'checkpoints'}; start a new run without --resume")
    meta = read_checkpoint_meta(ckpts[-1][1])
    if isinstance(meta.get("config"), dict):
        # Settings added after a run was saved that only shape its output, not its training:
        # an older run resumes with today's default instead of being refused as incomplete.
        for k, v in {**_OUTPUT_ONLY_DEFAULTS, **_ADDED_LOSSES_OFF}.items():
            meta["config"].setdefault(k, v)
    try:
        _require_complete(meta["config"])
        saved = TrainConfig.from_dict(meta["config"])
        saved.out = str(out)
        saved.validate()
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{ckpts[-1][1]}: saved config is invalid ({e})") from e
    base = saved.to_flat_dict()
    changed = sorted(k for k, v in overrides.items()
                     if k not in RESUMABLE_KEYS and _norm(base.get(k)) != _norm(v))
    if changed:
        raise TrainingError(f"--resume: {changed} differ from the checkpoint's settings "
                            f"({ {k: base.get(k) for k in changed} }); only {sorted(RESUMABLE_KEYS)} may change")
    cfg = apply_overrides(saved, {k: v for k, v in overrides.items() if k in RESUMABLE_KEYS}, "flags")
    cfg.out = str(out)
    cfg.validate()
    return cfg


def _require_complete(saved: Any) -> None:
    """A saved config must name every setting: a missing one would silently take its default."""
    import dataclasses

    from rvqfast.models.tokenizer import TokenizerConfig

    if not isinstance(saved, dict) or not isinstance(saved.get("tokenizer"), dict):
        raise ValueError("expected a JSON object with a 'tokenizer' object")
    missing = sorted({f.name for f in dataclasses.fields(TrainConfig)} - set(saved)) + sorted(
        {f.name for f in dataclasses.fields(TokenizerConfig)} - set(saved["tokenizer"]))
    if missing:
        raise ValueError(f"settings missing: {missing}")


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


__all__ = ["train", "resume_config", "TrainResult", "TrainingError", "codebook_stats", "validate",
           "WindowSampler", "RESUMABLE_KEYS"]
