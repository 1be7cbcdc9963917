"""Word vectors and part-of-speech one-hots for the T2M text encoder.

Captions in the HumanML3D layout carry tokens ``word/POS`` (spaCy universal tags), e.g.
``"a/DET person/NOUN walk/VERB forward/ADV"``. The T2M setup maps each token to a word vector
and a one-hot over 15 part-of-speech categories, where a fixed list of motion-relevant words
(locations, body parts, objects, actions, manner) override their spaCy tag. A sentence is
framed by ``sos``/``eos`` and padded with ``unk`` to ``max_text_len + 2`` tokens.

Word tables are read only from safe formats (never unpickled):

* vectors: ``.npy`` float array (V, D) read with ``allow_pickle=False``, or safetensors;
* vocabulary: UTF-8 text with one word per line, or a JSON list of strings, in row order.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "POS_CATEGORIES", "VIP_WORDS", "NUM_POS", "parse_caption", "pos_category",
    "WordVectors", "random_word_vectors", "encode_sentences",
]

POS_CATEGORIES: tuple[str, ...] = (
    "VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV",
    "Loc_VIP", "Body_VIP", "Obj_VIP", "Act_VIP", "Desc_VIP", "OTHER",
)
NUM_POS = len(POS_CATEGORIES)
_POS_INDEX = {p: i for i, p in enumerate(POS_CATEGORIES)}

VIP_WORDS: dict[str, frozenset[str]] = {
    "Loc_VIP": frozenset({"left", "right", "clockwise", "counterclockwise", "anticlockwise",
                          "forward", "back", "backward", "up", "down", "straight", "curve"}),
    "Body_VIP": frozenset({"arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg",
                           "waist", "eye", "knee", "shoulder", "thigh"}),
    "Obj_VIP": frozenset({"stair", "dumbbell", "chair", "window", "floor", "car", "ball",
                          "handrail", "baseball", "basketball"}),
    "Act_VIP": frozenset({"walk", "run", "swing", "pick", "bring", "kick", "put", "squat",
                          "throw", "hop", "dance", "jump", "turn", "stumble", "stop", "sit",
                          "lift", "lower", "raise", "wash", "stand", "kneel", "stroll", "rub",
                          "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate", "spin",
                          "spread", "climb"}),
    "Desc_VIP": frozenset({"slowly", "carefully", "fast", "careful", "slow", "quickly", "happy",
                           "angry", "sad", "happily", "angrily", "sadly"}),
}
SPECIAL_TOKENS = ("sos", "eos", "unk")
_TAGGED = re.compile(r"[^/\s]+/[A-Za-z_]+")
_PUNCT = re.compile(r"[^\w'-]")


def parse_caption(caption: str) -> list[tuple[str, str]]:
    """(word, POS) tokens of one caption.

    Accepts a HumanML3D text line ``caption#tok/POS tok/POS ...#start#end``, a bare token
    string ``tok/POS tok/POS``, or plain text (every word tagged ``OTHER``; VIP words still
    get their VIP category).
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption: expected str, got {type(caption).__name__}")
    parts = caption.split("#")
    body = parts[1] if len(parts) >= 2 else parts[0]
    toks = body.split()
    tagged = bool(toks) and all(_TAGGED.fullmatch(t) for t in toks)
    out = []
    for tok in toks:
        word, pos = tok.rsplit("/", 1) if tagged else (tok, "OTHER")
        # Plain text carries punctuation; tagged tokens are already clean words.
        word = word.lower() if tagged else _PUNCT.sub("", word.lower())
        if word:
            out.append((word, pos))
    return out


def pos_category(word: str, pos: str) -> int:
    """Index into POS_CATEGORIES: VIP lists first, then the tag itself, else OTHER."""
    for cat, words in VIP_WORDS.items():
        if word in words:
            return _POS_INDEX[cat]
    return _POS_INDEX.get(pos, _POS_INDEX["OTHER"])


@dataclass
class WordVectors:
    """A word table: ``vectors[i]`` is the vector of ``words[i]``; must contain ``unk``."""

    words: list[str]
    vectors: np.ndarray  # (V, D) float32

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
            raise ValueError(f"vectors: expected shape ({len(self.words)}, D), got {self.vectors.shape}")
        if not np.isfinite(self.vectors).all():
            raise ValueError("vectors: contains NaN or infinite values")
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("words: vocabulary contains duplicates")
        for tok in SPECIAL_TOKENS:
            if tok not in self.index:
                raise ValueError(f"words: the vocabulary must contain the token {tok!r}")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def vector(self, word: str) -> np.ndarray:
        return self.vectors[self.index.get(word, self.index["unk"])]

    @classmethod
    def load(cls, vectors_path: str | Path, vocab_path: str | Path) -> "WordVectors":
        """Load vectors (.npy / .safetensors) and a vocabulary (.txt one-per-line / .json list)."""
        vp, wp = Path(vectors_path), Path(vocab_path)
        if wp.suffix in (".pkl", ".pickle"):
            raise ValueError(
                f"vocab_path: {wp} is a pickle, which can run arbitrary code when loaded, so "
                "rvqfast refuses it. Convert it once, on a machine where you trust the file, to "
                "a text file with one word per line in row order (e.g. our_vab_words.txt next to "
                "our_vab_data.npy), or to a JSON list of strings (our_vab_words.json).")
        if not vp.is_file():
            raise FileNotFoundError(f"vectors_path: {vp} does not exist")
        if not wp.is_file():
            raise FileNotFoundError(f"vocab_path: {wp} does not exist")
        if vp.suffix == ".npy":
            try:
                vec = np.load(vp, allow_pickle=False)
            except ValueError as e:
                raise ValueError(f"vectors_path: {vp} is not a plain numeric .npy array ({e})") from e
        elif vp.suffix == ".safetensors":
            from safetensors.numpy import load_file
            tensors = load_file(str(vp))
            if "vectors" not in tensors:
                raise ValueError(f"vectors_path: {vp} has no tensor named 'vectors'")
            vec = tensors["vectors"]
        else:
            raise ValueError(f"vectors_path: expected a .npy or .safetensors file, got {vp.name}")
        if not np.issubdtype(vec.dtype, np.floating):
            raise ValueError(f"vectors_path: expected a floating array, got dtype {vec.dtype}")
        if wp.suffix == ".json":
            words = json.loads(wp.read_text(encoding="utf-8"))
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise ValueError(f"vocab_path: {wp} must hold a JSON list of strings")
        else:
            words = [ln.rstrip("\r\n") for ln in wp.read_text(encoding="utf-8").splitlines()]
            while words and words[-1] == "":
                words.pop()
        if len(words) != vec.shape[0]:
            raise ValueError(f"vocab_path: {len(words)} words but {vec.shape[0]} vector rows in {vp}")
        return cls(words, vec.astype(np.float32))


def random_word_vectors(words, dim: int = 300, *, seed: int = 0) -> WordVectors:
    """Fixed random unit vectors (seeded Gaussian, normalised) for ``words`` + special tokens.

    Stand-in for GloVe when training an evaluator from scratch: the text encoder's first linear
    layer learns whatever mixing it needs, and random high-dimensional vectors are nearly
    orthogonal, so distinct words stay distinguishable.
    """
    vocab = list(SPECIAL_TOKENS) + sorted(set(words) - set(SPECIAL_TOKENS))
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((len(vocab), dim))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return WordVectors(vocab, vec.astype(np.float32))


def encode_sentences(table: WordVectors, captions: list[str], max_text_len: int = 20
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Word vectors (B, L, D), POS one-hots (B, L, 15) and lengths (B,) for captions.

    As in the T2M setup: crop to ``max_text_len`` tokens, add ``sos``/``eos``, pad with
    ``unk``/OTHER to ``L = max_text_len + 2``. Unknown words map to ``unk`` with POS OTHER.
    """
    if not isinstance(captions, (list, tuple)) or not captions:
        raise ValueError("captions: expected a non-empty list of strings")
    L = max_text_len + 2
    words = np.zeros((len(captions), L, table.dim), np.float32)
    pos = np.zeros((len(captions), L, NUM_POS), np.float32)
    lens = np.zeros(len(captions), np.int64)
    other = _POS_INDEX["OTHER"]
    for b, cap in enumerate(captions):
        toks = parse_caption(cap)[:max_text_len]
        seq = [("sos", other)]
        for w, p in toks:
            seq.append((w, pos_category(w, p)) if w in table else ("unk", other))
        seq.append(("eos", other))
        lens[b] = len(seq)
        seq += [("unk", other)] * (L - len(seq))
        for t, (w, p) in enumerate(seq):
            words[b, t] = table.vector(w)
            pos[b, t, p] = 1.0
    return torch.from_numpy(words), torch.from_numpy(pos), torch.from_numpy(lens)
