"""Distances and reducers: closed forms, the inverted convention, safe gradients, errors."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calibrax.metric_learning as C


def test_lp_distance_closed_form_and_zero_gradient_at_duplicates():
    x = jnp.array([[3.0, 4.0], [0.0, 0.0], [3.0, 4.0]])
    d = C.LpDistance(normalize_embeddings=False)(x)
    np.testing.assert_array_equal(np.asarray(d), [[0, 5, 0], [5, 0, 5], [0, 5, 0]])
    grad = jax.grad(lambda e: C.LpDistance()(e)[0, 2])(x)
    np.testing.assert_array_equal(np.asarray(grad), np.zeros((3, 2)))
    inf_norm = C.LpDistance(p=math.inf, normalize_embeddings=False)(x)
    assert float(inf_norm[0, 1]) == 4.0


def test_inverted_convention():
    lp, cos = C.LpDistance(), C.CosineSimilarity()
    assert not lp.is_inverted and cos.is_inverted and C.DotProductSimilarity().is_inverted
    assert lp.margin(1.0, 0.25) == 0.75 and cos.margin(1.0, 0.25) == -0.75
    v = jnp.array([0.2, 0.9, 0.5])
    assert float(lp.smallest(v)) == 0.2 and float(cos.smallest(v)) == 0.9
    assert float(lp.largest(v)) == 0.9 and float(cos.largest(v)) == 0.2


def test_half_precision_distance_does_not_overflow():
    x = 300 * jax.random.normal(jax.random.key(0), (6, 16), jnp.float16)
    d = C.LpDistance(normalize_embeddings=False)(x)
    assert d.dtype == jnp.float16 and np.all(np.isfinite(np.asarray(d, np.float32)))


def test_distance_errors():
    with pytest.raises(ValueError, match=re.escape("expected `p` to be positive, got 0")):
        C.LpDistance(p=0)
    with pytest.raises(ValueError, match=re.escape("expected `power` to be positive, got -1")):
        C.LpDistance(power=-1)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `query` to have 2 dims (batch, embedding_dim), got shape (3,)"),
    ):
        C.CosineSimilarity()(jnp.ones(3))
    with pytest.raises(
        ValueError, match=re.escape("expected `ref` to have embedding size 2 on axis 1, got shape")
    ):
        C.CosineSimilarity()(jnp.ones((3, 2)), jnp.ones((3, 4)))


def test_reducers_on_a_hand_computed_case():
    values = jnp.array([0.0, 0.5, 1.0, 2.0])
    weights = jnp.array([1, 1, 2, 0])
    assert float(C.MeanReducer()(values, weights)) == pytest.approx(2.5 / 4)
    assert float(C.SumReducer()(values, weights)) == pytest.approx(2.5)
    assert float(C.AvgNonZeroReducer()(values, weights)) == pytest.approx(2.5 / 3)
    assert float(C.ThresholdReducer(high=0.8)(values, weights)) == pytest.approx(0.5 / 2)
    half = C.MeanReducer()(values.astype(jnp.float16), jnp.full(4, 30000, jnp.int32))
    assert half.dtype == jnp.float16 and float(half) == pytest.approx(0.875)


def test_reducer_errors():
    with pytest.raises(
        ValueError, match=re.escape("expected at least one of `low` and `high` to be set")
    ):
        C.ThresholdReducer()
    with pytest.raises(
        ValueError, match=re.escape("expected `low` to be less than `high`, got low=1 and high=0")
    ):
        C.ThresholdReducer(low=1, high=0)
