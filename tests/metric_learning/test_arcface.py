"""ArcFaceLoss against a hand-written float64 loop over samples (rtol 1e-10: the same formula in the
same precision, only the summation order differs)."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.metric_learning import ArcFaceLoss
from calibrax.metric_learning import NormalizedSoftmaxLoss


def _loop(embeddings: np.ndarray, labels: np.ndarray, w: np.ndarray, margin: float, scale: float):
    m = math.radians(margin)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    total = 0.0
    for x, y in zip(embeddings, labels, strict=True):
        cos = (x / np.linalg.norm(x)) @ w
        theta = math.acos(min(max(cos[y], -1.0), 1.0))
        target = math.cos(theta + m) if theta <= math.pi - m else math.cos(theta) - m * math.sin(m)
        logits = scale * cos
        logits[y] = scale * target
        total += np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[y]
    return total / len(labels)


def _model(num_classes: int = 4, embedding_size: int = 5, **kwargs) -> ArcFaceLoss:
    return ArcFaceLoss(
        num_classes, embedding_size, param_dtype=jnp.float64, rngs=nnx.Rngs(1), **kwargs
    )


@pytest.mark.parametrize(("margin", "scale"), [(28.6, 64.0), (10.0, 8.0), (60.0, 30.0)])
@pytest.mark.parametrize("opposite", [False, True])
def test_matches_loop(margin: float, scale: float, opposite: bool) -> None:
    loss = _model(margin=margin, scale=scale)
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 1, 2, 0, 0, 3])
    embeddings = rng.normal(size=(7, 5))
    w = np.asarray(loss.W[...])
    if opposite:  # angles near 180 degrees: the cos(theta) - m sin(m) branch
        embeddings = -w.T[labels] + 0.05 * embeddings
    got = float(loss(jnp.asarray(embeddings), jnp.asarray(labels)))
    np.testing.assert_allclose(got, _loop(embeddings, labels, w, margin, scale), rtol=1e-10)


def test_zero_margin_is_normalized_softmax() -> None:
    # With m = 0 ArcFace is the normalized softmax at temperature 1/scale.
    arc = _model(margin=0.0, scale=16.0)
    soft = NormalizedSoftmaxLoss(
        4, 5, temperature=1 / 16, param_dtype=jnp.float64, rngs=nnx.Rngs(1)
    )
    soft.W[...] = arc.W[...]
    embeddings = jnp.asarray(np.random.default_rng(2).normal(size=(6, 5)))
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    np.testing.assert_allclose(float(arc(embeddings, labels)), float(soft(embeddings, labels)))


def test_embedding_on_its_class_weight_has_finite_gradient() -> None:
    # cos = 1 exactly: d acos/dc is infinite there; the loss keeps the gradient finite.
    loss = _model()
    embeddings = jnp.stack([loss.W[...][:, 2], loss.W[...][:, 0] + 0.3])
    labels = jnp.array([2, 1])
    grads = jax.grad(lambda e: loss(e, labels))(embeddings)
    assert np.all(np.isfinite(np.asarray(grads)))


def test_init_is_standard_normal() -> None:
    w = np.asarray(ArcFaceLoss(100, 200, rngs=nnx.Rngs(0)).W[...])
    assert w.shape == (200, 100)
    # 20000 draws: the sample std is within 2% of 1 with overwhelming probability.
    assert abs(w.std() - 1.0) < 0.02 and abs(w.mean()) < 0.02


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match=re.escape("expected `margin` to be in [0, 180) degrees")):
        ArcFaceLoss(3, 4, margin=180.0, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=re.escape("expected `scale` to be a positive number, got 0")
    ):
        ArcFaceLoss(3, 4, scale=0, rngs=nnx.Rngs(0))
