"""FID, KID, IS and PRDC statistics against float64 references (scipy, numpy loops)."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from calibrax.functional import frechet_distance
from calibrax.functional import frechet_distance_from_features
from calibrax.functional import inception_score
from calibrax.functional import kernel_inception_distance
from calibrax.functional import precision_recall_density_coverage
from calibrax.functional.fid import _lower_congruence
from calibrax.functional.kid import kid_from_buffers
from calibrax.functional.kid import kid_keys
from calibrax.functional.kid import kid_subset_indices
from calibrax.functional.kid import unbiased_mmd2


def _features(n, d, seed, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    # Correlated features (a random mixing) so the covariances are far from diagonal.
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix * scale + shift


def _pytorch_fid_reference(real, fake):
    """pytorch-fid's `calculate_frechet_distance` in float64 with scipy.linalg.sqrtm."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean))


def _small_matrix_reference(real, fake):
    """For n_real < d: tr sqrt(S1 S2) = Σ sqrt(eig(A S2 Aᵀ / (n-1))), A the centred real rows."""
    a = real - real.mean(0)
    s2 = np.cov(fake, rowvar=False)
    eig = np.linalg.eigvalsh(a @ s2 @ a.T / (real.shape[0] - 1))
    diff = real.mean(0) - fake.mean(0)
    s1_trace = np.sum(a * a) / (real.shape[0] - 1)
    return diff @ diff + s1_trace + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()


@pytest.mark.parametrize(
    ("n_real", "n_fake", "d"),
    # Both branches at d = 64 (dense products) and the Cholesky branch at d = 512 (blocked Gram
    # and congruence); the eigh branch at blocked sizes is the d = 2048 test below.
    [(300, 250, 64), (40, 90, 64), (600, 550, 512)],
)
def test_fid_matches_scipy_sqrtm(n_real, n_fake, d):
    real = _features(n_real, d, 0)
    fake = _features(n_fake, d, 1, shift=0.1, scale=1.2)
    ours = float(frechet_distance_from_features(jnp.asarray(real), jnp.asarray(fake)))
    # float64 on both sides; sqrtm's own error on these sizes is ~1e-8 relative, so 1e-6.
    np.testing.assert_allclose(ours, _pytorch_fid_reference(real, fake), rtol=1e-6)
    assert np.isfinite(ours) and ours >= 0


@pytest.mark.slow
@pytest.mark.parametrize("d", [255, 257, 300, 512])
def test_blocked_congruence_equals_the_dense_product(d):
    # The blocked L^T S L (zero blocks of the triangular factor skipped, only the lower block
    # triangle computed) reorders the float64 sums only: 1e-12 relative to the largest entry.
    rng = np.random.default_rng(d)
    a = rng.normal(size=(d, d))
    lower = np.tril(rng.normal(size=(d, d)))
    sym = a @ a.T
    got = np.asarray(jax.jit(_lower_congruence)(jnp.asarray(lower), jnp.asarray(sym)))
    want = lower.T @ sym @ lower
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_fid_matches_scipy_sqrtm_d2048():
    real = _features(300, 2048, 0)  # n < d: singular real covariance (eigh fallback)
    fake = _features(2100, 2048, 1, shift=0.05)
    ours = float(frechet_distance_from_features(jnp.asarray(real), jnp.asarray(fake)))
    # float64 throughout; 1e-6 relative is the acceptance bound (observed ~1e-8).
    np.testing.assert_allclose(ours, _pytorch_fid_reference(real, fake), rtol=1e-6)
    # The same value against the exact n < d route at full size (1749 zero eigenvalues), with
    # the bound of the rank-deficient test below (observed ~1.4e-8): one d = 2048 solve for both.
    np.testing.assert_allclose(ours, _small_matrix_reference(real, fake), rtol=1e-7)


@pytest.mark.parametrize(("n", "d"), [(5, 64), (30, 512)])
def test_fid_rank_deficient_matches_small_matrix_reference(n, d):
    real = _features(n, d, 2)
    fake = _features(n + 3, d, 3, shift=0.2)
    ours = float(frechet_distance_from_features(jnp.asarray(real), jnp.asarray(fake)))
    # An exact route for n < d (an n×n symmetric eigenproblem in float64). The d - n + 1 zero
    # eigenvalues come out as ±O(eps·|S|) and their square roots add O(sqrt(eps)) each, hence
    # 1e-7 relative (observed ~5e-9), still 10x inside the 1e-6 acceptance bound.
    np.testing.assert_allclose(ours, _small_matrix_reference(real, fake), rtol=1e-7)
    assert np.isfinite(ours) and ours >= 0


def test_fid_identical_sets_is_zero_up_to_rounding():
    x = _features(200, 32, 4)
    ours = float(frechet_distance_from_features(jnp.asarray(x), jnp.asarray(x)))
    trace = np.trace(np.cov(x, rowvar=False))
    # Clamped at 0 and, in float64, within 1e-6 of the trace of the covariance.
    assert 0.0 <= ours <= 1e-6 * trace


def test_fid_singular_identical_sets_never_negative_or_nan():
    x = jnp.asarray(_features(10, 64, 5))  # rank 9 covariances, Cholesky fails
    value = frechet_distance_from_features(x, x)
    assert np.isfinite(float(value)) and 0.0 <= float(value) <= 1e-6


def test_fid_equal_covariance_gives_squared_mean_shift():
    real = _features(500, 16, 6)
    m = np.linspace(-1.0, 2.0, 16)
    fake = real + m  # same sample covariance, mean shifted by m
    ours = float(frechet_distance_from_features(jnp.asarray(real), jnp.asarray(fake)))
    # Closed form |m|²; float64 rounding of the trace terms (~1e-12 relative).
    np.testing.assert_allclose(ours, m @ m, rtol=1e-9)


def test_fid_gaussian_closed_form_from_statistics():
    d = 8
    mu2 = jnp.arange(d, dtype=jnp.float64) / 4
    value = frechet_distance(jnp.zeros(d), jnp.eye(d), mu2, jnp.eye(d))
    np.testing.assert_allclose(float(value), float(mu2 @ mu2), rtol=1e-12)
    # N(0, a²I) vs N(0, b²I): d (a - b)².
    value = frechet_distance(jnp.zeros(d), 4.0 * jnp.eye(d), jnp.zeros(d), 9.0 * jnp.eye(d))
    np.testing.assert_allclose(float(value), d * 1.0, rtol=1e-12)


def test_fid_jit_matches_eager_on_both_branches():
    fn = jax.jit(frechet_distance_from_features)
    for n in (100, 10):  # full-rank (Cholesky) and rank-deficient (eigh) covariance
        real = jnp.asarray(_features(n, 32, 7))
        fake = jnp.asarray(_features(80, 32, 8, shift=0.3))
        # Reordered float64 ops; the rank-deficient branch takes square roots of eigenvalues
        # that are 0 up to rounding, which adds O(sqrt(eps)) each: 1e-7 relative.
        np.testing.assert_allclose(
            float(fn(real, fake)), float(frechet_distance_from_features(real, fake)), rtol=1e-7
        )


def test_fid_float32_inputs_compute_in_float32():
    real = jnp.asarray(_features(100, 16, 9), dtype=jnp.float32)
    fake = jnp.asarray(_features(90, 16, 10, shift=0.5), dtype=jnp.float32)
    value = frechet_distance_from_features(real, fake)
    assert value.dtype == jnp.float32
    ref = _pytorch_fid_reference(np.asarray(real, np.float64), np.asarray(fake, np.float64))
    # float32 statistics: ~1e-6 relative rounding, amplified by the trace cancellation.
    np.testing.assert_allclose(float(value), ref, rtol=1e-4)


def test_fid_bad_inputs():
    ok = jnp.ones((4, 3))
    with pytest.raises(
        ValueError, match=re.escape("expected `real` to have at least 2 samples, got 1")
    ):
        frechet_distance_from_features(jnp.ones((1, 3)), ok)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `real` and `fake` to have the same feature dimension, got 3 and 5"
        ),
    ):
        frechet_distance_from_features(ok, jnp.ones((4, 5)))
    bad = jnp.ones((4, 3)).at[0, 0].set(jnp.nan).at[1, 1].set(jnp.inf)
    with pytest.raises(
        ValueError, match=re.escape("expected `fake` to be finite, got 1 NaN and 1 Inf values")
    ):
        frechet_distance_from_features(ok, bad)
    with pytest.raises(
        TypeError, match=re.escape("expected `real` to have a floating dtype, got int")
    ):
        frechet_distance_from_features(jnp.ones((4, 3), jnp.int32), ok)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `sigma1` to have shape (3, 3) to match `mu1`, got shape (3, 2)"),
    ):
        frechet_distance(jnp.zeros(3), jnp.ones((3, 2)), jnp.zeros(3), jnp.eye(3))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `real` to have 2 dims (samples, features), got shape (4,)"),
    ):
        frechet_distance_from_features(jnp.ones(4), ok)


# --- KID -------------------------------------------------------------------------------------


def _numpy_unbiased_mmd2(x, y, degree=3, gamma=None, coef=1.0):
    g = 1.0 / x.shape[1] if gamma is None else gamma
    m = x.shape[0]
    total = 0.0
    kxx = (x @ x.T * g + coef) ** degree
    kyy = (y @ y.T * g + coef) ** degree
    kxy = (x @ y.T * g + coef) ** degree
    total = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return total - 2 * kxy.sum() / m**2


def _numpy_kid(real, fake, subsets, subset_size, seed, **kernel):
    real_key, fake_key = kid_keys(seed)
    ri = np.asarray(
        kid_subset_indices(real_key, len(real), len(real), subsets=subsets, subset_size=subset_size)
    )
    fi = np.asarray(
        kid_subset_indices(fake_key, len(fake), len(fake), subsets=subsets, subset_size=subset_size)
    )
    scores = [_numpy_unbiased_mmd2(real[a], fake[b], **kernel) for a, b in zip(ri, fi, strict=True)]
    return np.mean(scores), np.std(scores)


@pytest.mark.parametrize("m", [511, 513, 600])
def test_unbiased_mmd2_blocked_path_matches_numpy(m):
    # From 512 rows the symmetric kernel sums run blockwise (each lower block counted twice):
    # float64 on both sides, only the summation order differs, so 1e-11 relative.
    x = _features(m, 8, 21)
    y = _features(m, 8, 22, shift=0.3)
    got = float(jax.jit(unbiased_mmd2)(jnp.asarray(x), jnp.asarray(y)))
    want = _numpy_unbiased_mmd2(x, y)
    np.testing.assert_allclose(got, want, rtol=1e-11)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kid_whole_buffer_path_equals_the_per_subset_path(dtype):
    # Both paths sum the same kernel entries in another order; buffers with empty slots (count <
    # capacity) and a capacity that is not a multiple of the 512-row block. float64: 1e-10
    # relative; float32: 1e-4 relative (sums of ~1e4 float32 terms in different orders).
    real = np.zeros((700, 6), dtype)
    fake = np.zeros((650, 6), dtype)
    real[:600] = _features(600, 6, 31)
    fake[:630] = _features(630, 6, 32, shift=0.2)
    settings = {"subsets": 7, "subset_size": 50, "degree": 3, "gamma": None, "coef": 1.0}
    settings |= {"seed": 3, "dtype": np.dtype(dtype)}
    args = (jnp.asarray(real), 600, jnp.asarray(fake), 630)
    per_subset = kid_from_buffers(*args, **settings, method="subsets")
    whole = jax.jit(lambda r, f: kid_from_buffers(r, 600, f, 630, **settings, method="buffers"))(
        args[0], args[2]
    )
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(np.asarray(whole), np.asarray(per_subset), rtol=rtol)


def test_kid_subset_draws_are_without_replacement_and_within_count():
    idx = np.asarray(kid_subset_indices(jax.random.key(0), 30, 50, subsets=20, subset_size=30))
    for row in idx:
        assert sorted(row) == list(range(30))  # a permutation of the 30 valid rows
    idx = np.asarray(kid_subset_indices(jax.random.key(1), 30, 50, subsets=20, subset_size=10))
    assert all(len(set(row)) == 10 and row.max() < 30 for row in idx)
    # Prefix-consistent in the capacity: a bigger buffer with the same rows draws the same.
    same = kid_subset_indices(jax.random.key(1), 30, 30, subsets=20, subset_size=10)
    np.testing.assert_array_equal(idx, np.asarray(same))


@pytest.mark.parametrize(("degree", "gamma", "coef"), [(3, None, 1.0), (2, 0.5, 0.3)])
def test_kid_matches_numpy_reference_on_the_same_subsets(degree, gamma, coef):
    real = _features(60, 16, 11)
    fake = _features(50, 16, 12, shift=0.3)
    mean, std = kernel_inception_distance(
        jnp.asarray(real),
        jnp.asarray(fake),
        subsets=7,
        subset_size=20,
        seed=3,
        degree=degree,
        gamma=gamma,
        coef=coef,
    )
    ref_mean, ref_std = _numpy_kid(real, fake, 7, 20, 3, degree=degree, gamma=gamma, coef=coef)
    # float64 on both sides, same indices: agreement to rounding (1e-6 relative is the target).
    np.testing.assert_allclose(float(mean), ref_mean, rtol=1e-9)
    np.testing.assert_allclose(float(std), ref_std, rtol=1e-9)


def test_kid_jit_and_seed():
    real = jnp.asarray(_features(40, 8, 13))
    fake = jnp.asarray(_features(40, 8, 14, shift=0.2))
    fn = jax.jit(lambda r, f: kernel_inception_distance(r, f, subsets=5, subset_size=10, seed=1))
    np.testing.assert_allclose(
        np.asarray(fn(real, fake)),
        np.asarray(kernel_inception_distance(real, fake, subsets=5, subset_size=10, seed=1)),
        rtol=1e-12,
    )
    other = kernel_inception_distance(real, fake, subsets=5, subset_size=10, seed=2)
    assert float(other[0]) != float(fn(real, fake)[0])


def test_kid_bad_inputs():
    real = jnp.ones((10, 4))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `subset_size` to be at most the number of fake samples (8), got 9"
        ),
    ):
        kernel_inception_distance(real, jnp.ones((8, 4)), subsets=2, subset_size=9)
    with pytest.raises(
        ValueError, match=re.escape("expected `subset_size` to be an integer >= 2, got 1")
    ):
        kernel_inception_distance(real, real, subset_size=1)
    with pytest.raises(
        ValueError, match=re.escape("expected `subsets` to be a positive integer, got 0")
    ):
        kernel_inception_distance(real, real, subsets=0, subset_size=5)


# --- Inception Score ---------------------------------------------------------------------------


def _torch_fidelity_is(probs, splits):
    """torch-fidelity's `isc_features_to_metric` formula (without its shuffle) in numpy."""
    n = probs.shape[0]
    scores = []
    for i in range(splits):
        p = probs[i * n // splits : (i + 1) * n // splits]
        q = p.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return np.mean(scores), np.std(scores)


@pytest.mark.parametrize(("n", "splits"), [(100, 10), (53, 4), (7, 7), (30, 1)])
def test_inception_score_matches_torch_fidelity_formula(n, splits):
    rng = np.random.default_rng(n)
    logits = rng.normal(size=(n, 12)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[0, :] = 0.0
    probs[0, 3] = 1.0  # a one-hot row exercises 0·log 0 = 0
    mean, std = inception_score(jnp.asarray(probs), splits=splits)
    ref_mean, ref_std = _torch_fidelity_is(probs, splits)
    # float64 on both sides: rounding only (1e-6 is the acceptance bound).
    np.testing.assert_allclose(float(mean), ref_mean, rtol=1e-10)
    np.testing.assert_allclose(float(std), ref_std, rtol=1e-8, atol=1e-12)


def test_inception_score_shuffle_is_the_documented_permutation():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(6), size=40)
    mean, std = inception_score(jnp.asarray(probs), splits=5, seed=9)
    perm = np.argsort(np.asarray(jax.random.uniform(jax.random.key(9), (40,), jnp.float32)))
    ref_mean, ref_std = _torch_fidelity_is(probs[perm], 5)
    np.testing.assert_allclose([float(mean), float(std)], [ref_mean, ref_std], rtol=1e-10)
    jitted = jax.jit(lambda p: inception_score(p, splits=5, seed=9))(jnp.asarray(probs))
    np.testing.assert_allclose(np.asarray(jitted), [float(mean), float(std)], rtol=1e-12)


def test_inception_score_closed_forms():
    # Confident and uniformly spread over C classes: IS = C. Identical rows: IS = 1.
    eye = jnp.eye(5, dtype=jnp.float64)
    np.testing.assert_allclose(float(inception_score(eye, splits=1)[0]), 5.0, rtol=1e-12)
    same = jnp.full((6, 4), 0.25, dtype=jnp.float64)
    np.testing.assert_allclose(float(inception_score(same, splits=2)[0]), 1.0, rtol=1e-12)


def test_inception_score_bad_inputs():
    with pytest.raises(
        ValueError,
        match=re.escape("expected `splits` to be at most the number of samples (3), got 4"),
    ):
        inception_score(jnp.full((3, 2), 0.5), splits=4)
    with pytest.raises(ValueError, match=re.escape("expected `probs` to sum to 1 along axis 1")):
        inception_score(jnp.full((3, 2), 0.4), splits=1)
    with pytest.raises(
        ValueError, match=re.escape("expected `probs` to be finite, got 1 NaN and 0 Inf values")
    ):
        inception_score(jnp.full((3, 2), 0.5).at[0, 0].set(jnp.nan), splits=1)


# --- PRDC --------------------------------------------------------------------------------------


def _numpy_prdc(real, fake, k):
    """Kynkäänniemi (<=) precision/recall and Naeem (<) density/coverage with direct distances."""
    d_rr = np.sqrt(((real[:, None, :] - real[None, :, :]) ** 2).sum(-1))
    d_ff = np.sqrt(((fake[:, None, :] - fake[None, :, :]) ** 2).sum(-1))
    d_rf = np.sqrt(((real[:, None, :] - fake[None, :, :]) ** 2).sum(-1))
    r_real = np.sort(d_rr, axis=1)[:, k]
    r_fake = np.sort(d_ff, axis=1)[:, k]
    return {
        "precision": int((d_rf <= r_real[:, None]).any(axis=0).sum()),
        "recall": int((d_rf <= r_fake[None, :]).any(axis=1).sum()),
        "density": int((d_rf < r_real[:, None]).sum()),
        "coverage": int((d_rf.min(axis=1) < r_real).sum()),
    }


def _counts(values, n_real, n_fake, k):
    return {
        "precision": round(float(values["precision"]) * n_fake),
        "recall": round(float(values["recall"]) * n_real),
        "density": round(float(values["density"]) * n_fake * k),
        "coverage": round(float(values["coverage"]) * n_real),
    }


@pytest.mark.parametrize("block_size", [1, 7, 1024])
def test_prdc_exact_counts_on_integer_grid_with_ties(block_size):
    rng = np.random.default_rng(1)
    real = rng.integers(0, 4, size=(45, 3)).astype(np.float64)
    fake = rng.integers(0, 5, size=(38, 3)).astype(np.float64)
    k = 3
    ref = _numpy_prdc(real, fake, k)
    # The data has distances exactly equal to radii, so <= and < give different counts here.
    d_rf = np.sqrt(((real[:, None] - fake[None]) ** 2).sum(-1))
    r_real = np.sort(np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1)), axis=1)[:, k]
    assert (d_rf <= r_real[:, None]).any(0).sum() != (d_rf < r_real[:, None]).any(0).sum()
    ours = precision_recall_density_coverage(
        jnp.asarray(real), jnp.asarray(fake), k=k, block_size=block_size
    )
    assert _counts(ours, 45, 38, k) == ref


def test_prdc_exact_counts_on_gaussian_features():
    real = _features(120, 10, 15)
    fake = _features(90, 10, 16, shift=0.4, scale=0.8)
    ours = jax.jit(lambda r, f: precision_recall_density_coverage(r, f, k=5, block_size=32))(
        jnp.asarray(real), jnp.asarray(fake)
    )
    assert _counts(ours, 120, 90, 5) == _numpy_prdc(real, fake, 5)


def test_prdc_bad_inputs():
    x = jnp.ones((5, 2))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `k` to be less than the number of fake samples (4), got 4"),
    ):
        precision_recall_density_coverage(jnp.ones((9, 2)), jnp.ones((4, 2)), k=4)
    with pytest.raises(ValueError, match=re.escape("expected `k` to be a positive integer, got 0")):
        precision_recall_density_coverage(x, x, k=0)
