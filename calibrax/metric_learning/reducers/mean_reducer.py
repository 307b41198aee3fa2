"""MeanReducer: the mean of the valid loss values."""

from __future__ import annotations

import dataclasses

import jax

from calibrax.metric_learning.reducers.base_reducer import BaseReducer

__all__ = ["MeanReducer"]


@dataclasses.dataclass(frozen=True)
class MeanReducer(BaseReducer):
    """Mean of the valid values (0 when there are none), as pytorch-metric-learning's MeanReducer."""

    def partial(self, values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._masked_sums(values, weights, weights > 0)
