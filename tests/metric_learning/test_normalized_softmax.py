"""NormalizedSoftmaxLoss against a hand-written float64 loop (rtol 1e-10: same formula, same
precision)."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.metric_learning import NormalizedSoftmaxLoss


def _loop(embeddings: np.ndarray, labels: np.ndarray, w: np.ndarray, temperature: float):
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    total = 0.0
    for x, y in zip(embeddings, labels, strict=True):
        logits = ((x / np.linalg.norm(x)) @ w) / temperature
        total += np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[y]
    return total / len(labels)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_matches_loop(temperature: float) -> None:
    loss = NormalizedSoftmaxLoss(
        4, 5, temperature=temperature, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(7, 5)), np.array([3, 1, 1, 2, 0, 0, 3])
    want = _loop(embeddings, labels, np.asarray(loss.W[...]), temperature)
    got = float(loss(jnp.asarray(embeddings), jnp.asarray(labels)))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_invariant_to_norms() -> None:
    # Embeddings and class weights are normalised: rescaling either changes nothing.
    loss = NormalizedSoftmaxLoss(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    embeddings, labels = jnp.asarray(rng.normal(size=(6, 5))), jnp.array([0, 1, 2, 3, 0, 1])
    before = float(loss(embeddings, labels))
    loss.W[...] = loss.W[...] * jnp.asarray([[0.1, 3.0, 7.0, 1.0]])
    scaled = embeddings * jnp.asarray(rng.uniform(0.1, 10.0, size=(6, 1)))
    np.testing.assert_allclose(float(loss(scaled, labels)), before, rtol=1e-12)


def test_bad_temperature() -> None:
    with pytest.raises(
        ValueError, match=re.escape("expected `temperature` to be a positive number, got -1.0")
    ):
        NormalizedSoftmaxLoss(3, 4, temperature=-1.0, rngs=nnx.Rngs(0))
