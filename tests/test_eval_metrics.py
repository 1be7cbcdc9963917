"""Metrics against closed-form cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rvqfast.eval import metrics as M


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_fid_identical_sets_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 16))
    assert M.fid(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_closed_form_diagonal():
    # For diagonal covariances: |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    mu1, mu2 = np.array([1.0, 2.0, 3.0]), np.array([0.0, -1.0, 3.5])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expect = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expect, rel=1e-10)


def test_frechet_distance_non_commuting_matches_1d_rotation_invariance():
    # FID is invariant to applying the same rotation to both Gaussians; with S2 = R S1 R^T for
    # a 2-D case the value has a closed form via the eigenvalues of S1^{1/2} S2 S1^{1/2}.
    rng = np.random.default_rng(1)
    s1 = np.diag([4.0, 1.0])
    th = 0.7
    r = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    s2 = r @ np.diag([2.0, 0.5]) @ r.T
    mu1, mu2 = rng.normal(size=2), rng.normal(size=2)
    base = M.frechet_distance(mu1, s1, mu2, s2)
    q = _random_rotation(np.random.default_rng(2))[:2, :2]
    q, _ = np.linalg.qr(q)
    rotated = M.frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
    assert rotated == pytest.approx(base, rel=1e-9)
    # Explicit: Tr sqrt(S1 S2) = sqrt(tr(P) + 2 sqrt(det(P))) for a 2x2 P with real sqrt.
    p = np.diag([2.0, 1.0]) @ s2 @ np.diag([2.0, 1.0])
    tr_sqrt = math.sqrt(np.trace(p) + 2 * math.sqrt(np.linalg.det(p)))
    expect = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert base == pytest.approx(expect, rel=1e-9)


def test_fid_of_sampled_gaussians_approaches_formula():
    rng = np.random.default_rng(3)
    a = rng.normal(loc=0.0, scale=1.0, size=(20000, 3))
    b = rng.normal(loc=1.0, scale=2.0, size=(20000, 3))
    # mean term 3 * 1^2, cov term 3 * (1 - 2)^2
    assert M.fid(a, b) == pytest.approx(6.0, rel=0.05)


def test_fid_rank_deficient_covariance_is_finite_and_nonnegative():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(10, 32))  # N < D: singular covariance
    b = rng.normal(size=(12, 32))
    v = M.fid(a, b)
    assert np.isfinite(v) and v >= 0


def test_fid_rejects_bad_input():
    with pytest.raises(ValueError, match="act"):
        M.fid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="act2"):
        M.fid(np.random.rand(5, 3), np.random.rand(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        M.fid(np.full((5, 3), np.nan), np.random.rand(5, 3))


def test_diversity_of_constant_set_is_zero_and_scales_linearly():
    rng = np.random.default_rng(5)
    assert M.diversity(np.ones((400, 4)), 300) == 0.0
    a = rng.normal(size=(400, 8))
    assert M.diversity(3 * a, 300, seed=7) == pytest.approx(3 * M.diversity(a, 300, seed=7))
    with pytest.raises(ValueError, match="times"):
        M.diversity(a[:10], 300)


def test_r_precision_perfect_and_chance():
    rng = np.random.default_rng(6)
    m = rng.normal(size=(64, 16))
    assert M.r_precision(m, m).tolist() == [1.0, 1.0, 1.0]
    assert M.mm_dist(m, m) == 0.0
    # Independent text / motion: top-k accuracy near k / 32.
    acc = np.mean([M.r_precision(rng.normal(size=(320, 16)), rng.normal(size=(320, 16)))
                   for _ in range(10)], axis=0)
    assert np.allclose(acc, [1 / 32, 2 / 32, 3 / 32], atol=0.03)


def test_r_precision_known_ranks():
    # 4 pairs in a batch of 4; text i's true match is ranked i-th by construction.
    t = np.zeros((4, 1))
    m = np.array([[0.0], [1.0], [2.0], [3.0]])
    # text 0 at 0: true motion 0 rank 0. Move texts so that the true match is farther.
    t = np.array([[0.0], [0.2], [0.0], [0.0]])
    # text1 (0.2): dists [0.2,0.8,...] -> true (m1) rank 1; text2 (0): true m2 rank 2; text3 rank 3
    acc = M.r_precision(t, m, top_k=3, batch_size=4)
    assert acc.tolist() == [0.25, 0.5, 0.75]


def test_mean_conf():
    mc = M.mean_conf([1.0, 2.0, 3.0, 4.0])
    assert mc.mean == 2.5
    assert mc.conf == pytest.approx(1.96 * np.std([1, 2, 3, 4]) / 2)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.2, 5.0))
def test_pa_mpjpe_invariant_to_similarity_transform(seed, scale):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(5, 22, 3))
    r = _random_rotation(rng)
    x = scale * y @ r.T + rng.normal(size=(1, 1, 3))
    assert M.pa_mpjpe(x, y) == pytest.approx(0.0, abs=1e-6)
    assert M.mpjpe(y, y) == 0.0


def test_pa_mpjpe_not_fooled_by_reflection_and_bounded_by_mpjpe():
    rng = np.random.default_rng(8)
    y = rng.normal(size=(3, 22, 3))
    mirrored = y * np.array([-1.0, 1.0, 1.0])
    assert M.pa_mpjpe(mirrored, y) > 1.0  # a reflection is not a proper rotation
    noisy = y + 0.01 * rng.normal(size=y.shape)
    assert M.pa_mpjpe(noisy, y) <= M.mpjpe(noisy, y) + 1e-9


def test_mpjpe_and_accel_units_mm():
    y = np.zeros((10, 22, 3))
    x = y + np.array([0.003, 0.0, 0.004])  # 5 mm everywhere
    assert M.mpjpe(x, y) == pytest.approx(5.0)
    assert M.accel_error(x, y) == pytest.approx(0.0, abs=1e-9)  # constant offset: no accel
    t = np.arange(10.0)[:, None, None]
    quad = y + np.concatenate([0.001 * t ** 2, 0 * t, 0 * t], -1)  # accel 2 mm/frame^2 in x
    assert M.accel_error(quad, y) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="pred"):
        M.accel_error(x[:2], y[:2])


def test_codebook_stats():
    idx = np.array([[0, -1], [1, -1], [2, 3], [3, 3]])
    st_ = M.codebook_stats(idx, 4)
    assert st_[0]["usage"] == 1.0 and st_[0]["perplexity"] == pytest.approx(4.0)
    assert st_[1]["usage"] == 0.25 and st_[1]["perplexity"] == pytest.approx(1.0)
    assert st_[1]["count"] == 2
    with pytest.raises(ValueError, match="indices"):
        M.codebook_stats(np.array([[5]]), 4)
