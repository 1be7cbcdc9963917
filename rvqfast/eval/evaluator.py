"""The T2M text-motion matching evaluator (Guo et al., 2022), its loading and its training.

Architecture, written from the published description:

* movement encoder: two 1-D convolutions (kernel 4, stride 2, padding 1; dropout 0.2,
  LeakyReLU 0.2) over the first 259 feature dims (the 4 foot-contact dims are dropped), so
  time is downsampled by 4, then a linear layer;
* motion co-embedding: linear input embedding, a bidirectional GRU with a learned initial
  hidden state over the valid (length // 4) steps, last hidden states of both directions
  concatenated, then Linear - LayerNorm - LeakyReLU - Linear to the 512-d co-embedding;
* text co-embedding: word vectors plus a linear projection of 15-way part-of-speech one-hots,
  a linear input embedding, the same bidirectional GRU / output head to 512-d.

Two ways to get one:

* :func:`load_official` reads the official checkpoint (``text_mot_match/model/finest.tar``,
  loaded with ``torch.load(weights_only=True)`` and checked key by key), its normalisation
  statistics (``.npy``, ``allow_pickle=False``) and the GloVe-derived word table in a safe
  format (see :mod:`rvqfast.eval.words`).
* :func:`train_evaluator` trains the same architecture contrastively on a HumanML3D-layout
  dataset (by default the embedded synthetic one), with fixed random word vectors built from
  its captions' vocabulary. Numbers from such an evaluator are only comparable with each other.

Saved evaluators are a folder with ``evaluator.safetensors`` (weights, motion mean/std, word
vectors) and ``evaluator.json`` (config, vocabulary, provenance).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .._io import atomic_write_bytes, atomic_write_json
from .words import NUM_POS, WordVectors, encode_sentences, parse_caption, random_word_vectors

__all__ = [
    "EvaluatorConfig", "MovementConvEncoder", "MotionEncoderBiGRUCo", "TextEncoderBiGRUCo",
    "T2MEvaluator", "load_official", "load_evaluator", "save_evaluator", "train_evaluator",
    "TrainConfig", "caption_texts", "tagged_captions", "embed_pairs", "PRESETS",
]

WEIGHTS_FILE = "evaluator.safetensors"
META_FILE = "evaluator.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EvaluatorConfig:
    """Sizes of the T2M evaluator; the defaults are those of the official checkpoint."""

    dim_pose: int = 263
    dim_movement_enc_hidden: int = 512
    dim_movement_latent: int = 512
    dim_motion_hidden: int = 1024
    dim_text_hidden: int = 512
    dim_coemb_hidden: int = 512
    dim_word: int = 300
    dim_pos_ohot: int = NUM_POS
    unit_length: int = 4
    max_text_len: int = 20

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluatorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"config: unknown evaluator config keys {sorted(unknown)}")
        cfg = cls(**d)
        for f in dataclasses.fields(cls):
            v = getattr(cfg, f.name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"config: {f.name} must be a positive int, got {v!r}")
        if cfg.dim_pose <= 4:
            raise ValueError(f"config: dim_pose must exceed 4, got {cfg.dim_pose}")
        return cfg


class MovementConvEncoder(nn.Module):
    """(B, T, dim_pose - 4) -> (B, T // 4, latent): two stride-2 convolutions + linear."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2, inplace=True),
        )
        self.out_net = nn.Linear(output_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_net(self.main(x.transpose(1, 2)).transpose(1, 2))


class _BiGRUCo(nn.Module):
    """Shared body: input embedding, BiGRU with learned h0, last states -> MLP head."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size), nn.LayerNorm(hidden_size),
            nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden_size, output_size),
        )
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))

    def _run(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        emb = self.input_emb(x)
        h0 = self.hidden.expand(-1, x.shape[0], -1).contiguous()
        packed = pack_padded_sequence(emb, lengths.cpu().to(torch.int64), batch_first=True,
                                      enforce_sorted=False)
        _, last = self.gru(packed, h0)
        return self.output_net(torch.cat([last[0], last[1]], dim=-1))


class MotionEncoderBiGRUCo(_BiGRUCo):
    """Movement latents (B, T', latent) with valid lengths (B,) -> co-embedding (B, 512)."""

    def forward(self, movements: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._run(movements, lengths)


class TextEncoderBiGRUCo(_BiGRUCo):
    """Word vectors (B, L, 300) + POS one-hots (B, L, 15), lengths (B,) -> (B, 512)."""

    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__(word_size, hidden_size, output_size)
        self.pos_emb = nn.Linear(pos_size, word_size)

    def forward(self, word_embs: torch.Tensor, pos_onehot: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        return self._run(word_embs + self.pos_emb(pos_onehot), lengths)


class T2MEvaluator(nn.Module):
    """The three encoders plus the motion normalisation and word table they were trained with.

    ``provenance`` is a JSON-able dict saying where the weights came from (official checkpoint
    or trained here, with paths and hashes); reports print it next to the numbers.
    """

    def __init__(self, config: EvaluatorConfig, words: WordVectors, mean: np.ndarray,
                 std: np.ndarray, provenance: dict | None = None) -> None:
        super().__init__()
        c = config
        if words.dim != c.dim_word:
            raise ValueError(f"words: vector size {words.dim} differs from config.dim_word {c.dim_word}")
        for name, a in (("mean", mean), ("std", std)):
            a = np.asarray(a)
            if a.shape != (c.dim_pose,) or not np.isfinite(a).all():
                raise ValueError(f"{name}: expected a finite array of shape ({c.dim_pose},), got {a.shape}")
        if (np.asarray(std) <= 0).any():
            raise ValueError("std: all entries must be positive")
        self.config = c
        self.words = words
        self.provenance = dict(provenance or {})
        self.movement_encoder = MovementConvEncoder(c.dim_pose - 4, c.dim_movement_enc_hidden,
                                                    c.dim_movement_latent)
        self.motion_encoder = MotionEncoderBiGRUCo(c.dim_movement_latent, c.dim_motion_hidden,
                                                   c.dim_coemb_hidden)
        self.text_encoder = TextEncoderBiGRUCo(c.dim_word, c.dim_pos_ohot, c.dim_text_hidden,
                                               c.dim_coemb_hidden)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)))

    def encode_motion(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """RAW features (B, T, dim_pose), valid lengths (B,) (multiples of 4) -> (B, 512).

        Padding frames (index >= length) are zeroed after normalisation, as the T2M loaders do.
        """
        c = self.config
        if not isinstance(features, torch.Tensor) or features.dim() != 3 or features.shape[-1] != c.dim_pose:
            raise ValueError(f"features: expected a tensor (B, T, {c.dim_pose}), got "
                             f"{getattr(features, 'shape', type(features).__name__)}")
        B, T, _ = features.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64)
        lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        if lengths.shape != (B,) or bool((lengths < c.unit_length).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths: expected ({B},) values in [{c.unit_length}, {T}], got {lengths.tolist()}")
        dev = self.mean.device
        x = (features.to(dev, torch.float32) - self.mean) / self.std
        valid = torch.arange(T, device=dev)[None, :] < lengths.to(dev)[:, None]
        x = x * valid[..., None]
        mov = self.movement_encoder(x[..., : c.dim_pose - 4])
        return self.motion_encoder(mov, lengths // c.unit_length)

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Captions (HumanML3D lines, ``word/POS`` token strings or plain text) -> (B, 512)."""
        w, p, n = encode_sentences(self.words, captions, self.config.max_text_len)
        dev = self.mean.device
        return self.text_encoder(w.to(dev), p.to(dev), n)


# --------------------------------------------------------------------------- saving / loading


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_evaluator(ev: T2MEvaluator, out_dir: str | Path) -> Path:
    """Write ``evaluator.safetensors`` + ``evaluator.json`` into out_dir (atomic renames)."""
    from safetensors.torch import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in ev.state_dict().items()}
    tensors["words.vectors"] = torch.from_numpy(ev.words.vectors.copy())
    atomic_write_bytes(out / WEIGHTS_FILE, save(tensors))
    meta = {"format": "rvqfast.t2m_evaluator", "version": FORMAT_VERSION,
            "config": dataclasses.asdict(ev.config), "words": ev.words.words,
            "provenance": ev.provenance, "weights_sha256": _sha256(out / WEIGHTS_FILE)}
    atomic_write_json(out / META_FILE, meta)
    return out


def load_evaluator(path: str | Path, device: str | torch.device = "cpu") -> T2MEvaluator:
    """Load a folder written by :func:`save_evaluator` (validated; eval mode)."""
    from safetensors.torch import load_file

    d = Path(path)
    if not (d / META_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"path: {d} must contain {META_FILE} and {WEIGHTS_FILE} "
                                "(train one with `python -m rvqfast.evaluator train --out DIR`)")
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("format") != "rvqfast.t2m_evaluator" or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"path: {d / META_FILE} is not an rvqfast evaluator (format/version mismatch)")
    cfg = EvaluatorConfig.from_dict(meta["config"])
    tensors = load_file(str(d / WEIGHTS_FILE))
    if "words.vectors" not in tensors:
        raise ValueError(f"path: {d / WEIGHTS_FILE} lacks the word table 'words.vectors'")
    words = WordVectors(list(meta["words"]), tensors.pop("words.vectors").numpy())
    ev = T2MEvaluator(cfg, words, tensors["mean"].numpy(), tensors["std"].numpy(),
                      provenance=meta.get("provenance"))
    _load_checked(ev, tensors, f"{d / WEIGHTS_FILE}")
    prov = dict(ev.provenance)
    prov.update({"path": str(d.resolve()), "weights_sha256": _sha256(d / WEIGHTS_FILE)})
    ev.provenance = prov
    return ev.to(device).eval()


def _load_checked(module: nn.Module, state: dict, where: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{where}: key mismatch; missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{where}: entry {k!r} is not a tensor")
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{where}: {k!r} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        if not v.is_floating_point() or not torch.isfinite(v).all():
            raise ValueError(f"{where}: {k!r} must be a finite floating tensor")
    module.load_state_dict(state, strict=True)


_OFFICIAL_CKPT = ("text_mot_match/model/finest.tar", "model/finest.tar", "finest.tar")
_OFFICIAL_META = ("Comp_v6_KLD01/meta", "text_mot_match/meta", "meta", ".")
_OFFICIAL_PARTS = ("movement_encoder", "motion_encoder", "text_encoder")


def _find(base: Path, candidates, what: str) -> Path:
    for c in candidates:
        if (base / c).exists():
            return base / c
    raise FileNotFoundError(f"checkpoint_dir: no {what} under {base} (looked for {list(candidates)})")


def load_official(checkpoint_dir: str | Path, glove_dir: str | Path,
                  device: str | torch.device = "cpu") -> T2MEvaluator:
    """Load the official T2M evaluator.

    ``checkpoint_dir``: the ``checkpoints/t2m`` folder of the T2M release (or any folder holding
    ``text_mot_match/model/finest.tar`` and ``Comp_v6_KLD01/meta/{mean,std}.npy``; ``finest.tar``
    and ``mean.npy``/``std.npy`` directly inside it also work). The checkpoint is read with
    ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects, and must contain
    ``movement_encoder``, ``motion_encoder`` and ``text_encoder`` state dicts with exactly the
    keys and shapes of this architecture.

    ``glove_dir``: folder with ``our_vab_data.npy`` (V, 300) and the vocabulary in a safe format:
    ``our_vab_words.txt`` (one word per line, row order) or ``our_vab_words.json`` (a JSON list).
    The release's ``our_vab_words.pkl`` is a pickle and is refused; convert it yourself once.
    """
    base, gdir = Path(checkpoint_dir), Path(glove_dir)
    if not base.is_dir():
        raise FileNotFoundError(f"checkpoint_dir: {base} is not a folder")
    if not gdir.is_dir():
        raise FileNotFoundError(f"glove_dir: {gdir} is not a folder")
    ckpt = _find(base, _OFFICIAL_CKPT, "finest.tar")
    meta = next((base / m for m in _OFFICIAL_META
                 if (base / m / "mean.npy").is_file() and (base / m / "std.npy").is_file()), None)
    if meta is None:
        raise FileNotFoundError(f"checkpoint_dir: no mean.npy + std.npy (the evaluator's motion "
                                f"normalisation) under {base} in any of {list(_OFFICIAL_META)}")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # the safe unpickler names the offending global
        raise ValueError(f"checkpoint_dir: {ckpt} could not be read with torch.load(weights_only=True): {e}") from e
    if not isinstance(state, dict) or not all(p in state for p in _OFFICIAL_PARTS):
        raise ValueError(f"checkpoint_dir: {ckpt} must hold a dict with {list(_OFFICIAL_PARTS)}, "
                         f"got keys {sorted(state)[:10] if isinstance(state, dict) else type(state).__name__}")
    mean = np.load(meta / "mean.npy", allow_pickle=False)
    std = np.load(meta / "std.npy", allow_pickle=False)
    vec = gdir / "our_vab_data.npy"
    vocab = next((gdir / n for n in ("our_vab_words.txt", "our_vab_words.json") if (gdir / n).is_file()), None)
    if vocab is None:
        pkl = gdir / "our_vab_words.pkl"
        raise FileNotFoundError(
            f"glove_dir: no our_vab_words.txt or our_vab_words.json in {gdir}"
            + (f"; {pkl} exists but is a pickle, which rvqfast will not load. Convert it once on "
               "a machine where you trust it: a text file with one word per line in the same "
               "order as the rows of our_vab_data.npy." if pkl.exists() else ""))
    words = WordVectors.load(vec, vocab)
    if mean.ndim != 1 or mean.shape != std.shape or not np.issubdtype(mean.dtype, np.floating):
        raise ValueError(f"checkpoint_dir: {meta}/mean.npy and std.npy must be float vectors of one "
                         f"shape, got {mean.shape} {mean.dtype} and {std.shape} {std.dtype}")
    cfg = EvaluatorConfig(dim_pose=int(mean.shape[0]), dim_word=words.dim)
    ev = T2MEvaluator(cfg, words, mean, std, provenance={
        "kind": "official", "checkpoint": str(ckpt.resolve()), "checkpoint_sha256": _sha256(ckpt),
        "glove_dir": str(gdir.resolve()), "word_vectors_sha256": _sha256(vec)})
    for part in _OFFICIAL_PARTS:
        sd = state[part]
        if not isinstance(sd, dict):
            raise ValueError(f"checkpoint_dir: {ckpt}[{part!r}] is not a state dict")
        _load_checked(getattr(ev, part), dict(sd), f"{ckpt}[{part!r}]")
    return ev.to(device).eval()


# --------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Contrastive training of the evaluator on a HumanML3D-layout dataset."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-4
    temperature: float = 1.0
    max_frames: int = 196
    seed: int = 0
    preset: str = "t2m"  # "t2m": official sizes; "small" / "tiny": narrower, for quick tests
    threads: int | None = None  # torch CPU threads during training (None: leave as is)


PRESETS = {
    "t2m": EvaluatorConfig(),
    "small": EvaluatorConfig(dim_movement_enc_hidden=256, dim_movement_latent=256,
                             dim_motion_hidden=512, dim_text_hidden=256, dim_coemb_hidden=256),
    "tiny": EvaluatorConfig(dim_movement_enc_hidden=32, dim_movement_latent=32,
                            dim_motion_hidden=32, dim_text_hidden=32, dim_coemb_hidden=32),
}


def tagged_captions(ds) -> list[list[str]]:
    """Per motion of a HumanML3D split, its caption lines *with* the ``word/POS`` tokens.

    The loader keeps only the caption text; the T2M text encoder wants the tokens, so the text
    files are re-read here (plain UTF-8, never executed). Falls back to the loader's captions
    for a file that cannot be read or has no tagged lines.
    """
    out = []
    for name, caps in zip(ds.names, ds.captions):
        lines: list[str] = []
        try:
            text = (Path(ds.root) / "texts" / f"{name}.txt").read_text(encoding="utf-8")
            lines = [ln.strip() for ln in text.splitlines()
                     if ln.count("#") >= 1 and ln.split("#")[0].strip() and parse_caption(ln)]
        except (OSError, UnicodeDecodeError):
            lines = []
        out.append(lines or list(caps))
    return out


def caption_texts(captions) -> list[str]:
    """Non-empty captions of one motion (lines with no usable tokens are dropped)."""
    return [c for c in captions if isinstance(c, str) and parse_caption(c)]


def _crop(feat: np.ndarray, unit: int, max_frames: int, rng: np.random.Generator | None) -> np.ndarray:
    T = min(feat.shape[0], max_frames)
    T -= T % unit
    start = 0 if rng is None or feat.shape[0] == T else int(rng.integers(0, feat.shape[0] - T + 1))
    return feat[start:start + T]


def _batch(feats: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(f.shape[0] for f in feats)
    x = np.zeros((len(feats), T, feats[0].shape[1]), np.float32)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    return torch.from_numpy(x), torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)


def _contrastive_loss(t: torch.Tensor, m: torch.Tensor, temperature: float) -> torch.Tensor:
    # Symmetric InfoNCE on negative Euclidean distance, the quantity R-precision ranks by.
    d = torch.cdist(t, m)
    logits = -d / temperature
    target = torch.arange(t.shape[0])
    return 0.5 * (nn.functional.cross_entropy(logits, target)
                  + nn.functional.cross_entropy(logits.T, target))


@torch.no_grad()
def embed_pairs(ev: T2MEvaluator, feats: list[np.ndarray], captions: list[str],
                batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Text and motion embeddings for aligned lists of RAW features and captions."""
    ev.eval()
    ts, ms = [], []
    for i in range(0, len(feats), batch_size):
        x, n = _batch(feats[i:i + batch_size])
        ms.append(ev.encode_motion(x, n).cpu().numpy())
        ts.append(ev.encode_text(captions[i:i + batch_size]).cpu().numpy())
    return np.concatenate(ts), np.concatenate(ms)


def train_evaluator(data: str | Path = "default", out: str | Path | None = None,
                    config: TrainConfig | None = None, *, progress: bool = True,
                    limit: int | None = None) -> T2MEvaluator:
    """Train a T2M-architecture evaluator contrastively on ``data``'s train split.

    The word table holds fixed random 300-d unit vectors for the training captions' vocabulary
    (no GloVe is shipped); POS one-hots follow the T2M categories. Validation R-precision on
    the val split is stored in the provenance. ``limit`` caps the motions used (tests).
    """
    from ..data import HumanML3D, resolve_dataset

    cfg = config or TrainConfig()
    if cfg.preset not in PRESETS:
        raise ValueError(f"config.preset: expected one of {sorted(PRESETS)}, got {cfg.preset!r}")
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError("config: epochs must be >= 1 and batch_size >= 2")
    root = resolve_dataset(data)
    train = HumanML3D(root, "train")
    val = HumanML3D(root, "val")
    arch = PRESETS[cfg.preset]
    unit = arch.unit_length

    tr_caps, va_caps = tagged_captions(train), tagged_captions(val)

    def usable(ds, caps):
        idx = [i for i in range(len(ds.features))
               if ds.features[i].shape[0] >= unit and caption_texts(caps[i])]
        return idx[:limit] if limit else idx

    tr_idx, va_idx = usable(train, tr_caps), usable(val, va_caps)
    if len(tr_idx) < cfg.batch_size:
        raise ValueError(f"data: the train split has {len(tr_idx)} usable motions, fewer than "
                         f"batch_size={cfg.batch_size}")
    vocab = sorted({w for i in tr_idx for c in caption_texts(tr_caps[i]) for w, _ in parse_caption(c)})
    words = random_word_vectors(vocab, arch.dim_word, seed=cfg.seed)
    if cfg.threads is not None:
        # Small recurrent steps on a busy machine run far slower with more threads than cores.
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ev = T2MEvaluator(arch, words, np.asarray(train.mean), np.asarray(train.std))
    opt = torch.optim.AdamW(ev.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = len(tr_idx) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="training evaluator", unit="step")
    t0 = time.time()
    losses = []
    step = 0
    for _ in range(cfg.epochs):
        order = rng.permutation(tr_idx)
        ev.train()
        for b in range(steps_per_epoch):
            ids = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            feats = [_crop(train.features[i], unit, cfg.max_frames, rng) for i in ids]
            caps = [caption_texts(tr_caps[i]) for i in ids]
            caps = [c[int(rng.integers(len(c)))] for c in caps]
            x, n = _batch(feats)
            loss = _contrastive_loss(ev.encode_text(caps), ev.encode_motion(x, n), cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(ev.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    if bar is not None:
        bar.close()
    val_rprec = None
    if len(va_idx) >= 32:
        feats = [_crop(val.features[i], unit, cfg.max_frames, None) for i in va_idx]
        caps = [caption_texts(va_caps[i])[0] for i in va_idx]
        from .metrics import r_precision
        t, m = embed_pairs(ev, feats, caps)
        val_rprec = r_precision(t, m).tolist()
    manifest = Path(root) / "rvqfast_dataset.json"
    ev.provenance = {
        # The folder's name, not its absolute path: the manifest hash identifies the data.
        "kind": "trained", "data": Path(root).resolve().name,
        "data_manifest_sha256": _sha256(manifest) if manifest.is_file() else None,
        "word_vectors": "fixed random 300-d unit vectors (seeded) over the training captions' vocabulary",
        "train_config": dataclasses.asdict(cfg), "steps": step, "train_seconds": round(time.time() - t0, 1),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "val_r_precision_top123": val_rprec, "n_train_motions": len(tr_idx),
    }
    ev.eval()
    if out is not None:
        save_evaluator(ev, out)
    return ev


def default_evaluator_dir() -> Path:
    """Where the default evaluator is cached: next to the default dataset's folder
    (``~/.cache/rvqfast/default_vN_evaluator``, or ``$RVQFAST_DATA`` + ``_evaluator``)."""
    from ..data import default_root
    root = default_root()
    return root.with_name(root.name + "_evaluator")


def default_evaluator(device: str | torch.device = "cpu", *, progress: bool = True,
                      say=print, config: TrainConfig | None = None) -> T2MEvaluator:
    """The evaluator for ``--data default``: loaded from :func:`default_evaluator_dir` when it
    was trained on the current default dataset (same manifest hash), otherwise trained there
    once (``config``, default: default settings on one torch thread) and cached; says which."""
    import os
    import shutil
    import tempfile

    from ..data import default_dataset
    root = default_dataset(progress=progress)
    want = _sha256(root / "rvqfast_dataset.json")
    d = default_evaluator_dir()
    if (d / META_FILE).is_file():
        try:
            ev = load_evaluator(d, device)
            if ev.provenance.get("data_manifest_sha256") == want:
                say(f"[evaluate] using the cached default evaluator {d}")
                return ev
        except (ValueError, OSError, KeyError):
            pass  # unreadable or for other data: retrain below
    say(f"[evaluate] no --evaluator given: training the default evaluator on the default data "
        f"once (a few minutes on one core); it is cached in {d} for later runs")
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.partial-", dir=d.parent))
    try:
        torch.manual_seed(0)
        train_evaluator(root, tmp, config or TrainConfig(threads=1), progress=progress)
        if d.exists():
            shutil.rmtree(d)
        os.rename(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_evaluator(d, device)
