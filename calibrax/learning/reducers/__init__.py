"""Reducers: turn fixed-shape loss values and weights into a scalar."""

from calibrax.learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from calibrax.learning.reducers.base_reducer import BaseReducer
from calibrax.learning.reducers.mean_reducer import MeanReducer
from calibrax.learning.reducers.sum_reducer import SumReducer
from calibrax.learning.reducers.threshold_reducer import ThresholdReducer

__all__ = [
    "AvgNonZeroReducer",
    "BaseReducer",
    "MeanReducer",
    "SumReducer",
    "ThresholdReducer",
]
