"""Training-data augmentation of RAW 263-d HumanML3D features.

``--augment mirror,speed,noise`` adds ``--augment-fraction`` x N augmented copies of the N
training motions to the sampling pool (made once, deterministically from the seed, before
training; the per-step batches stay a pure function of (seed, step)). Each copy draws its own
parameters and applies every listed augmentation:

* ``mirror`` (with probability 1/2): the left/right mirror image, exact in feature space
  (:func:`mirror_features` equals the features of the mirrored joints).
* ``speed``: playback speed x U(0.8, 1.25), by resampling the joints in time.
* ``noise``: temporally smooth joint jitter (sigma 1 cm, about 0.15 s correlation), then
  retargeted back to the canonical bone lengths (mocap-like noise in the bone directions).

A global yaw rotation is not offered: the features are expressed in the body's own heading
frame (facing +Z at frame 0), so a yawed copy would be the same features.
"""
from __future__ import annotations

import numpy as np

from ..motion.features import (
    FOOT_CONTACT, LOCAL_VEL, RIC, ROOT_LIN_VEL, ROOT_ROT_VEL, ROT6D, features_to_joints,
    joints_to_features,
)
from ..motion.retarget import retarget
from ..motion.skeleton import FEATURE_DIM

AUGMENTATIONS: tuple[str, ...] = ("mirror", "speed", "noise")
SPEED_RANGE = (0.8, 1.25)
NOISE_SIGMA_M = 0.01

# Left/right joint swap (t2m order) and its version without the root (RIC / ROT6D rows).
_PERM = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20]
_PERM_NOROOT = [p - 1 for p in _PERM[1:]]


def parse_augment(spec: str) -> tuple[str, ...]:
    """``"mirror,speed"`` -> ("mirror", "speed"); "" -> (). Raises ValueError naming --augment."""
    if not isinstance(spec, str):
        raise ValueError(f"--augment: expected a comma-separated string, got {spec!r}")
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    for n in names:
        if n == "yaw":
            raise ValueError("--augment: 'yaw' would change nothing: the features are expressed "
                             "in the body's heading frame; use mirror, speed, noise")
        if n not in AUGMENTATIONS:
            raise ValueError(f"--augment: unknown augmentation {n!r}; expected a comma-separated "
                             f"subset of {', '.join(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--augment: {spec!r} lists an augmentation twice")
    return names


def mirror_features(features: np.ndarray) -> np.ndarray:
    """Features (T, 263) of the left/right mirror image of the motion (x -> -x, sides swapped)."""
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[1] != FEATURE_DIM:
        raise ValueError(f"features: expected shape (T, {FEATURE_DIM}), got {f.shape}")
    out = f.copy()
    t = f.shape[0]
    out[:, ROOT_ROT_VEL] = -f[:, ROOT_ROT_VEL]
    out[:, ROOT_LIN_VEL.start] = -f[:, ROOT_LIN_VEL.start]
    ric = f[:, RIC].reshape(t, 21, 3)[:, _PERM_NOROOT].copy()
    ric[..., 0] *= -1
    out[:, RIC] = ric.reshape(t, -1)
    # Rotation R -> S R S with S = diag(-1, 1, 1): first column (a, b, c) -> (a, -b, -c),
    # second column (a, b, c) -> (-a, b, c).
    rot = f[:, ROT6D].reshape(t, 21, 6)[:, _PERM_NOROOT].copy()
    rot[..., [1, 2, 3]] *= -1
    out[:, ROT6D] = rot.reshape(t, -1)
    vel = f[:, LOCAL_VEL].reshape(t, 22, 3)[:, _PERM].copy()
    vel[..., 0] *= -1
    out[:, LOCAL_VEL] = vel.reshape(t, -1)
    out[:, FOOT_CONTACT] = f[:, FOOT_CONTACT][:, [2, 3, 0, 1]]
    return out


def change_speed(features: np.ndarray, factor: float) -> np.ndarray:
    """The motion played ``factor`` times faster (joints resampled linearly in time)."""
    j = np.asarray(features_to_joints(np.asarray(features, np.float32)), np.float64)
    n_out = max(int(round((j.shape[0] - 1) / factor)) + 1, 3)
    src = np.arange(j.shape[0], dtype=np.float64)
    dst = np.linspace(0.0, j.shape[0] - 1, n_out)
    flat = j.reshape(j.shape[0], -1)
    res = np.stack([np.interp(dst, src, flat[:, c]) for c in range(flat.shape[1])], -1)
    return joints_to_features(res.reshape(n_out, 22, 3))


def add_noise(features: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA_M) -> np.ndarray:
    """Temporally smooth joint jitter of about ``sigma`` metres, bone lengths restored."""
    j = np.asarray(features_to_joints(np.asarray(features, np.float32)), np.float64)
    raw = rng.normal(0.0, 1.0, j.shape)
    k = np.exp(-0.5 * (np.arange(-6, 7) / 3.0) ** 2)
    k /= np.sqrt((k ** 2).sum())  # unit variance after smoothing
    pad = np.concatenate([raw[:1].repeat(6, 0), raw, raw[-1:].repeat(6, 0)])
    smooth = np.stack([np.convolve(pad[:, i, c], k, mode="valid")
                       for i in range(22) for c in range(3)], -1).reshape(j.shape)
    return joints_to_features(retarget(j + sigma * smooth))


def augment_pool(features: list[np.ndarray], augment: str | tuple[str, ...], seed: int,
                 fraction: float = 1.0, min_frames: int = 0) -> list[np.ndarray]:
    """round(fraction x N) augmented copies (RAW features) of randomly chosen training motions
    (without replacement while possible); deterministic in ``seed``. Copies shorter than
    ``min_frames`` are dropped."""
    names = parse_augment(augment) if isinstance(augment, str) else tuple(augment)
    if not names or not features:
        return []
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 10):
        raise ValueError(f"--augment-fraction: expected a number in (0, 10], got {fraction!r}")
    rng = np.random.default_rng([seed, 4242])
    n = int(round(fraction * len(features)))
    order = np.concatenate([rng.permutation(len(features)) for _ in range(-(-n // len(features)))])[:n]
    out = []
    for i in order:
        f = np.asarray(features[int(i)], np.float32)
        if f.shape[0] < 4:
            continue
        if "speed" in names:
            f = change_speed(f, float(np.exp(rng.uniform(*np.log(SPEED_RANGE)))))
        if "noise" in names:
            f = add_noise(f, rng)
        if "mirror" in names and rng.random() < 0.5:
            f = mirror_features(f)
        if f.shape[0] >= max(min_frames, 2):
            out.append(np.ascontiguousarray(f, dtype=np.float32))
    return out


__all__ = ["AUGMENTATIONS", "parse_augment", "mirror_features", "change_speed", "add_noise",
           "augment_pool"]
