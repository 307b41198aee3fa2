"""Reducers: turn fixed-shape loss values and weights into a scalar."""

from calibrax.metric_learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from calibrax.metric_learning.reducers.base_reducer import BaseReducer
from calibrax.metric_learning.reducers.class_weighted_reducer import ClassWeightedReducer
from calibrax.metric_learning.reducers.divisor_reducer import DivisorReducer
from calibrax.metric_learning.reducers.do_nothing_reducer import DoNothingReducer
from calibrax.metric_learning.reducers.mean_reducer import MeanReducer
from calibrax.metric_learning.reducers.multiple_reducers import MultipleReducers
from calibrax.metric_learning.reducers.per_anchor_reducer import PerAnchorReducer
from calibrax.metric_learning.reducers.sum_reducer import SumReducer
from calibrax.metric_learning.reducers.threshold_reducer import ThresholdReducer

__all__ = [
    "AvgNonZeroReducer",
    "BaseReducer",
    "ClassWeightedReducer",
    "DivisorReducer",
    "DoNothingReducer",
    "MeanReducer",
    "MultipleReducers",
    "PerAnchorReducer",
    "SumReducer",
    "ThresholdReducer",
]
