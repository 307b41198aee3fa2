"""CosFaceLoss against a hand-written float64 loop over samples (rtol 1e-10: same formula, same
precision)."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.metric_learning import CosFaceLoss
from calibrax.metric_learning import NormalizedSoftmaxLoss
from calibrax.metric_learning import SumReducer


def _loop(embeddings: np.ndarray, labels: np.ndarray, w: np.ndarray, margin: float, scale: float):
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    losses = []
    for x, y in zip(embeddings, labels, strict=True):
        logits = scale * ((x / np.linalg.norm(x)) @ w)
        logits[y] -= scale * margin
        losses.append(np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[y])
    return np.array(losses)


@pytest.mark.parametrize(("margin", "scale"), [(0.35, 64.0), (0.1, 10.0)])
def test_matches_loop(margin: float, scale: float) -> None:
    loss = CosFaceLoss(4, 5, margin=margin, scale=scale, param_dtype=jnp.float64, rngs=nnx.Rngs(3))
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(9, 5)), np.array([0, 1, 1, 2, 0, 0, 3, 3, 3])
    want = _loop(embeddings, labels, np.asarray(loss.W[...]), margin, scale)
    got = float(loss(jnp.asarray(embeddings), jnp.asarray(labels)))
    np.testing.assert_allclose(got, want.mean(), rtol=1e-10)


def test_sum_reducer_sums_the_per_sample_losses() -> None:
    loss = CosFaceLoss(4, 5, reducer=SumReducer(), param_dtype=jnp.float64, rngs=nnx.Rngs(3))
    rng = np.random.default_rng(1)
    embeddings, labels = rng.normal(size=(6, 5)), np.array([0, 1, 2, 3, 0, 1])
    want = _loop(embeddings, labels, np.asarray(loss.W[...]), 0.35, 64.0).sum()
    got = float(loss(jnp.asarray(embeddings), jnp.asarray(labels)))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_zero_margin_is_normalized_softmax() -> None:
    cos = CosFaceLoss(4, 5, margin=0.0, scale=8.0, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    soft = NormalizedSoftmaxLoss(4, 5, temperature=1 / 8, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    soft.W[...] = cos.W[...]
    embeddings = jnp.asarray(np.random.default_rng(2).normal(size=(6, 5)))
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    np.testing.assert_allclose(float(cos(embeddings, labels)), float(soft(embeddings, labels)))


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match=re.escape("expected `margin` to be >= 0, got -0.1")):
        CosFaceLoss(3, 4, margin=-0.1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=re.escape("expected `scale` to be a positive number")):
        CosFaceLoss(3, 4, scale=float("inf"), rngs=nnx.Rngs(0))
