"""AvgNonZeroReducer: the mean of the valid loss values that are greater than 0."""

from __future__ import annotations

import dataclasses

from calibrax.metric_learning.reducers.threshold_reducer import ThresholdReducer

__all__ = ["AvgNonZeroReducer"]


@dataclasses.dataclass(frozen=True)
class AvgNonZeroReducer(ThresholdReducer):
    """Mean of the valid values above 0 (0 when none are), as pytorch-metric-learning's.

    This is a :class:`ThresholdReducer` with ``low=0`` and no upper bound.
    """

    low: float | None = dataclasses.field(default=0.0, init=False)
    high: float | None = dataclasses.field(default=None, init=False)
