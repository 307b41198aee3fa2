"""ProxyNCALoss against a hand-written float64 loop (rtol 1e-10: same formula, same precision)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.metric_learning import ProxyNCALoss


def _loop(embeddings: np.ndarray, labels: np.ndarray, proxies: np.ndarray, softmax_scale: float):
    p = proxies / np.linalg.norm(proxies, axis=1, keepdims=True)
    total = 0.0
    for x, y in zip(embeddings, labels, strict=True):
        d2 = np.sum((x / np.linalg.norm(x) - p) ** 2, axis=1)
        logits = -softmax_scale * d2
        total += np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[y]
    return total / len(labels)


@pytest.mark.parametrize("softmax_scale", [1.0, 5.0, 30.0])
def test_matches_loop(softmax_scale: float) -> None:
    loss = ProxyNCALoss(
        4, 5, softmax_scale=softmax_scale, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    assert loss.proxies[...].shape == (4, 5)
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(7, 5)), np.array([3, 1, 1, 2, 0, 0, 3])
    want = _loop(embeddings, labels, np.asarray(loss.proxies[...]), softmax_scale)
    got = float(loss(jnp.asarray(embeddings), jnp.asarray(labels)))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_large_scale_stays_finite() -> None:
    # exp(-1000 * 4) underflows; the log-softmax keeps the loss and its gradient finite (and
    # equal to the closed form: the loss of a sample is its squared-distance gap times 1000).
    loss = ProxyNCALoss(3, 4, softmax_scale=1000.0, rngs=nnx.Rngs(0))
    embeddings = -loss.proxies[...][jnp.array([0, 1])]
    labels = jnp.array([0, 1])
    value, grads = jax.value_and_grad(lambda e: loss(e, labels))(embeddings)
    assert np.isfinite(float(value)) and float(value) > 100
    assert np.all(np.isfinite(np.asarray(grads)))


def test_bad_softmax_scale() -> None:
    with pytest.raises(
        ValueError, match=re.escape("expected `softmax_scale` to be a positive number, got 0.0")
    ):
        ProxyNCALoss(3, 4, softmax_scale=0.0, rngs=nnx.Rngs(0))
