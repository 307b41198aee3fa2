"""MarginLoss: beta as an nnx.Param (learn_beta) or a fixed variable, and training it with optax."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import calibrax.metric_learning as C
from calibrax.metric_learning.losses.margin import FixedBeta

EMB = jax.random.normal(jax.random.key(0), (12, 6), jnp.float32)
LABELS = jnp.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 3], jnp.int32)


def test_beta_defaults_and_variable_types():
    fixed = C.MarginLoss()
    assert isinstance(fixed.beta, FixedBeta) and not isinstance(fixed.beta, nnx.Param)
    np.testing.assert_array_equal(np.asarray(fixed.beta[...]), np.float32([1.2]))
    per_class = C.MarginLoss(learn_beta=True, num_classes=4, beta=0.7)
    assert isinstance(per_class.beta, nnx.Param)
    assert per_class.beta[...].shape == (4,) and per_class.beta[...].dtype == jnp.float32
    assert not nnx.state(fixed, nnx.Param)


def test_learned_beta_moves_under_an_optax_step():
    loss = C.MarginLoss(learn_beta=True, nu=0.5, num_classes=4)
    optimizer = nnx.Optimizer(loss, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        value, grads = nnx.value_and_grad(lambda m: m(EMB, LABELS))(model)
        optimizer.update(model, grads)
        return value

    before = np.asarray(loss.beta[...]).copy()
    first = step(loss, optimizer)
    assert np.all(np.isfinite(np.asarray(loss.beta[...])))
    assert not np.allclose(np.asarray(loss.beta[...]), before)
    assert float(step(loss, optimizer)) != float(first)


def test_fixed_beta_gets_no_gradient():
    loss = C.MarginLoss()
    grads = nnx.grad(lambda m: m(EMB, LABELS), argnums=nnx.DiffState(0, FixedBeta))(loss)
    np.testing.assert_array_equal(np.asarray(grads.beta[...]), np.zeros(1, np.float32))


def test_per_class_beta_needs_labels_in_range():
    loss = C.MarginLoss(learn_beta=True, num_classes=3)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `labels` to be in [0, 2] (num_classes=3), got values in [0, 3]"),
    ):
        loss(EMB, LABELS)
    with pytest.raises(
        ValueError, match=re.escape("expected `num_classes` to be a positive integer, got 0")
    ):
        C.MarginLoss(num_classes=0)
