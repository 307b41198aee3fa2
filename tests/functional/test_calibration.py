"""Calibration functions: hand-computed values, bin conventions, edge cases, jit, gradients and the
exact error messages. Parity with torchmetrics/scikit-learn/torch and the equal-mass numpy loop is in
tests/reference/test_calibration_reference.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import calibrax.functional as F

# top-label confidences .9, .8, .6, .6; predicted classes 0, 1, 0, 1
PROBS = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
LABELS = jnp.array([0, 0, 0, 1], jnp.int32)


def test_ece_mce_reliability_by_hand():
    # confidences .9 .8 .6 .6; correct 1 0 1 1. Two uniform bins: [0, .5) empty, [.5, 1] all:
    # mean conf .725, acc .75 -> ECE = MCE = .025
    np.testing.assert_allclose(F.expected_calibration_error(PROBS, LABELS, n_bins=2), 0.025)
    np.testing.assert_allclose(F.maximum_calibration_error(PROBS, LABELS, n_bins=2), 0.025)
    # ten bins: bin 9 {.9: 1}, bin 8 {.8: 0}, bin 6 {.6, .6: 1, 1}
    # gaps .1, .8, .4 with weights 1/4, 1/4, 1/2 -> ECE .425, MCE .8
    np.testing.assert_allclose(F.expected_calibration_error(PROBS, LABELS, n_bins=10), 0.425)
    np.testing.assert_allclose(F.maximum_calibration_error(PROBS, LABELS, n_bins=10), 0.8)
    diagram = F.reliability_diagram(PROBS, LABELS, n_bins=10)
    assert isinstance(diagram, F.ReliabilityDiagram)
    np.testing.assert_array_equal(diagram.count, [0, 0, 0, 0, 0, 0, 2, 0, 1, 1])
    np.testing.assert_allclose(diagram.confidence, [0] * 6 + [0.6, 0, 0.8, 0.9])
    np.testing.assert_allclose(diagram.accuracy, [0] * 6 + [1, 0, 0, 1])


def test_quantile_bins_by_hand():
    # sorted confidences .6 .6 .8 .9 split 2 + 2: {.6, .6} acc 1, {.8, .9} acc .5
    # gaps .4 and .35 -> ECE .375, MCE .4
    kwargs = {"n_bins": 2, "strategy": "quantile"}
    np.testing.assert_allclose(F.expected_calibration_error(PROBS, LABELS, **kwargs), 0.375)
    np.testing.assert_allclose(F.maximum_calibration_error(PROBS, LABELS, **kwargs), 0.4)
    # 3 bins over 4 samples: sizes 2, 1, 1 (numpy.array_split)
    np.testing.assert_array_equal(
        F.reliability_diagram(PROBS, LABELS, n_bins=3, strategy="quantile").count, [2, 1, 1]
    )
    # more bins than samples: the last bins are empty
    np.testing.assert_array_equal(
        F.reliability_diagram(PROBS, LABELS, n_bins=6, strategy="quantile").count,
        [1, 1, 1, 1, 0, 0],
    )


def test_bin_edges_and_confidence_one():
    # confidence exactly 1 goes to the last bin; 0.5 starts the upper of two bins
    p = jnp.array([1.0, 0.5, 0.0])
    y = jnp.array([1, 1, 0], jnp.int32)
    np.testing.assert_array_equal(F.reliability_diagram(p, y, n_bins=2).count, [1, 2])


def test_binary_probabilities_use_class_one():
    # binary input: confidence = P(class 1), outcome = [y == 1] (torchmetrics' binary convention)
    p = jnp.array([0.9, 0.2, 0.7])
    y = jnp.array([1, 0, 0], jnp.int32)
    diagram = F.reliability_diagram(p, y, n_bins=2)
    np.testing.assert_array_equal(diagram.count, [1, 2])
    np.testing.assert_allclose(diagram.accuracy, [0.0, 0.5])
    np.testing.assert_allclose(diagram.confidence, [0.2, 0.8])


def test_perfect_calibration_gives_zero():
    # confidence 1 and always right
    p = jnp.eye(3)
    y = jnp.arange(3, dtype=jnp.int32)
    assert F.expected_calibration_error(p, y) == 0.0
    assert F.maximum_calibration_error(p, y) == 0.0
    assert F.brier_score(p, y) == 0.0


def test_brier_by_hand():
    # binary: (.9-1)^2, (.2-0)^2, (.7-0)^2 -> (.01 + .04 + .49)/3 = .18
    np.testing.assert_allclose(
        F.brier_score(jnp.array([0.9, 0.2, 0.7]), jnp.array([1, 0, 0], jnp.int32)), 0.18
    )
    # multiclass sums over classes, never halved: row 0 (.1^2 + .1^2), row 1 (.8^2 + .8^2), ...
    expected = np.mean([0.02, 1.28, 0.32, 0.32])
    np.testing.assert_allclose(F.brier_score(PROBS, LABELS), expected)


def test_nll_by_hand_and_shift_invariance():
    logits = jnp.array([[0.0, 0.0], [2.0, 0.0]])
    y = jnp.array([0, 1], jnp.int32)
    expected = (np.log(2) + np.log1p(np.exp(2.0))) / 2
    np.testing.assert_allclose(F.negative_log_likelihood(logits, y), expected, rtol=1e-12)
    # huge logits stay finite (stable log-softmax)
    np.testing.assert_allclose(F.negative_log_likelihood(logits + 1e4, y), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda p, t: F.expected_calibration_error(p, t, n_bins=3),
        lambda p, t: F.maximum_calibration_error(p, t, n_bins=3, strategy="quantile"),
        lambda p, t: F.reliability_diagram(p, t, n_bins=3, strategy="quantile"),
        F.brier_score,
        F.negative_log_likelihood,
    ],
)
def test_jit_matches_eager(call):
    # same arithmetic, possibly fused differently: 1e-12 relative in float64
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12),
        jax.jit(call)(PROBS, LABELS),
        call(PROBS, LABELS),
    )


def test_float32_stays_float32():
    p32 = PROBS.astype(jnp.float32)
    for fn in (F.expected_calibration_error, F.brier_score, F.negative_log_likelihood):
        assert fn(p32, LABELS).dtype == jnp.float32
    assert F.reliability_diagram(p32, LABELS).count.dtype == jnp.int32


def test_gradients():
    y = jnp.array([2, 0, 1], jnp.int32)
    z = jnp.array([[0.1, -0.3, 0.7], [1.0, 0.2, -0.5], [0.0, 0.4, 0.3]])
    # float64 central differences with check_grads' default tolerances
    check_grads(jax.jit(lambda x: F.negative_log_likelihood(x, y)), (z,), order=1, modes=["rev"])
    p = jax.nn.softmax(z, axis=-1)
    # eps 1e-6: the perturbed rows must still sum to 1 within the checks' atol (1e-4), or the
    # traced probability check (rightly) turns the score into NaN.
    check_grads(jax.jit(lambda x: F.brier_score(x, y)), (p,), order=1, modes=["rev"], eps=1e-6)


def _raises(exc, message, fn, *args, **kwargs):
    with pytest.raises(exc, match=re.escape(message)):
        fn(*args, **kwargs)


@pytest.mark.parametrize(
    "fn",
    [
        F.expected_calibration_error,
        F.maximum_calibration_error,
        F.reliability_diagram,
        F.brier_score,
    ],
)
def test_bad_probabilities(fn):
    _raises(
        ValueError,
        "expected `predictions` to sum to 1 along axis -1 (atol 0.0001), got a row summing to 1.1",
        fn,
        PROBS.at[0, 0].set(1.0),
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` to be in [0, 1], got values in [-0.2, 1.2]",
        fn,
        PROBS.at[1].set(jnp.array([-0.2, 1.2])),
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` to be finite, got 1 NaN and 0 Inf values",
        fn,
        PROBS.at[1, 1].set(jnp.nan),
        LABELS,
    )
    _raises(
        TypeError,
        "expected `targets` to have an integer dtype, got float64",
        fn,
        PROBS,
        LABELS.astype(jnp.float64),
    )
    _raises(
        ValueError,
        "expected `targets` to be in [0, 1] (num_classes=2), got values in [0, 2]",
        fn,
        PROBS,
        LABELS.at[3].set(2),
    )
    _raises(
        ValueError,
        "expected `predictions` and `targets` to have the same length, got 4 and 3",
        fn,
        PROBS,
        LABELS[:3],
    )
    _raises(
        ValueError, "expected `targets` to be non-empty, got shape (0,)", fn, PROBS[:0], LABELS[:0]
    )
    _raises(
        ValueError,
        "expected `predictions` to have 1 or 2 dims, got shape (4, 2, 1)",
        fn,
        PROBS[..., None],
        LABELS,
    )
    _raises(
        ValueError, "expected `num_classes` to be at least 2, got 1", fn, jnp.ones((4, 1)), LABELS
    )


def test_bad_binning_settings():
    _raises(
        ValueError,
        "expected `n_bins` to be a positive integer, got 0",
        F.expected_calibration_error,
        PROBS,
        LABELS,
        n_bins=0,
    )
    _raises(
        ValueError,
        "expected `strategy` to be one of 'uniform', 'quantile', got 'equal'",
        F.reliability_diagram,
        PROBS,
        LABELS,
        strategy="equal",
    )


def test_bad_logits():
    _raises(
        ValueError,
        "expected `predictions` to have 2 dims (batch, num_classes), got shape (4,)",
        F.negative_log_likelihood,
        PROBS[:, 0],
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` to be finite, got 0 NaN and 1 Inf values",
        F.negative_log_likelihood,
        PROBS.at[0, 0].set(jnp.inf),
        LABELS,
    )
    _raises(
        ValueError,
        "expected `targets` to be in [0, 1] (num_classes=2), got values in [0, 5]",
        F.negative_log_likelihood,
        PROBS,
        LABELS.at[0].set(5),
    )
    _raises(
        TypeError,
        "expected `predictions` to have a floating dtype, got int32",
        F.negative_log_likelihood,
        LABELS[:, None],
        LABELS,
    )
