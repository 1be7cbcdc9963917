"""Motion tokenizer: pose codes (CoMo's interpretable latent) plus residual vector quantization.

For a motion of ``T`` frames (``T`` a multiple of 4) with HumanML3D features ``x`` (T, 263):

* the encoder maps the normalised features to ``z`` (T/4, D);
* the pose latent ``p_j`` of latent frame ``j`` is the sum of the embeddings of the 70 active
  pose-code categories of motion frame ``4j`` (a learnable 392 x D table);
* the residual ``r = z - sg(p)`` is quantized by :class:`rvqfast.ResidualVQ` into ``r_hat``;
* the decoder maps ``p + r_hat`` back to (T, 263).

Variants (``TokenizerConfig.model``): ``"posecode_rvq"`` (the above), ``"posecode"`` (decoder sees
``p`` only: the CoMo baseline, no encoder) and ``"rvq"`` (plain RVQ of ``z``: the MoMask-style
baseline, no pose latent).

The public methods take and return RAW features; normalisation with the ``mean``/``std`` buffers
(the training set's statistics) happens inside.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rvqfast.motion.features import RIC, features_to_joints, features_with_bone_lengths
from rvqfast.motion.posecodes import NUM_CATEGORIES, NUM_SLOTS, SLOT_OFFSETS, SLOT_SIZES, posecode_indices
from rvqfast.motion.skeleton import FEATURE_DIM, NUM_JOINTS

from ._quantizer import ResidualVQ, quantize_first_stages
from .conv import MotionDecoder, MotionEncoder

MODELS = ("posecode", "posecode_rvq", "rvq")
CONFIG_FORMAT = "rvqfast.tokenizer/1"


@dataclass
class TokenizerConfig:
    """Architecture and objective of a :class:`MotionTokenizer`.

    ``quantize_dropout`` is the probability that a training step keeps only the first ``n``
    residual stages (``n`` uniform in 1..Q); ``residual_dropout`` the probability that a sample's
    whole ``r_hat`` is zeroed (so the decoder also learns to work from pose codes alone).
    """

    model: str = "posecode_rvq"
    width: int = 512
    code_dim: int = 512
    num_quantizers: int = 6
    codebook_size: int = 512
    quantize_dropout: float = 0.2
    residual_dropout: float = 0.1
    down_t: int = 2
    dilations: tuple[int, ...] = (9, 3, 1)
    ema_decay: float = 0.99
    kmeans_init: bool = True
    threshold_ema_dead_code: int = 2
    joint_loss_weight: float = 0.5
    commit_weight: float = 0.02
    feature_dim: int = field(default=FEATURE_DIM)

    def __post_init__(self) -> None:
        self.dilations = tuple(int(d) for d in self.dilations)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {MODELS}, got {self.model!r}")
        for name in ("width", "code_dim", "num_quantizers", "codebook_size", "down_t"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if self.down_t != 2:
            raise ValueError(f"down_t: pose codes are taken every 4th frame, so down_t must be 2, got {self.down_t}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations: expected positive integers, got {self.dilations!r}")
        # Bounds that keep a (possibly hostile) config from allocating tens of GB before anything
        # else is checked; far above any published motion tokenizer.
        for name, hi in (("width", 8192), ("code_dim", 8192), ("num_quantizers", 64), ("codebook_size", 1 << 20)):
            if getattr(self, name) > hi:
                raise ValueError(f"{name}: expected at most {hi}, got {getattr(self, name)}")
        if len(self.dilations) > 16 or max(self.dilations) > 4096:
            raise ValueError(f"dilations: expected at most 16 values <= 4096, got {self.dilations!r}")
        if self.num_quantizers * self.codebook_size * self.code_dim > 1 << 28:
            raise ValueError("num_quantizers * codebook_size * code_dim: expected at most 2**28 codebook "
                             f"entries (1 GiB), got {self.num_quantizers * self.codebook_size * self.code_dim}")
        for name in ("quantize_dropout", "residual_dropout", "ema_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1), got {v!r}")
        for name in ("joint_loss_weight", "commit_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        if not isinstance(self.threshold_ema_dead_code, int) or self.threshold_ema_dead_code < 0:
            raise ValueError(f"threshold_ema_dead_code: expected an integer >= 0, got {self.threshold_ema_dead_code!r}")
        if self.feature_dim != FEATURE_DIM:
            raise ValueError(f"feature_dim: only the HumanML3D {FEATURE_DIM}-d features are supported, got {self.feature_dim}")

    @property
    def uses_posecodes(self) -> bool:
        return self.model in ("posecode", "posecode_rvq")

    @property
    def uses_rvq(self) -> bool:
        return self.model in ("posecode_rvq", "rvq")

    @property
    def frames_per_token(self) -> int:
        return 2 ** self.down_t

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenizerConfig":
        """Build from a dict (e.g. JSON); unknown keys are an error."""
        if not isinstance(d, dict):
            raise ValueError(f"tokenizer config: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"tokenizer config: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


def _smooth_l1(a: Tensor, b: Tensor) -> Tensor:
    return F.smooth_l1_loss(a, b)


class MotionTokenizer(nn.Module):
    """Pose-code + residual-VQ motion tokenizer (see the module docstring)."""

    def __init__(self, config: TokenizerConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = TokenizerConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        config.validate()
        self.config = config
        c = config
        self.encoder = (
            MotionEncoder(c.feature_dim, c.width, c.code_dim, c.down_t, c.dilations) if c.uses_rvq else None
        )
        self.decoder = MotionDecoder(c.feature_dim, c.width, c.code_dim, c.down_t, c.dilations)
        if c.uses_posecodes:
            self.posecode_embedding = nn.Parameter(torch.randn(NUM_CATEGORIES, c.code_dim) / math.sqrt(NUM_SLOTS))
        else:
            self.posecode_embedding = None
        if c.uses_rvq:
            # quantize_dropout=True marks coarse (fewer-stage) indices as valid for the module's
            # decode helpers. Training bypasses the module's own dropout (which drops on every
            # step) and applies the configured probability itself (``quantize_first_stages``).
            self.rvq = ResidualVQ(
                dim=c.code_dim,
                num_quantizers=c.num_quantizers,
                codebook_size=c.codebook_size,
                quantize_dropout=True,
                decay=c.ema_decay,
                kmeans_init=c.kmeans_init,
                kmeans_iters=10,
                threshold_ema_dead_code=c.threshold_ema_dead_code,
                commitment_weight=1.0,
            )
        else:
            self.rvq = None
        self.register_buffer("slot_offsets", torch.tensor(SLOT_OFFSETS, dtype=torch.int64), persistent=False)
        self.register_buffer("slot_sizes", torch.tensor(SLOT_SIZES, dtype=torch.int64), persistent=False)
        self.register_buffer("mean", torch.zeros(c.feature_dim))
        self.register_buffer("std", torch.ones(c.feature_dim))
        # Bone lengths (m) that decoded joints are set to; saved in config.json, not the weights.
        self.register_buffer("skeleton_bones", torch.zeros(NUM_JOINTS - 1), persistent=False)
        self._has_skeleton = False

    # ------------------------------------------------------------------ helpers

    @property
    def num_quantizers(self) -> int:
        """Residual stages Q (0 for the ``posecode`` variant)."""
        return self.config.num_quantizers if self.config.uses_rvq else 0

    def set_normalization(self, mean: Tensor, std: Tensor) -> None:
        """Store the dataset statistics used to (de)normalise features."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != (self.config.feature_dim,) or std.shape != (self.config.feature_dim,):
            raise ValueError(f"mean/std: expected shape ({self.config.feature_dim},), got {tuple(mean.shape)}/{tuple(std.shape)}")
        if not bool(torch.isfinite(mean).all()) or not bool((std > 0).all()):
            raise ValueError("mean/std: expected finite means and positive standard deviations")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def set_skeleton(self, bone_lengths: Tensor | None) -> None:
        """Decode onto one skeleton: the 21 bone lengths (m, t2m order) that every decoded pose
        gets, bone directions kept (:func:`~rvqfast.motion.features_with_bone_lengths`).
        ``None`` turns it off. Training sets it when all training motions share one skeleton."""
        if bone_lengths is None:
            self.skeleton_bones.zero_()
            self._has_skeleton = False
            return
        b = torch.as_tensor(bone_lengths, dtype=torch.float32).reshape(-1)
        if b.shape != (NUM_JOINTS - 1,) or not bool(torch.isfinite(b).all()) or not bool((b > 0).all()):
            raise ValueError(f"bone_lengths: expected {NUM_JOINTS - 1} finite positive lengths in metres, "
                             f"got shape {tuple(b.shape)}")
        self.skeleton_bones.copy_(b)
        self._has_skeleton = True

    @property
    def skeleton(self) -> Tensor | None:
        """The bone lengths decoded poses are set to (21,), or ``None`` (see :meth:`set_skeleton`)."""
        return self.skeleton_bones if self._has_skeleton else None

    def to_skeleton(self, features: Tensor) -> Tensor:
        """RAW features with the model's bone lengths (unchanged when it has no skeleton)."""
        return features_with_bone_lengths(features, self.skeleton_bones) if self._has_skeleton else features

    def normalize(self, features: Tensor) -> Tensor:
        return (features - self.mean) / self.std

    def denormalize(self, features: Tensor) -> Tensor:
        return features * self.std + self.mean

    def _check_features(self, features: Tensor) -> Tensor:
        if not isinstance(features, Tensor):
            raise TypeError(f"features: expected a torch.Tensor, got {type(features).__name__}")
        if features.dim() != 3 or features.shape[-1] != self.config.feature_dim:
            raise ValueError(f"features: expected shape (B, T, {self.config.feature_dim}), got {tuple(features.shape)}")
        t, unit = features.shape[1], self.config.frames_per_token
        if t == 0 or t % unit:
            raise ValueError(f"features: T={t} frames, but T must be a positive multiple of {unit} "
                             f"(crop to {t - t % unit} frames)")
        if not features.is_floating_point():
            raise ValueError(f"features: expected a floating dtype, got {features.dtype}")
        if not bool(torch.isfinite(features).all()):
            raise ValueError("features: contains NaN or Inf")
        return features.to(self.mean.device, torch.float32)

    def posecode_categories(self, features: Tensor) -> Tensor:
        """LOCAL pose-code categories (B, T/4, 70) of frames 0, 4, 8, ... of RAW features."""
        joints = features_to_joints(features[:, :: self.config.frames_per_token])
        return posecode_indices(joints)

    def pose_latent(self, categories: Tensor) -> Tensor:
        """Sum of the 70 active category embeddings: (B, N, 70) LOCAL categories -> (B, N, D)."""
        if self.posecode_embedding is None:
            raise ValueError(f"pose_latent: model {self.config.model!r} has no pose-code embedding")
        flat = categories + self.slot_offsets
        return F.embedding(flat, self.posecode_embedding).sum(dim=-2)

    def _residual_from_indices(self, indices: Tensor, n_quantizers: int | Tensor) -> Tensor:
        """Sum of the codes of the first ``n_quantizers`` stages; index -1 marks a skipped stage.
        Pure tensor ops (gather + mask), so it traces to ONNX with ``n_quantizers`` as an input."""
        codebooks = self.rvq.codebooks  # (Q, K, D)
        q, k, d = codebooks.shape
        b, n, q_in = indices.shape
        stage = torch.arange(q_in, device=indices.device)
        keep = (indices >= 0) & (stage < n_quantizers)
        flat = indices.clamp(min=0) + stage * k  # index into the (Q*K, D) table
        codes = F.embedding(flat, codebooks[:q_in].reshape(q_in * k, d))
        return (codes * keep.unsqueeze(-1).to(codes.dtype)).sum(dim=-2)

    def _decode_normalized(self, categories: Tensor, indices: Tensor, n_quantizers: int | Tensor) -> Tensor:
        c = self.config
        if c.model == "posecode":
            h = self.pose_latent(categories)
        elif c.model == "rvq":
            h = self._residual_from_indices(indices, n_quantizers)
        else:
            h = self.pose_latent(categories) + self._residual_from_indices(indices, n_quantizers)
        return self.decoder(h.transpose(1, 2)).transpose(1, 2)

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def encode(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """RAW features (B, T, 263) -> (categories (B, T/4, 70) int64, indices (B, T/4, Q) int64).

        ``T`` must be a multiple of 4. For ``model="posecode"`` ``indices`` has Q = 0; for
        ``model="rvq"`` the categories are returned but the decoder does not use them.
        """
        from rvqfast import ops

        x = self._check_features(features)
        categories = self.posecode_categories(x)
        b, n = categories.shape[:2]
        if not self.config.uses_rvq:
            return categories, torch.zeros(b, n, 0, dtype=torch.int64, device=x.device)
        z = self.encoder(self.normalize(x).transpose(1, 2)).transpose(1, 2)
        if self.config.model == "posecode_rvq":
            z = z - self.pose_latent(categories)
        idx, _ = ops.rvq_encode(z.reshape(b * n, -1).contiguous(), self.rvq.codebooks.detach().contiguous())
        return categories, idx.reshape(b, n, -1)

    def _check_codes(self, categories: Tensor, indices: Tensor, n_quantizers: int | None) -> int:
        if not isinstance(categories, Tensor) or categories.dim() != 3 or categories.shape[-1] != NUM_SLOTS:
            raise ValueError(f"categories: expected a (B, N, {NUM_SLOTS}) integer tensor, got "
                             f"{tuple(categories.shape) if isinstance(categories, Tensor) else type(categories).__name__}")
        if categories.is_floating_point() or categories.dtype == torch.bool:
            raise ValueError(f"categories: expected an integer dtype, got {categories.dtype}")
        if bool(((categories < 0) | (categories >= self.slot_sizes.to(categories.device))).any()):
            raise ValueError("categories: each entry must lie in [0, SLOT_SIZES[slot]) (LOCAL category per slot)")
        q = self.num_quantizers
        if not isinstance(indices, Tensor) or indices.dim() != 3 or indices.shape[:2] != categories.shape[:2]:
            raise ValueError(f"indices: expected shape (B, N, Q') matching categories {tuple(categories.shape[:2])}, got "
                             f"{tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__}")
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise ValueError(f"indices: expected an integer dtype, got {indices.dtype}")
        if indices.shape[-1] > q:
            raise ValueError(f"indices: {indices.shape[-1]} stages given but the model has {q}")
        if indices.numel() and bool(((indices < -1) | (indices >= self.config.codebook_size)).any()):
            raise ValueError(f"indices: entries must lie in [-1, {self.config.codebook_size}) (-1 = stage skipped)")
        if n_quantizers is None:
            return indices.shape[-1]
        if isinstance(n_quantizers, bool) or not isinstance(n_quantizers, int) or not 0 <= n_quantizers <= q:
            raise ValueError(f"n_quantizers: expected an integer in [0, {q}] or None, got {n_quantizers!r}")
        if self.config.model == "rvq" and n_quantizers == 0:
            raise ValueError("n_quantizers: the 'rvq' model needs at least one stage (it has no pose latent)")
        return min(n_quantizers, indices.shape[-1])

    def decode(self, categories: Tensor, indices: Tensor, n_quantizers: int | None = None) -> Tensor:
        """(categories (B, N, 70), indices (B, N, Q')) -> RAW features (B, 4N, 263).

        Only the first ``n_quantizers`` residual stages are used (default: all given);
        ``n_quantizers=0`` decodes from the pose codes alone (``posecode_rvq``). A model with a
        :attr:`skeleton` returns poses with its bone lengths.
        """
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        n = n_quantizers if exporting else self._check_codes(categories, indices, n_quantizers)
        dev = self.mean.device
        y = self._decode_normalized(categories.to(dev, torch.int64), indices.to(dev, torch.int64),
                                    indices.shape[-1] if n is None else n)
        return self.to_skeleton(self.denormalize(y))

    def decode_joints(self, categories: Tensor, indices: Tensor, n_quantizers: int | None = None) -> Tensor:
        """Like :meth:`decode`, then recover joints: (B, 4N, 22, 3)."""
        return features_to_joints(self.decode(categories, indices, n_quantizers))

    def edit(self, features: Tensor, set: dict[str, str] | list[str], frames=None, **kwargs: Any):  # noqa: A002
        """Change pose codes of one motion and decode; see :func:`rvqfast.editing.edit`
        (keyword options: ``residual``, ``blend``, ``n_quantizers``, ...).

        Example: ``tok.edit(feats, set={"angle:left_knee": "bent 90-100 deg"}, frames=range(0, 40))``.
        """
        # Imported here: rvqfast.editing never imports this module, so there is no cycle.
        from rvqfast.editing import edit

        return edit(self, features, set, frames, **kwargs)

    # ------------------------------------------------------------------ training

    def forward(self, x_norm: Tensor, generator: torch.Generator | None = None,
                sample_generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training/validation pass on NORMALISED features (B, T, 263).

        ``generator`` draws the per-step quantize-dropout depth: give every data-parallel rank
        the same one (the codebook sync needs the same stages on all ranks). ``sample_generator``
        draws per-sample residual dropout (may differ per rank). Both must be CPU generators.
        Returns the total loss and its parts plus the indices.
        """
        c = self.config
        b, t, _ = x_norm.shape
        with torch.no_grad():
            categories = self.posecode_categories(self.denormalize(x_norm)) if c.uses_posecodes else None
        h = x_norm.new_zeros(())
        commit = x_norm.new_zeros(())
        indices = torch.zeros(b, t // c.frames_per_token, 0, dtype=torch.int64, device=x_norm.device)
        if c.uses_posecodes:
            p = self.pose_latent(categories)
            h = p
        if c.uses_rvq:
            z = self.encoder(x_norm.transpose(1, 2)).transpose(1, 2)
            r = z - p.detach() if c.uses_posecodes else z
            n_active = c.num_quantizers
            if self.training and c.quantize_dropout > 0:
                g = generator
                if float(torch.rand((), generator=g)) < c.quantize_dropout:
                    n_active = int(torch.randint(1, c.num_quantizers + 1, (), generator=g))
            r_hat, indices, stage_losses = quantize_first_stages(self.rvq, r, n_active)
            commit = stage_losses.sum()
            if self.training and c.uses_posecodes and c.residual_dropout > 0:
                keep = torch.rand(b, generator=sample_generator) >= c.residual_dropout
                r_hat = r_hat * keep.to(r_hat.device, r_hat.dtype).view(b, 1, 1)
            h = h + r_hat
        y = self.decoder(h.transpose(1, 2)).transpose(1, 2)
        recon = _smooth_l1(y, x_norm)
        joint = _smooth_l1(y[..., RIC], x_norm[..., RIC])
        loss = recon + c.joint_loss_weight * joint + c.commit_weight * commit
        return {"loss": loss, "recon": recon, "joint": joint, "commit": commit, "indices": indices, "output": y}

    # ------------------------------------------------------------------ persistence

    def save(self, run_dir: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``run_dir/config.json`` and ``run_dir/model.safetensors`` (atomically)."""
        from .persist import atomic_save_tensors, atomic_write_json

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = {"format": CONFIG_FORMAT, "tokenizer": self.config.to_dict()}
        if extra:
            meta.update(extra)
        meta["skeleton_bone_lengths_m"] = self.skeleton.tolist() if self.skeleton is not None else None
        sha = atomic_save_tensors(self.state_dict(), run_dir / "model.safetensors")
        meta["weights"] = {"file": "model.safetensors", "sha256": sha}  # verified by load()
        atomic_write_json(meta, run_dir / "config.json")

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> "MotionTokenizer":
        """Load a trained tokenizer from a run folder (config.json + model.safetensors), with the
        tensor names, shapes and dtypes checked against the architecture in config.json."""
        from .persist import CheckpointError, check_finite_tensors, load_tensors, read_json, verify_sha256

        run_dir = Path(run_dir)
        cfg_path, weights = run_dir / "config.json", run_dir / "model.safetensors"
        for p in (cfg_path, weights):
            if not p.is_file():
                raise FileNotFoundError(f"run_dir: {p} not found; expected a folder written by "
                                        f"`python -m rvqfast.train --out {run_dir}`")
        meta = read_json(cfg_path)
        if meta.get("format") != CONFIG_FORMAT or "tokenizer" not in meta:
            raise CheckpointError(f"{cfg_path}: not an rvqfast tokenizer config (format {meta.get('format')!r})")
        try:  # the config is checked (sizes bounded) before any model memory is allocated
            config = TokenizerConfig.from_dict(meta["tokenizer"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{cfg_path}: invalid tokenizer settings ({e})") from None
        if "weights" in meta:  # runs saved before checksums were recorded have none
            w = meta["weights"]
            verify_sha256(weights, w.get("sha256") if isinstance(w, dict) else w, cfg_path)
        model = cls(config)
        state = load_tensors(weights, expected=model.state_dict())
        check_finite_tensors(state, str(weights))
        model.load_state_dict(state)
        # Pose-code labels seen in training, per slot (None for older runs): edits check against it.
        model.posecode_seen = meta.get("posecode_seen")
        bones = meta.get("skeleton_bone_lengths_m")  # absent in runs saved before it existed
        if bones is not None:
            try:
                model.set_skeleton(torch.tensor(bones, dtype=torch.float32))
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"{cfg_path}: invalid skeleton_bone_lengths_m ({e})") from None
        return model.to(device).eval()


__all__ = ["TokenizerConfig", "MotionTokenizer", "MODELS"]
