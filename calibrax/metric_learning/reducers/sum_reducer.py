"""SumReducer: the sum of the valid loss values."""

from __future__ import annotations

import dataclasses

import jax

from calibrax.metric_learning.reducers.base_reducer import BaseReducer

__all__ = ["SumReducer"]


@dataclasses.dataclass(frozen=True)
class SumReducer(BaseReducer):
    """Sum of the valid values, as pytorch-metric-learning's SumReducer."""

    def partial(self, values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._masked_sums(values, weights, weights > 0)

    def finalize(self, total: jax.Array, count: jax.Array) -> jax.Array:
        return total
