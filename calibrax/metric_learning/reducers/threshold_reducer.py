"""ThresholdReducer: the mean of the valid loss values strictly between ``low`` and ``high``."""

from __future__ import annotations

import dataclasses

import jax

from calibrax.metric_learning.reducers.base_reducer import BaseReducer

__all__ = ["ThresholdReducer"]


@dataclasses.dataclass(frozen=True)
class ThresholdReducer(BaseReducer):
    """Mean of the valid values with ``low < value < high`` (0 when none pass).

    As pytorch-metric-learning's ThresholdReducer; either bound may be ``None`` (no bound), not
    both.

    Args:
        low: Values must be greater than this.
        high: Values must be less than this.

    Raises:
        ValueError: If both bounds are ``None``, or ``low >= high``.
    """

    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ValueError("expected at least one of `low` and `high` to be set, got neither")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(
                f"expected `low` to be less than `high`, got low={self.low} and high={self.high}"
            )

    def partial(self, values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        keep = weights > 0
        if self.low is not None:
            keep = keep & (values > self.low)
        if self.high is not None:
            keep = keep & (values < self.high)
        return self._masked_sums(values, weights, keep)
