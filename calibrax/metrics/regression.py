"""Tier-0 regression metrics as ``MetricProtocol`` classes and streaming ``StatefulMetric`` classes.

Both kinds call the ``_update``/``_compute`` pairs of :mod:`calibrax.functional.regression`, so
they give the same numbers as the functions. Streaming classes keep their state in float32 by
default (``dtype=`` to change it; float64 needs ``jax_enable_x64``).
"""

from __future__ import annotations

from typing import ClassVar

import jax

from calibrax.core.base import Metric
from calibrax.core.registry import register
from calibrax.functional import regression as F
from calibrax.metrics._accumulate import ChanMetric
from calibrax.metrics._accumulate import SumCountMetric

__all__ = [
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredError",
    "PearsonCorrelation",
    "R2Score",
    "RootMeanSquaredError",
    "StreamingMeanAbsoluteError",
    "StreamingMeanAbsolutePercentageError",
    "StreamingMeanSquaredError",
    "StreamingPearsonCorrelation",
    "StreamingR2Score",
    "StreamingRootMeanSquaredError",
]


def _metric_example(cls):
    return lambda: ((lambda p, t: cls()(p, t)), F._example_pair())


def _streaming_example(cls):
    def run(p, t):
        metric = cls()
        metric.update(predictions=p[:5], targets=t[:5])
        metric.update(predictions=p[5:], targets=t[5:])
        return metric.compute()[cls.name]

    return lambda: (run, F._example_pair())


def _register(cls, kind: str, differentiable: bool = False):
    example = _metric_example(cls) if kind == "metric" else _streaming_example(cls)
    return register(
        cls.__name__,
        kind=kind,
        tier=0,
        domain="regression",
        higher_is_better=cls.higher_is_better,
        differentiable=differentiable,
        example=example,
    )(cls)


# --------------------------------------------------------------------------- MetricProtocol
class _RegressionMetric(Metric):
    _vector: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like the functional metric.

        Raises:
            TypeError: If an input is not floating.
            ValueError: If shapes differ, inputs are empty, or (eagerly) hold NaN/Inf.
        """
        if self._vector:
            F._check_regression(predictions, targets, vector=True, min_samples=2)
        else:
            F._check_regression(predictions, targets)


class MeanSquaredError(_RegressionMetric):
    """Mean squared error (see :func:`calibrax.functional.mean_squared_error`)."""

    name = "mean_squared_error"
    higher_is_better = False

    def _compute(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F._mean_compute(*F._squared_error_update(predictions, targets))


class RootMeanSquaredError(_RegressionMetric):
    """Root mean squared error (see :func:`calibrax.functional.root_mean_squared_error`)."""

    name = "root_mean_squared_error"
    higher_is_better = False

    def _compute(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F._rmse_compute(*F._squared_error_update(predictions, targets))


class MeanAbsoluteError(_RegressionMetric):
    """Mean absolute error (see :func:`calibrax.functional.mean_absolute_error`)."""

    name = "mean_absolute_error"
    higher_is_better = False

    def _compute(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F._mean_compute(*F._absolute_error_update(predictions, targets))


class MeanAbsolutePercentageError(_RegressionMetric):
    """Mean absolute percentage error, as a fraction
    (see :func:`calibrax.functional.mean_absolute_percentage_error`)."""

    name = "mean_absolute_percentage_error"
    higher_is_better = False

    def _compute(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F._mean_compute(*F._absolute_percentage_error_update(predictions, targets))


class R2Score(_RegressionMetric):
    """Coefficient of determination (see :func:`calibrax.functional.r2_score`)."""

    name = "r2_score"
    higher_is_better = True
    _vector = True

    def _compute(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F._r2_compute(*F._r2_update(predictions, targets))


class PearsonCorrelation(_RegressionMetric):
    """Pearson correlation (see :func:`calibrax.functional.pearson_correlation`)."""

    name = "pearson_correlation"
    higher_is_better = True
    _vector = True

    def _compute(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F._pearson_compute(*F._pearson_update(predictions, targets))


# --------------------------------------------------------------------------- streaming
class _StreamingRegression(SumCountMetric):
    def _check(self, predictions: jax.Array, targets: jax.Array) -> None:
        F._check_regression(predictions, targets)


class StreamingMeanSquaredError(_StreamingRegression):
    """Streaming mean squared error over every element seen.

    State: the sum of squared errors and the element count (additive, so ``merge`` and
    ``reduce`` add them).

    Args:
        dtype: Dtype of the accumulated sum (float32 by default).
    """

    name = "mean_squared_error"
    higher_is_better = False
    _batch = staticmethod(F._squared_error_update)


class StreamingRootMeanSquaredError(_StreamingRegression):
    """Streaming root mean squared error (root of the running mean of squared errors).

    Args:
        dtype: Dtype of the accumulated sum (float32 by default).
    """

    name = "root_mean_squared_error"
    higher_is_better = False
    _batch = staticmethod(F._squared_error_update)
    _finish = staticmethod(F._rmse_compute)


class StreamingMeanAbsoluteError(_StreamingRegression):
    """Streaming mean absolute error.

    Args:
        dtype: Dtype of the accumulated sum (float32 by default).
    """

    name = "mean_absolute_error"
    higher_is_better = False
    _batch = staticmethod(F._absolute_error_update)


class StreamingMeanAbsolutePercentageError(_StreamingRegression):
    """Streaming mean absolute percentage error (a fraction).

    Args:
        dtype: Dtype of the accumulated sum (float32 by default).
    """

    name = "mean_absolute_percentage_error"
    higher_is_better = False
    _batch = staticmethod(F._absolute_percentage_error_update)


class _StreamingCentred(ChanMetric):
    def _check(self, predictions: jax.Array, targets: jax.Array) -> None:
        F._check_regression(predictions, targets, vector=True)


class StreamingR2Score(_StreamingCentred):
    """Streaming coefficient of determination.

    State: sample count, mean of the targets, their centred sum of squares and the sum of squared
    errors. Batches and other metrics merge with Chan et al.'s exact parallel update, so any split
    of the data gives the value of :func:`calibrax.functional.r2_score` on the whole. ``compute``
    needs at least 2 samples.

    Args:
        dtype: Dtype of the statistics (float32 by default).
    """

    name = "r2_score"
    higher_is_better = True
    _fields = ("count", "mean_targets", "sum_squares_targets", "sum_squared_errors")
    _batch_stats = staticmethod(F._r2_update)
    _merge_stats = staticmethod(F._r2_merge)
    _compute_stats = staticmethod(F._r2_compute)


class StreamingPearsonCorrelation(_StreamingCentred):
    """Streaming Pearson correlation.

    State: sample count, both means, both centred sums of squares and the centred cross product,
    merged with Chan et al.'s exact parallel update. NaN when either side is constant (as
    :func:`calibrax.functional.pearson_correlation`). ``compute`` needs at least 2 samples.

    Args:
        dtype: Dtype of the statistics (float32 by default).
    """

    name = "pearson_correlation"
    higher_is_better = True
    _fields = (
        "count",
        "mean_predictions",
        "mean_targets",
        "sum_squares_predictions",
        "sum_squares_targets",
        "sum_cross",
    )
    _batch_stats = staticmethod(F._pearson_update)
    _merge_stats = staticmethod(F._pearson_merge)
    _compute_stats = staticmethod(F._pearson_compute)


# Every regression score is differentiable in the predictions (MAE/MAPE almost everywhere).
for _cls in (
    MeanSquaredError,
    RootMeanSquaredError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    R2Score,
    PearsonCorrelation,
):
    _register(_cls, "metric", differentiable=True)
for _cls in (
    StreamingMeanSquaredError,
    StreamingRootMeanSquaredError,
    StreamingMeanAbsoluteError,
    StreamingMeanAbsolutePercentageError,
    StreamingR2Score,
    StreamingPearsonCorrelation,
):
    _register(_cls, "stateful_metric")
del _cls
