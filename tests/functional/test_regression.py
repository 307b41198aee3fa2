"""Regression functions: closed forms, edge cases, jit, gradients and the exact error messages.

Parity with scikit-learn/scipy on random data lives in tests/reference/test_regression_reference.py.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import calibrax.functional as F

ALL = [
    F.mean_squared_error,
    F.root_mean_squared_error,
    F.mean_absolute_error,
    F.mean_absolute_percentage_error,
    F.r2_score,
    F.pearson_correlation,
]
P = jnp.array([1.0, 2.0, 4.0, 3.0])
T = jnp.array([1.0, 4.0, 2.0, 5.0])


def test_closed_forms():
    # errors: 0, -2, 2, -2 -> MSE 3, MAE 1.5; |e|/|t|: 0, 0.5, 1, 0.4 -> MAPE 0.475
    np.testing.assert_allclose(F.mean_squared_error(P, T), 3.0, rtol=1e-12)
    np.testing.assert_allclose(F.root_mean_squared_error(P, T), np.sqrt(3.0), rtol=1e-12)
    np.testing.assert_allclose(F.mean_absolute_error(P, T), 1.5, rtol=1e-12)
    np.testing.assert_allclose(F.mean_absolute_percentage_error(P, T), 0.475, rtol=1e-12)
    # targets mean 3, SST = 4 + 1 + 1 + 4 = 10, SSE = 12 -> R² = -0.2
    np.testing.assert_allclose(F.r2_score(P, T), -0.2, rtol=1e-12)
    # centred p: -1.5, -.5, 1.5, .5; centred t: -2, 1, -1, 2 -> cov 3 - .5 - 1.5 + 1 = 2;
    # |p| = sqrt(5), |t| = sqrt(10)
    np.testing.assert_allclose(F.pearson_correlation(P, T), 2 / np.sqrt(50), rtol=1e-12)


@pytest.mark.parametrize("fn", ALL)
def test_dtype_follows_inputs_and_jit_agrees(fn):
    p32, t32 = P.astype(jnp.float32), T.astype(jnp.float32)
    eager = fn(p32, t32)
    assert eager.dtype == jnp.float32
    # float32 throughout: jit may reorder the reductions, so 1e-6 relative.
    np.testing.assert_allclose(jax.jit(fn)(p32, t32), eager, rtol=1e-6)
    # mixed precisions promote explicitly (strict promotion is on in the tests)
    assert fn(p32, T).dtype == jnp.float64


def test_multidimensional_inputs_average_every_element():
    p = jnp.arange(6.0).reshape(2, 3)
    t = jnp.zeros((2, 3))
    np.testing.assert_allclose(F.mean_squared_error(p, t), np.mean(np.arange(6.0) ** 2))


def test_mape_zero_target_is_finite():
    # denominator max(|y|, eps): a zero target gives |e| / eps, huge but finite (as scikit-learn)
    out = F.mean_absolute_percentage_error(jnp.array([1.0]), jnp.array([0.0]))
    np.testing.assert_allclose(out, 1.0 / np.finfo(np.float64).eps)


def test_r2_constant_targets():
    t = jnp.full(5, 0.1)
    # exact predictions of constant targets: 1.0; anything else: 0.0 (scikit-learn force_finite)
    assert F.r2_score(t, t) == 1.0
    assert F.r2_score(t + 1.0, t) == 0.0
    assert F.r2_score(jnp.full(5, 0.1, jnp.float32), jnp.full(5, 0.1, jnp.float32)) == 1.0


def test_r2_perfect_and_mean_predictor():
    t = jnp.array([1.0, 2.0, 7.0])
    assert F.r2_score(t, t) == 1.0
    np.testing.assert_allclose(F.r2_score(jnp.full(3, jnp.mean(t)), t), 0.0, atol=1e-15)


def test_pearson_constant_is_nan_and_perfect_is_one():
    x = jnp.array([0.1, 0.7, 0.3])
    # the shift by the first element makes constant data exactly zero-variance, even for 0.1
    assert np.isnan(F.pearson_correlation(jnp.full(3, 0.1), x))
    assert np.isnan(F.pearson_correlation(x, jnp.full(3, 0.1, jnp.float64)))
    assert F.pearson_correlation(x, 2 * x + 1) == pytest.approx(1.0, rel=1e-12)
    assert F.pearson_correlation(x, -x) == pytest.approx(-1.0, rel=1e-12)


def test_pearson_large_offset_float32():
    # an offset of 1e4 would wreck raw sums in float32; shifted, centred sums keep 1e-5 accuracy
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    expected = np.corrcoef(x, y)[0, 1]
    got = F.pearson_correlation(jnp.asarray(x + 1e4, jnp.float32), jnp.asarray(y, jnp.float32))
    # float32 rounding of x + 1e4 alone perturbs x by up to 5e-4 (ulp of 1e4 is ~1e-3)
    np.testing.assert_allclose(got, expected, rtol=1e-3)


@pytest.mark.parametrize(
    "fn",
    [F.mean_squared_error, F.mean_absolute_percentage_error, F.r2_score, F.pearson_correlation],
)
def test_gradients(fn):
    rng = np.random.default_rng(1)
    p = jnp.asarray(rng.normal(size=6))
    t = jnp.asarray(rng.normal(size=6) + 3.0)
    # float64 central differences: check_grads' default tolerances for x64; jitted so the
    # finite-difference evaluations reuse one compilation
    check_grads(jax.jit(lambda x: fn(x, t)), (p,), order=1, modes=["rev"])


def test_mae_gradient_is_sign():
    p = jnp.array([1.0, 2.0, 3.0])
    t = jnp.array([0.0, 5.0, 1.0])
    g = jax.grad(F.mean_absolute_error)(p, t)
    np.testing.assert_allclose(g, np.array([1.0, -1.0, 1.0]) / 3)


@pytest.mark.parametrize("fn", ALL)
def test_bad_inputs(fn):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` and `targets` to have the same shape, got (4,) and (3,)"
        ),
    ):
        fn(P, T[:3])
    with pytest.raises(
        TypeError, match=re.escape("expected `predictions` to have a floating dtype, got int32")
    ):
        fn(jnp.arange(4, dtype=jnp.int32), T)
    with pytest.raises(
        TypeError, match=re.escape("expected `targets` to have a floating dtype, got int32")
    ):
        fn(P, jnp.arange(4, dtype=jnp.int32))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `predictions` to be finite, got 1 NaN and 0 Inf values"),
    ):
        fn(P.at[1].set(jnp.nan), T)
    with pytest.raises(
        ValueError, match=re.escape("expected `targets` to be finite, got 0 NaN and 2 Inf values")
    ):
        fn(P, T.at[:2].set(jnp.inf))


@pytest.mark.parametrize("fn", ALL[:4])
def test_empty_input(fn):
    with pytest.raises(
        ValueError, match=re.escape("expected `predictions` to be non-empty, got shape (0,)")
    ):
        fn(jnp.zeros(0), jnp.zeros(0))


@pytest.mark.parametrize("fn", [F.r2_score, F.pearson_correlation])
def test_centred_metrics_need_vectors_of_two(fn):
    with pytest.raises(
        ValueError,
        match=re.escape("expected `predictions` to have 1 dims (batch), got shape (2, 2)"),
    ):
        fn(jnp.zeros((2, 2)), jnp.zeros((2, 2)))
    with pytest.raises(
        ValueError, match=re.escape("expected `predictions` to have at least 2 samples, got 1")
    ):
        fn(jnp.zeros(1), jnp.zeros(1))
    with pytest.raises(
        ValueError, match=re.escape("expected `predictions` to be non-empty, got shape (0,)")
    ):
        fn(jnp.zeros(0), jnp.zeros(0))
