"""Reducers: turn fixed-shape loss values and weights into a scalar."""

from calibrax.metric_learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from calibrax.metric_learning.reducers.base_reducer import BaseReducer
from calibrax.metric_learning.reducers.mean_reducer import MeanReducer
from calibrax.metric_learning.reducers.sum_reducer import SumReducer
from calibrax.metric_learning.reducers.threshold_reducer import ThresholdReducer

__all__ = [
    "AvgNonZeroReducer",
    "BaseReducer",
    "MeanReducer",
    "SumReducer",
    "ThresholdReducer",
]
