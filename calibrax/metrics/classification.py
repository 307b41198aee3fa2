"""Tier-0 classification metrics as ``MetricProtocol`` classes and streaming ``StatefulMetric``
classes.

Both kinds call the ``_update``/``_compute`` pairs of :mod:`calibrax.functional.classification`,
so they give the same numbers as the functions; inputs follow the prediction convention described
there. Precision, recall and F1 stream a fixed-shape confusion matrix. AUROC has no streaming class:
an exact AUROC needs every score, and a binned approximation would not be the AUROC.
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
from calibrax.functional import classification as F
from calibrax.metrics._accumulate import SumCountMetric

__all__ = [
    "AUROC",
    "Accuracy",
    "F1Score",
    "LogLoss",
    "Precision",
    "Recall",
    "StreamingAccuracy",
    "StreamingConfusionMatrix",
    "StreamingF1Score",
    "StreamingLogLoss",
    "StreamingPrecision",
    "StreamingRecall",
    "StreamingTopKAccuracy",
    "TopKAccuracy",
]


# --------------------------------------------------------------------------- MetricProtocol
class Accuracy(Metric):
    """Accuracy (see :func:`calibrax.functional.accuracy`).

    Args:
        threshold: Binary scores ``>= threshold`` predict class 1.
    """

    name = "accuracy"
    higher_is_better = True

    def __init__(self, *, threshold: float = 0.5) -> None:
        super().__init__(threshold=threshold)

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like :func:`calibrax.functional.accuracy` (same errors)."""
        F._check_predictions(predictions, targets, None)

    def _compute(self, predictions, targets, *, threshold):
        return F._ratio_compute(*F._accuracy_update(predictions, targets, threshold))


class TopKAccuracy(Metric):
    """Top-k accuracy (see :func:`calibrax.functional.top_k_accuracy`).

    Args:
        k: Number of top classes that count as a hit.

    Raises:
        ValueError: If ``k`` is not a positive integer.
    """

    name = "top_k_accuracy"
    higher_is_better = True

    def __init__(self, *, k: int = 1) -> None:
        checks.check_positive_int(k, "k")
        super().__init__(k=k)

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like :func:`calibrax.functional.top_k_accuracy` (same errors)."""
        checks.check_k(self.config["k"], F._check_scores(predictions, targets))

    def _compute(self, predictions, targets, *, k):
        return F._ratio_compute(*F._top_k_update(predictions, targets, k))


class _PRFMetric(Metric):
    _which: str

    def __init__(
        self, *, num_classes: int, average: str | None = "macro", threshold: float = 0.5
    ) -> None:
        F._check_num_classes(num_classes)
        F._check_average(average)
        super().__init__(num_classes=num_classes, average=average, threshold=threshold)

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like the functional metric (same errors)."""
        F._check_prf(predictions, targets, self.config["num_classes"], self.config["average"])

    def _compute(self, predictions, targets, *, num_classes, average, threshold):
        cm = F._confusion_matrix_update(predictions, targets, num_classes, threshold)
        return F._prf_compute(cm, self._which, average)


class Precision(_PRFMetric):
    """Precision (see :func:`calibrax.functional.precision`).

    Args:
        num_classes: Number of classes (at least 2).
        average: "binary", "micro", "macro", "weighted" or None.
        threshold: Binary scores ``>= threshold`` predict class 1.

    Raises:
        ValueError: If ``num_classes`` or ``average`` is invalid.
    """

    name = "precision"
    higher_is_better = True
    _which = "precision"


class Recall(_PRFMetric):
    """Recall (see :func:`calibrax.functional.recall`).

    Args:
        num_classes: Number of classes (at least 2).
        average: "binary", "micro", "macro", "weighted" or None.
        threshold: Binary scores ``>= threshold`` predict class 1.

    Raises:
        ValueError: If ``num_classes`` or ``average`` is invalid.
    """

    name = "recall"
    higher_is_better = True
    _which = "recall"


class F1Score(_PRFMetric):
    """F1 score (see :func:`calibrax.functional.f1_score`).

    Args:
        num_classes: Number of classes (at least 2).
        average: "binary", "micro", "macro", "weighted" or None.
        threshold: Binary scores ``>= threshold`` predict class 1.

    Raises:
        ValueError: If ``num_classes`` or ``average`` is invalid.
    """

    name = "f1_score"
    higher_is_better = True
    _which = "f1"


class AUROC(Metric):
    """Exact area under the ROC curve (see :func:`calibrax.functional.auroc`).

    Args:
        average: "macro" or "weighted" one-vs-rest averaging for class scores.

    Raises:
        ValueError: If ``average`` is invalid.
    """

    name = "auroc"
    higher_is_better = True

    def __init__(self, *, average: str = "macro") -> None:
        F._check_average(average, F.AUROC_AVERAGES)
        super().__init__(average=average)

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like :func:`calibrax.functional.auroc` (same errors)."""
        checks.check_floating(predictions, "predictions")
        F._check_predictions(predictions, targets, None)
        F._check_two_classes_present(targets)

    def _compute(self, predictions, targets, *, average):
        return F._auroc_compute(predictions, targets, average)


class LogLoss(Metric):
    """Log loss of probabilities (see :func:`calibrax.functional.log_loss`)."""

    name = "log_loss"
    higher_is_better = False

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate like :func:`calibrax.functional.log_loss` (same errors)."""
        F._check_probabilistic(predictions, targets)

    def _compute(self, predictions, targets):
        return F._mean_compute(*F._log_loss_update(predictions, targets))


# --------------------------------------------------------------------------- streaming
class StreamingAccuracy(SumCountMetric):
    """Streaming accuracy: state (weight of the correct rows, weight seen, rows seen).

    Without ``sample_weight`` the weights are counts, exact up to 2**24 samples in float32 (pass
    ``dtype=jnp.float64``, with x64 on, beyond that); ``count`` is always an exact int32.

    Args:
        threshold: Binary scores ``>= threshold`` predict class 1.
        dtype: Dtype of the accumulated weights (float32 by default).
    """

    name = "accuracy"
    higher_is_better = True

    def __init__(self, *, threshold: float = 0.5, dtype: Any = jnp.float32) -> None:
        super().__init__(dtype=dtype)
        self.threshold = threshold

    def _check(self, predictions, targets) -> None:
        F._check_predictions(predictions, targets, None)

    def _batch(self, predictions, targets):
        return F._accuracy_update(predictions, targets, self.threshold)

    _finish = staticmethod(F._ratio_compute)


class StreamingTopKAccuracy(SumCountMetric):
    """Streaming top-k accuracy from class scores: state (weight of the hits, weight seen, rows
    seen), exact counts up to 2**24 samples in float32 (see :class:`StreamingAccuracy`).

    Args:
        k: Number of top classes that count as a hit.
        dtype: Dtype of the accumulated weights (float32 by default).

    Raises:
        ValueError: If ``k`` is not a positive integer (at construction) or exceeds the number of
            classes (at ``update``).
    """

    name = "top_k_accuracy"
    higher_is_better = True

    def __init__(self, *, k: int = 1, dtype: Any = jnp.float32) -> None:
        checks.check_positive_int(k, "k")
        super().__init__(dtype=dtype)
        self.k = k

    def _check(self, predictions, targets) -> None:
        checks.check_k(self.k, F._check_scores(predictions, targets))

    def _batch(self, predictions, targets):
        return F._top_k_update(predictions, targets, self.k)

    _finish = staticmethod(F._ratio_compute)


class StreamingLogLoss(SumCountMetric):
    """Streaming log loss of probabilities: state (sum of losses, number seen).

    Args:
        dtype: Dtype of the accumulated sum (float32 by default).
    """

    name = "log_loss"
    higher_is_better = False

    def _check(self, predictions, targets) -> None:
        F._check_probabilistic(predictions, targets)

    _batch = staticmethod(F._log_loss_update)


class StreamingConfusionMatrix(StatefulMetric):
    """Streaming confusion matrix, an int32 (num_classes, num_classes) state.

    Rows are targets, columns predictions. Additive, so ``merge`` and ``reduce`` add.

    Args:
        num_classes: Number of classes (at least 2).
        threshold: Binary scores ``>= threshold`` predict class 1.

    Raises:
        ValueError: If ``num_classes`` is invalid.
    """

    name = "confusion_matrix"

    def __init__(self, *, num_classes: int, threshold: float = 0.5) -> None:
        F._check_num_classes(num_classes)
        self.num_classes = num_classes
        self.threshold = threshold
        self.matrix = MetricState(jnp.zeros((num_classes, num_classes), jnp.int32))

    def _check(self, predictions, targets) -> None:
        F._check_predictions(predictions, targets, self.num_classes)

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
            predictions: Scores (batch, num_classes), binary scores (batch,) or labels (batch,).
            targets: Integer targets, (batch,).
            mask: Optional ``(batch,)`` bool / 0-1 vector; masked rows change nothing.
            **kwargs: Ignored (other metrics' inputs in ``nnx.MultiMetric``).
        """
        del kwargs
        rows = self._rows(predictions, mask)
        if rows is None:
            return
        self._check(*rows.select(predictions, targets))
        # A masked row gets the out-of-range target num_classes, which the scatter drops.
        targets = rows.where(jnp.asarray(targets).astype(jnp.int32), self.num_classes)
        self.matrix[...] = self.matrix[...] + F._confusion_matrix_update(
            predictions, targets, self.num_classes, self.threshold
        )

    def _value(self) -> jax.Array:
        return self.matrix[...]

    def compute(self) -> dict[str, jax.Array]:
        """``{name: value}``; raises eagerly before any sample (unchecked under jit)."""
        checks.check_accumulated(jnp.sum(self.matrix[...]), 1)
        return {self.name: self._value()}


class _StreamingPRF(StreamingConfusionMatrix):
    _which: str

    def __init__(
        self, *, num_classes: int, average: str | None = "macro", threshold: float = 0.5
    ) -> None:
        super().__init__(num_classes=num_classes, threshold=threshold)
        F._check_average(average)
        if average == "binary" and num_classes != 2:
            raise ValueError(
                f"expected `num_classes` to be 2 with average='binary', got {num_classes}"
            )
        self.average = average

    def _value(self) -> jax.Array:
        return F._prf_compute(self.matrix[...], self._which, self.average)


class StreamingPrecision(_StreamingPRF):
    """Streaming precision from a confusion-matrix state
    (see :func:`calibrax.functional.precision` for ``average``).

    Args:
        num_classes: Number of classes (at least 2).
        average: "binary", "micro", "macro", "weighted" or None.
        threshold: Binary scores ``>= threshold`` predict class 1.

    Raises:
        ValueError: If ``num_classes`` or ``average`` is invalid.
    """

    name = "precision"
    higher_is_better = True
    _which = "precision"


class StreamingRecall(_StreamingPRF):
    """Streaming recall from a confusion-matrix state
    (see :func:`calibrax.functional.recall` for ``average``).

    Args:
        num_classes: Number of classes (at least 2).
        average: "binary", "micro", "macro", "weighted" or None.
        threshold: Binary scores ``>= threshold`` predict class 1.

    Raises:
        ValueError: If ``num_classes`` or ``average`` is invalid.
    """

    name = "recall"
    higher_is_better = True
    _which = "recall"


class StreamingF1Score(_StreamingPRF):
    """Streaming F1 score from a confusion-matrix state
    (see :func:`calibrax.functional.f1_score` for ``average``).

    Args:
        num_classes: Number of classes (at least 2).
        average: "binary", "micro", "macro", "weighted" or None.
        threshold: Binary scores ``>= threshold`` predict class 1.

    Raises:
        ValueError: If ``num_classes`` or ``average`` is invalid.
    """

    name = "f1_score"
    higher_is_better = True
    _which = "f1"


# --------------------------------------------------------------------------- registry
_SETTINGS: dict[type, dict[str, Any]] = {
    TopKAccuracy: {"k": 2},
    Precision: {"num_classes": 4},
    Recall: {"num_classes": 4},
    F1Score: {"num_classes": 4},
    StreamingTopKAccuracy: {"k": 2},
    StreamingConfusionMatrix: {"num_classes": 4},
    StreamingPrecision: {"num_classes": 4},
    StreamingRecall: {"num_classes": 4},
    StreamingF1Score: {"num_classes": 4},
}
_PROBABILISTIC = (LogLoss, StreamingLogLoss)


def _example(cls):
    settings = _SETTINGS.get(cls, {})

    def run(p, t):
        metric = cls(**settings)
        if isinstance(metric, Metric):
            return metric(p, t)
        metric.update(predictions=p[:5], targets=t[:5])
        metric.update(predictions=p[5:], targets=t[5:])
        return metric.compute()[cls.name]

    data = F._example_probabilities if cls in _PROBABILISTIC else F._example_scores
    return lambda: (run, data())


for _cls in (Accuracy, TopKAccuracy, Precision, Recall, F1Score, AUROC, LogLoss):
    register(
        _cls.__name__,
        kind="metric",
        tier=0,
        domain="classification",
        higher_is_better=_cls.higher_is_better,
        differentiable=_cls is LogLoss,
        example=_example(_cls),
    )(_cls)
for _cls in (
    StreamingAccuracy,
    StreamingTopKAccuracy,
    StreamingLogLoss,
    StreamingConfusionMatrix,
    StreamingPrecision,
    StreamingRecall,
    StreamingF1Score,
):
    # a confusion matrix is a statistic, not a score with a direction
    _is_score = _cls is not StreamingConfusionMatrix
    register(
        _cls.__name__,
        kind="stateful_metric" if _is_score else "statistic",
        tier=0,
        domain="classification",
        higher_is_better=_cls.higher_is_better if _is_score else None,
        example=_example(_cls),
    )(_cls)
del _cls, _is_score
