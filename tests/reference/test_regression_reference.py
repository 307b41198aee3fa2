"""Regression parity with scikit-learn and scipy on random inputs, float64 and float32."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics as skm

import calibrax.functional as F
import calibrax.metrics as M

PAIRS = [
    (F.mean_squared_error, M.MeanSquaredError, skm.mean_squared_error),
    (F.root_mean_squared_error, M.RootMeanSquaredError, skm.root_mean_squared_error),
    (F.mean_absolute_error, M.MeanAbsoluteError, skm.mean_absolute_error),
    (
        F.mean_absolute_percentage_error,
        M.MeanAbsolutePercentageError,
        skm.mean_absolute_percentage_error,
    ),
    (F.r2_score, M.R2Score, skm.r2_score),
    (F.pearson_correlation, M.PearsonCorrelation, lambda t, p: scipy.stats.pearsonr(t, p)[0]),
]


def _data(seed, n=101):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n) * 3 + 1
    p = 0.7 * t + rng.normal(size=n)
    return p, t


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("fn", "cls", "ref"), PAIRS)
def test_float64_parity(seed, fn, cls, ref):
    p, t = _data(seed)
    expected = ref(t, p)
    # float64 on both sides, different summation orders: 1e-10 relative
    np.testing.assert_allclose(fn(jnp.asarray(p), jnp.asarray(t)), expected, rtol=1e-10)
    np.testing.assert_allclose(cls()(jnp.asarray(p), jnp.asarray(t)), expected, rtol=1e-10)


@pytest.mark.parametrize(("fn", "cls", "ref"), PAIRS)
def test_float32_parity(fn, cls, ref):
    p, t = _data(3, n=1000)
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    # the reference sees the same float32-rounded values in float64; float32 accumulation over
    # 1000 terms stays well inside 1e-5 relative
    expected = ref(t32.astype(np.float64), p32.astype(np.float64))
    np.testing.assert_allclose(fn(jnp.asarray(p32), jnp.asarray(t32)), expected, rtol=1e-5)


def test_multioutput_mse_mae_match_uniform_average():
    rng = np.random.default_rng(4)
    p, t = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    # uniform average of per-column means equals the mean over every element
    np.testing.assert_allclose(
        F.mean_squared_error(jnp.asarray(p), jnp.asarray(t)),
        skm.mean_squared_error(t, p),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        F.mean_absolute_error(jnp.asarray(p), jnp.asarray(t)),
        skm.mean_absolute_error(t, p),
        rtol=1e-12,
    )


def test_r2_constant_targets_matches_sklearn_force_finite():
    t = np.full(6, 2.5)
    for p in (t.copy(), t + np.arange(6.0)):
        np.testing.assert_allclose(F.r2_score(jnp.asarray(p), jnp.asarray(t)), skm.r2_score(t, p))


def test_pearson_constant_matches_scipy_nan():
    t = np.array([1.0, 2.0, 4.0])
    with pytest.warns(scipy.stats.ConstantInputWarning):
        expected = scipy.stats.pearsonr(np.full(3, 0.3), t)[0]
    assert np.isnan(expected)
    assert np.isnan(F.pearson_correlation(jnp.full(3, 0.3), jnp.asarray(t)))
