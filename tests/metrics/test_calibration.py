"""Calibration MetricProtocol classes and streaming classes against the functions."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calibrax.functional as F
import calibrax.metrics as M
from calibrax.core import MetricProtocol
from calibrax.core import StatefulMetricProtocol

from ._streaming import MODES
from ._streaming import assert_tree_close
from ._streaming import batches
from ._streaming import merged
from ._streaming import stream

C = 3
RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(size=(40, C)) * 2, jnp.float32)
PROBS = jax.nn.softmax(LOGITS, axis=-1)
LABELS = jnp.asarray(RNG.integers(0, C, 40), jnp.int32)
BINARY = jax.nn.sigmoid(LOGITS[:, 0])
BINARY_LABELS = (LABELS % 2).astype(jnp.int32)


def _diagram(p, t):
    return F.reliability_diagram(p, t, n_bins=10)._asdict()


# (streaming factory, inputs, targets, function on the whole)
CASES = {
    "ece": (
        lambda: M.StreamingExpectedCalibrationError(n_bins=10),
        PROBS,
        LABELS,
        lambda p, t: F.expected_calibration_error(p, t, n_bins=10),
    ),
    "mce_binary": (
        lambda: M.StreamingMaximumCalibrationError(n_bins=10),
        BINARY,
        BINARY_LABELS,
        lambda p, t: F.maximum_calibration_error(p, t, n_bins=10),
    ),
    "reliability": (
        lambda: M.StreamingReliabilityDiagram(n_bins=10),
        PROBS,
        LABELS,
        _diagram,
    ),
    "brier": (M.StreamingBrierScore, PROBS, LABELS, F.brier_score),
    "nll": (M.StreamingNegativeLogLikelihood, LOGITS, LABELS, F.negative_log_likelihood),
}


def _value(metric):
    out = metric.compute()
    return out if isinstance(metric, M.StreamingReliabilityDiagram) else out[metric.name]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_any_batching_gives_the_whole(case, mode):
    make, p, t, fn = CASES[case]
    m = stream(make, batches(p, t), mode)
    assert isinstance(m, StatefulMetricProtocol)
    # float32 per-bin / total sums in a different order: 1e-5 relative (1e-7 absolute for
    # exact-zero bins)
    assert_tree_close(_value(m), fn(p, t), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", list(CASES))
def test_merge_gives_the_whole(case):
    make, p, t, fn = CASES[case]
    assert_tree_close(_value(merged(make, p, t, cut=21)), fn(p, t), rtol=1e-5, atol=1e-7)


def test_reliability_state_shapes_are_fixed():
    m = M.StreamingReliabilityDiagram(n_bins=7)
    assert m.count[...].shape == (7,) and m.count[...].dtype == jnp.int32
    assert m.sum_confidence[...].dtype == jnp.float32
    m.update(predictions=PROBS, targets=LABELS, features=jnp.zeros(2))
    out = m.compute()
    assert sorted(out) == ["accuracy", "confidence", "count"]
    assert int(out["count"].sum()) == 40


def test_streaming_errors():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected at least 1 samples accumulated by `update` before `compute`, got 0"
        ),
    ):
        M.StreamingExpectedCalibrationError().compute()
    with pytest.raises(
        ValueError, match=re.escape("expected `n_bins` to be a positive integer, got 2.5")
    ):
        M.StreamingReliabilityDiagram(n_bins=2.5)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` to sum to 1 along axis -1 (atol 0.0001), got a row summing to"
        ),
    ):
        M.StreamingBrierScore().update(predictions=PROBS * 0.5, targets=LABELS)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected state `count` of `other` to have shape (10,) and dtype int32, "
            "got shape (5,) and dtype int32"
        ),
    ):
        M.StreamingExpectedCalibrationError(n_bins=10).merge(
            M.StreamingExpectedCalibrationError(n_bins=5)
        )


METRICS = [
    (
        M.ExpectedCalibrationError(n_bins=5, strategy="quantile"),
        PROBS,
        lambda p, t: F.expected_calibration_error(p, t, n_bins=5, strategy="quantile"),
    ),
    (M.MaximumCalibrationError(), PROBS, F.maximum_calibration_error),
    (M.BrierScore(), PROBS, F.brier_score),
    (M.NegativeLogLikelihood(), LOGITS, F.negative_log_likelihood),
]


@pytest.mark.parametrize(("metric", "inputs", "fn"), METRICS, ids=lambda x: type(x).__name__)
def test_metric_classes_match_functions(metric, inputs, fn):
    assert isinstance(metric, MetricProtocol)
    assert metric.higher_is_better is False
    np.testing.assert_array_equal(metric.compute(inputs, LABELS), fn(inputs, LABELS))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` and `targets` to have the same length, got 40 and 39"
        ),
    ):
        metric.validate_inputs(inputs, LABELS[:39])


def test_metric_class_settings_are_validated():
    with pytest.raises(
        ValueError,
        match=re.escape("expected `strategy` to be one of 'uniform', 'quantile', got 'adaptive'"),
    ):
        M.ExpectedCalibrationError(strategy="adaptive")
