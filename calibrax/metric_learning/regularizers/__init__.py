"""Regularizers of embeddings and of the class weights of class-weight losses."""

from calibrax.metric_learning.regularizers.base_regularizer import BaseRegularizer
from calibrax.metric_learning.regularizers.center_invariant_regularizer import (
    CenterInvariantRegularizer,
)
from calibrax.metric_learning.regularizers.lp_regularizer import LpRegularizer
from calibrax.metric_learning.regularizers.regular_face_regularizer import RegularFaceRegularizer
from calibrax.metric_learning.regularizers.sparse_centers_regularizer import (
    SparseCentersRegularizer,
)
from calibrax.metric_learning.regularizers.zero_mean_regularizer import ZeroMeanRegularizer

__all__ = [
    "BaseRegularizer",
    "CenterInvariantRegularizer",
    "LpRegularizer",
    "RegularFaceRegularizer",
    "SparseCentersRegularizer",
    "ZeroMeanRegularizer",
]
