"""SubCenterArcFaceLoss against a hand-written float64 loop (rtol 1e-10: same formula, same
precision), and its outlier finder against a loop over classes."""

from __future__ import annotations

import math
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.metric_learning import ArcFaceLoss
from calibrax.metric_learning import SubCenterArcFaceLoss


def _loop(embeddings, labels, w, num_classes, k, margin, scale):
    m = math.radians(margin)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    total = 0.0
    for x, y in zip(embeddings, labels, strict=True):
        all_cos = (x / np.linalg.norm(x)) @ w
        cos = np.array([all_cos[c * k : (c + 1) * k].max() for c in range(num_classes)])
        theta = math.acos(min(max(cos[y], -1.0), 1.0))
        target = math.cos(theta + m) if theta <= math.pi - m else math.cos(theta) - m * math.sin(m)
        logits = scale * cos
        logits[y] = scale * target
        total += np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[y]
    return total / len(labels)


@pytest.mark.parametrize(("k", "margin", "scale"), [(3, 28.6, 64.0), (2, 15.0, 10.0)])
def test_matches_loop(k: int, margin: float, scale: float) -> None:
    loss = SubCenterArcFaceLoss(
        4, 5, sub_centers=k, margin=margin, scale=scale, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
    assert loss.W[...].shape == (5, 4 * k)
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(8, 5)), np.array([3, 1, 1, 2, 0, 0, 3, 3])
    want = _loop(embeddings, labels, np.asarray(loss.W[...]), 4, k, margin, scale)
    got = float(loss(jnp.asarray(embeddings), jnp.asarray(labels)))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_one_sub_center_is_arcface() -> None:
    sub = SubCenterArcFaceLoss(4, 5, sub_centers=1, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    arc = ArcFaceLoss(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(7))
    arc.W[...] = sub.W[...]
    embeddings = jnp.asarray(np.random.default_rng(1).normal(size=(6, 5)))
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    np.testing.assert_allclose(float(sub(embeddings, labels)), float(arc(embeddings, labels)))


def test_get_outliers_matches_loop_and_jit() -> None:
    k, num_classes = 3, 4
    loss = SubCenterArcFaceLoss(num_classes, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(2))
    w = np.asarray(loss.W[...])
    rng = np.random.default_rng(5)
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 0, 2])  # class 3 absent
    embeddings = w.T[labels * k + rng.integers(0, k, labels.size)] + rng.normal(size=(10, 5))
    threshold = 60.0

    outliers, centers = loss.get_outliers(jnp.asarray(embeddings), jnp.asarray(labels), threshold)
    jit_outliers, jit_centers = nnx.jit(lambda m, e, y: m.get_outliers(e, y, threshold))(
        loss, jnp.asarray(embeddings), jnp.asarray(labels)
    )
    np.testing.assert_array_equal(np.asarray(jit_outliers), np.asarray(outliers))
    np.testing.assert_array_equal(np.asarray(jit_centers), np.asarray(centers))

    want_outliers = np.zeros(labels.size, bool)
    want_centers = np.zeros((5, num_classes))
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        cos = (embeddings[idx] / np.linalg.norm(embeddings[idx], axis=1, keepdims=True)) @ wn[
            :, c * k : (c + 1) * k
        ]
        dominant = np.argmax(np.bincount(np.argmax(cos, axis=1), minlength=k))
        want_centers[:, c] = w[:, c * k + dominant]
        want_outliers[idx] = cos[:, dominant] < math.cos(math.radians(threshold))
    np.testing.assert_array_equal(np.asarray(outliers), want_outliers)
    np.testing.assert_array_equal(np.asarray(centers), want_centers)
    assert want_outliers.any() and not want_outliers.all()  # the case is not trivial


def test_bad_sub_centers() -> None:
    with pytest.raises(
        ValueError, match=re.escape("expected `sub_centers` to be a positive integer, got 0")
    ):
        SubCenterArcFaceLoss(3, 4, sub_centers=0, rngs=nnx.Rngs(0))
