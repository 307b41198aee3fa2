"""Behaviour shared by the six class-weight losses: protocol, jit, gradients, dtypes, bad input,
training with optax. The numbers themselves are checked per loss against hand-written loops
(tests/metric_learning/test_<loss>.py) and against pytorch-metric-learning
(tests/reference/test_learning_weight_losses_reference.py)."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from calibrax.core.protocols import MetricLearningProtocol
from calibrax.core.registry import get_entry
from calibrax.metric_learning import ArcFaceLoss
from calibrax.metric_learning import CosFaceLoss
from calibrax.metric_learning import NormalizedSoftmaxLoss
from calibrax.metric_learning import ProxyAnchorLoss
from calibrax.metric_learning import ProxyNCALoss
from calibrax.metric_learning import SubCenterArcFaceLoss

NUM_CLASSES = 5
EMBEDDING_SIZE = 6

LOSSES = {
    "arcface_loss": (ArcFaceLoss, "W"),
    "cosface_loss": (CosFaceLoss, "W"),
    "subcenter_arcface_loss": (SubCenterArcFaceLoss, "W"),
    "proxy_nca_loss": (ProxyNCALoss, "proxies"),
    "proxy_anchor_loss": (ProxyAnchorLoss, "proxies"),
    "normalized_softmax_loss": (NormalizedSoftmaxLoss, "W"),
}
NAMES = list(LOSSES)


def _make(name: str, dtype: Any = jnp.float32) -> Any:
    cls, _ = LOSSES[name]
    return cls(NUM_CLASSES, EMBEDDING_SIZE, param_dtype=dtype, rngs=nnx.Rngs(0))


def _batch(dtype: Any = np.float32, scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    embeddings = (scale * rng.normal(size=(10, EMBEDDING_SIZE))).astype(dtype)
    labels = np.array([0, 0, 1, 1, 1, 2, 3, 3, 0, 1], np.int32)  # class 2 single, 4 absent
    return jnp.asarray(embeddings), jnp.asarray(labels)


@pytest.mark.parametrize("name", NAMES)
def test_protocol_registry_and_shapes(name: str) -> None:
    loss = _make(name)
    assert isinstance(loss, MetricLearningProtocol)
    entry = get_entry(name)
    assert entry.obj is LOSSES[name][0]
    assert (entry.kind, entry.tier, entry.domain) == ("loss", 3, "metric_learning")
    assert entry.differentiable and entry.jit_compatible and entry.higher_is_better is False
    params = nnx.state(loss, nnx.Param)
    assert len(jax.tree.leaves(params)) == 1  # the class weights are the only parameter
    value = loss(*_batch())
    assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(float(value))


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_eager(name: str) -> None:
    loss = _make(name)
    embeddings, labels = _batch()
    eager = loss(embeddings, labels)
    jitted = nnx.jit(lambda m, e, y: m(e, y))(loss, embeddings, labels)
    # Same float32 graph; XLA fusion may reorder sums: a few ulps.
    np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_numerically(name: str) -> None:
    loss = _make(name, jnp.float64)
    embeddings, labels = _batch(np.float64)
    graphdef, state = nnx.split(loss)
    _, attr = LOSSES[name]

    def of_weights(weights: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state, copy=True)
        getattr(model, attr)[...] = weights
        return model(embeddings, labels)

    # float64 central differences (eps=1e-6 by default) against the autodiff gradient; the
    # default float64 tolerances of check_grads (1e-5 relative) apply.
    check_grads(jax.jit(lambda e: loss(e, labels)), (embeddings,), order=1, modes=["rev"])
    check_grads(jax.jit(of_weights), (getattr(loss, attr)[...],), order=1, modes=["rev"])


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_is_finite_and_close(name: str, dtype: Any) -> None:
    loss = _make(name)
    # Large norms: the squared norms (~6e5) overflow float16 if computed in float16.
    embeddings, labels = _batch(np.float32, scale=300.0)
    half = embeddings.astype(dtype)
    want = loss(half.astype(jnp.float32), labels)
    got, grads = jax.value_and_grad(lambda e: loss(e, labels))(half)
    assert got.dtype == dtype and grads.dtype == dtype
    assert np.isfinite(float(got)) and np.all(np.isfinite(np.asarray(grads, np.float32)))
    # Same inputs (rounded to half once), float32 arithmetic inside: only the final cast to
    # half differs, ~1e-3 (float16) / ~8e-3 (bfloat16) relative.
    rtol = 2e-3 if dtype == jnp.float16 else 1e-2
    np.testing.assert_allclose(float(got), float(want), rtol=rtol)


BAD_INPUTS = [
    (
        np.zeros((2, 3, EMBEDDING_SIZE), np.float32),
        np.zeros(2, np.int32),
        ValueError,
        "expected `embeddings` to have 2 dims (batch, embedding_dim), got shape (2, 3, 6)",
    ),
    (
        np.zeros((4, EMBEDDING_SIZE), np.float32),
        np.zeros(3, np.int32),
        ValueError,
        "expected `embeddings` and `labels` to have the same length, got 4 and 3",
    ),
    (
        np.zeros((4, EMBEDDING_SIZE), np.float32),
        np.zeros(4, np.float32),
        TypeError,
        "expected `labels` to have an integer dtype, got float32",
    ),
    (
        np.zeros((4, EMBEDDING_SIZE), np.int32),
        np.zeros(4, np.int32),
        TypeError,
        "expected `embeddings` to have a floating dtype, got int32",
    ),
    (
        np.array([[np.nan] + [1.0] * 5, [1.0] * 6], np.float32),
        np.zeros(2, np.int32),
        ValueError,
        "expected `embeddings` to be finite, got 1 NaN and 0 Inf values",
    ),
    (
        np.ones((3, EMBEDDING_SIZE), np.float32),
        np.array([0, 5, 1], np.int32),
        ValueError,
        "expected `labels` to be in [0, 4] (num_classes=5), got values in [0, 5]",
    ),
    (
        np.ones((3, EMBEDDING_SIZE), np.float32),
        np.array([0, -1, 1], np.int32),
        ValueError,
        "expected `labels` to be in [0, 4] (num_classes=5), got values in [-1, 1]",
    ),
    (
        np.ones((4, 5), np.float32),
        np.zeros(4, np.int32),
        ValueError,
        "expected `embeddings` to have embedding_size 6 on axis 1, got shape (4, 5)",
    ),
    (
        np.ones((0, EMBEDDING_SIZE), np.float32),
        np.zeros(0, np.int32),
        ValueError,
        "expected `embeddings` to be non-empty, got shape (0, 6)",
    ),
]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_messages(name: str) -> None:
    loss = _make(name)
    for embeddings, labels, error, message in BAD_INPUTS:
        with pytest.raises(error, match=re.escape(message)):
            loss(jnp.asarray(embeddings), jnp.asarray(labels))


@pytest.mark.parametrize("name", NAMES)
def test_bad_constructor_arguments(name: str) -> None:
    cls, _ = LOSSES[name]
    with pytest.raises(ValueError, match=re.escape("expected `num_classes` to be a positive")):
        cls(0, EMBEDDING_SIZE, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=re.escape("expected `embedding_size` to be a positive")):
        cls(NUM_CLASSES, 2.5, rngs=nnx.Rngs(0))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `reducer` to be a calibrax.metric_learning reducer or None, got str"
        ),
    ):
        cls(NUM_CLASSES, EMBEDDING_SIZE, reducer="mean", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", ["arcface_loss", "proxy_anchor_loss"])
def test_out_of_range_labels_under_jit_give_nan(name: str) -> None:
    loss = _make(name)
    embeddings, labels = _batch()
    bad = labels.at[0].set(NUM_CLASSES)
    value = nnx.jit(lambda m, e, y: m(e, y))(loss, embeddings, bad)
    assert np.isnan(float(value))


@pytest.mark.parametrize("name", NAMES)
def test_training_with_optax_updates_the_weights(name: str) -> None:
    loss = _make(name)
    _, attr = LOSSES[name]
    embeddings, labels = _batch()
    before = np.array(getattr(loss, attr)[...])
    optimizer = nnx.Optimizer(loss, optax.adam(5e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model: Any, optimizer: nnx.Optimizer) -> jax.Array:
        value, grads = nnx.value_and_grad(lambda m: m(embeddings, labels))(model)
        # optax's Adam bias correction mixes a float decay with the int32 step count.
        with jax.numpy_dtype_promotion("standard"):
            optimizer.update(model, grads)
        return value

    first = float(step(loss, optimizer))
    for _ in range(10):
        last = float(step(loss, optimizer))
    assert not np.allclose(np.asarray(getattr(loss, attr)[...]), before)
    assert float(loss(embeddings, labels)) < first
    assert last < first
