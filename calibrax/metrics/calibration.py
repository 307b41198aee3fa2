"""Tier-0 calibration metrics as ``MetricProtocol`` classes and streaming ``StatefulMetric``
classes.

Both kinds call the ``_update``/``_compute`` pairs of :mod:`calibrax.functional.calibration`, so
they give the same numbers as the functions. The streaming binned metrics keep per-bin sums
(count, sum of confidences, sum of outcomes) over equal-width bins only: equal-mass bin edges are
quantiles of all the confidences, which a fixed-size state cannot know before the end.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.core.base import Metric
from calibrax.core.base import StatefulMetric
from calibrax.core.registry import register
from calibrax.core.state import MetricState
from calibrax.functional import calibration as F
from calibrax.functional import classification as C
from calibrax.metrics._accumulate import SumCountMetric

__all__ = [
    "BrierScore",
    "ExpectedCalibrationError",
    "MaximumCalibrationError",
    "NegativeLogLikelihood",
    "StreamingBrierScore",
    "StreamingExpectedCalibrationError",
    "StreamingMaximumCalibrationError",
    "StreamingNegativeLogLikelihood",
    "StreamingReliabilityDiagram",
]


# --------------------------------------------------------------------------- MetricProtocol
class _BinnedMetric(Metric):
    def __init__(self, *, n_bins: int = 15, strategy: str = "uniform") -> None:
        F._check_binning(n_bins, strategy)
        super().__init__(n_bins=n_bins, strategy=strategy)

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like the functional metric (same errors)."""
        C._check_probabilistic(predictions, targets)


class ExpectedCalibrationError(_BinnedMetric):
    """Expected calibration error (see :func:`calibrax.functional.expected_calibration_error`).

    Args:
        n_bins: Number of bins.
        strategy: "uniform" (equal width) or "quantile" (equal mass).

    Raises:
        ValueError: If ``n_bins`` or ``strategy`` is invalid.
    """

    name = "expected_calibration_error"
    higher_is_better = False

    def _compute(self, predictions, targets, *, n_bins, strategy):
        return F._ece_compute(*F._calibration_update(predictions, targets, n_bins, strategy))


class MaximumCalibrationError(_BinnedMetric):
    """Maximum calibration error (see :func:`calibrax.functional.maximum_calibration_error`).

    Args:
        n_bins: Number of bins.
        strategy: "uniform" (equal width) or "quantile" (equal mass).

    Raises:
        ValueError: If ``n_bins`` or ``strategy`` is invalid.
    """

    name = "maximum_calibration_error"
    higher_is_better = False

    def _compute(self, predictions, targets, *, n_bins, strategy):
        return F._mce_compute(*F._calibration_update(predictions, targets, n_bins, strategy))


class BrierScore(Metric):
    """Brier score (see :func:`calibrax.functional.brier_score`)."""

    name = "brier_score"
    higher_is_better = False

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like :func:`calibrax.functional.brier_score` (same errors)."""
        C._check_probabilistic(predictions, targets)

    def _compute(self, predictions, targets):
        return C._mean_compute(*F._brier_update(predictions, targets))


class NegativeLogLikelihood(Metric):
    """Negative log-likelihood of logits
    (see :func:`calibrax.functional.negative_log_likelihood`)."""

    name = "negative_log_likelihood"
    higher_is_better = False

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like :func:`calibrax.functional.negative_log_likelihood` (same errors)."""
        F._check_logits(predictions, targets)

    def _compute(self, predictions, targets):
        return C._mean_compute(*F._nll_update(predictions, targets))


# --------------------------------------------------------------------------- streaming
class _StreamingBinned(StatefulMetric):
    """Per-bin sums over equal-width bins, additive across batches, devices and merges."""

    def __init__(self, *, n_bins: int = 15, dtype: Any = jnp.float32) -> None:
        checks.check_positive_int(n_bins, "n_bins")
        self.n_bins = n_bins
        self.count = MetricState(jnp.zeros(n_bins, jnp.int32))
        self.sum_confidence = MetricState(jnp.zeros(n_bins, dtype))
        self.sum_outcome = MetricState(jnp.zeros(n_bins, dtype))

    def update(
        self,
        *,
        predictions: jax.Array,
        targets: jax.Array,
        mask: jax.Array | None = None,
        **kwargs: Any,
    ) -> None:
        """Add a batch; keyword arguments other than these are ignored.

        Args:
            predictions: Probabilities, (batch, num_classes) or (batch,).
            targets: Integer targets, (batch,).
            mask: Optional ``(batch,)`` bool / 0-1 vector; masked rows change nothing.
            **kwargs: Ignored (other metrics' inputs in ``nnx.MultiMetric``).
        """
        del kwargs
        rows = self._rows(predictions, mask)
        if rows is None:
            return
        C._check_probabilistic(*rows.select(predictions, targets))
        if rows.keep is None:
            count, conf, outcome = F._calibration_update(
                predictions, targets, self.n_bins, "uniform"
            )
        else:
            per_row = jax.vmap(
                lambda p, t: F._calibration_update(p[None], t[None], self.n_bins, "uniform")
            )(predictions, targets)
            count, conf, outcome = (jnp.sum(rows.where(s), axis=0, dtype=s.dtype) for s in per_row)
        self.count[...] = self.count[...] + count
        dtype = self.sum_confidence[...].dtype
        self.sum_confidence[...] = self.sum_confidence[...] + conf.astype(dtype)
        self.sum_outcome[...] = self.sum_outcome[...] + outcome.astype(dtype)

    def _stats(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        checks.check_accumulated(jnp.sum(self.count[...]), 1)
        return self.count[...], self.sum_confidence[...], self.sum_outcome[...]


_STREAMING_BINNED_DOC = """

    Inputs are class probabilities (batch, num_classes) or binary probabilities (batch,) with
    integer targets, as in :mod:`calibrax.functional.calibration`. State: per equal-width bin, the
    count (int32), the sum of confidences and the sum of outcomes. Equal-mass ("quantile") bins are
    not available when streaming, because their edges depend on all the data; use the function on
    the whole set for those.

    Args:
        n_bins: Number of equal-width bins.
        dtype: Dtype of the per-bin sums (float32 by default).

    Raises:
        ValueError: If ``n_bins`` is not a positive integer.
"""


class StreamingExpectedCalibrationError(_StreamingBinned):
    name = "expected_calibration_error"
    higher_is_better = False

    def compute(self) -> dict[str, jax.Array]:
        """``{"expected_calibration_error": value}``; raises eagerly before any sample."""
        return {self.name: F._ece_compute(*self._stats())}


class StreamingMaximumCalibrationError(_StreamingBinned):
    name = "maximum_calibration_error"
    higher_is_better = False

    def compute(self) -> dict[str, jax.Array]:
        """``{"maximum_calibration_error": value}``; raises eagerly before any sample."""
        return {self.name: F._mce_compute(*self._stats())}


class StreamingReliabilityDiagram(_StreamingBinned):
    name = "reliability_diagram"

    def compute(self) -> dict[str, jax.Array]:
        """``{"confidence", "accuracy", "count"}`` arrays of shape (n_bins,) (see
        :class:`calibrax.functional.ReliabilityDiagram`); raises eagerly before any sample."""
        return F._reliability_compute(*self._stats())._asdict()


StreamingExpectedCalibrationError.__doc__ = (
    "Streaming expected calibration error over equal-width bins." + _STREAMING_BINNED_DOC
)
StreamingMaximumCalibrationError.__doc__ = (
    "Streaming maximum calibration error over equal-width bins." + _STREAMING_BINNED_DOC
)
StreamingReliabilityDiagram.__doc__ = (
    "Streaming reliability-diagram data over equal-width bins." + _STREAMING_BINNED_DOC
)


class StreamingBrierScore(SumCountMetric):
    """Streaming Brier score: state (sum of per-sample scores, number seen).

    Args:
        dtype: Dtype of the accumulated sum (float32 by default).
    """

    name = "brier_score"
    higher_is_better = False

    def _check(self, predictions, targets) -> None:
        C._check_probabilistic(predictions, targets)

    _batch = staticmethod(F._brier_update)


class StreamingNegativeLogLikelihood(SumCountMetric):
    """Streaming negative log-likelihood of logits: state (sum of NLLs, number seen).

    Args:
        dtype: Dtype of the accumulated sum (float32 by default).
    """

    name = "negative_log_likelihood"
    higher_is_better = False

    def _check(self, predictions, targets) -> None:
        F._check_logits(predictions, targets)

    _batch = staticmethod(F._nll_update)


# --------------------------------------------------------------------------- registry
_BINNED = {
    ExpectedCalibrationError,
    MaximumCalibrationError,
    StreamingExpectedCalibrationError,
    StreamingMaximumCalibrationError,
    StreamingReliabilityDiagram,
}


def _example(cls):
    settings = {"n_bins": 5} if cls in _BINNED else {}

    def run(p, t):
        metric = cls(**settings)
        if isinstance(metric, Metric):
            return metric(p, t)
        metric.update(predictions=p[:5], targets=t[:5])
        metric.update(predictions=p[5:], targets=t[5:])
        out = metric.compute()
        if cls is StreamingReliabilityDiagram:
            return out["confidence"], out["accuracy"], out["count"]
        return out[cls.name]

    logits = cls in (NegativeLogLikelihood, StreamingNegativeLogLikelihood)
    data = C._example_scores if logits else C._example_probabilities
    return lambda: (run, data(32))


for _cls in (ExpectedCalibrationError, MaximumCalibrationError, BrierScore, NegativeLogLikelihood):
    register(
        _cls.__name__,
        kind="metric",
        tier=0,
        domain="calibration",
        higher_is_better=_cls.higher_is_better,
        differentiable=_cls in (BrierScore, NegativeLogLikelihood),
        example=_example(_cls),
    )(_cls)
for _cls in (
    StreamingExpectedCalibrationError,
    StreamingMaximumCalibrationError,
    StreamingReliabilityDiagram,
    StreamingBrierScore,
    StreamingNegativeLogLikelihood,
):
    # reliability-diagram data are statistics, not a score with a direction
    _is_score = _cls is not StreamingReliabilityDiagram
    register(
        _cls.__name__,
        kind="stateful_metric" if _is_score else "statistic",
        tier=0,
        domain="calibration",
        higher_is_better=_cls.higher_is_better if _is_score else None,
        example=_example(_cls),
    )(_cls)
del _cls, _is_score
