"""DivisorReducer: the sum of the loss values divided by a divisor the loss supplies."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.metric_learning.reducers.base_reducer import BaseReducer
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype
from calibrax.metric_learning.reducers.base_reducer import safe_mean

__all__ = ["DivisorReducer"]


@dataclasses.dataclass(frozen=True)
class DivisorReducer(BaseReducer):
    """``sum(values * weights) / divisor``, 0 when the divisor is 0, as pytorch-metric-learning's.

    In PML the loss puts a ``"divisor"`` in its loss dictionary (MarginLoss: the number of active
    pairs; ProxyAnchorLoss: the number of classes). Here the divisor is an argument,
    ``reducer(values, weights, divisor=d)``; without one it is the total weight (the count of
    valid values), where PML raises a ``KeyError``. calibrax's MarginLoss and ProxyAnchorLoss
    compute their PML divisor themselves. In block-wise reductions the partial count is the
    total weight and :meth:`finalize` divides by it.
    """

    def partial(self, values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._masked_sums(values, weights, weights > 0)

    def __call__(self, values: jax.Array, weights: jax.Array, divisor: Any = None) -> jax.Array:
        """``sum(values * weights) / divisor`` (``divisor`` default: the total weight).

        Raises:
            ValueError: If a concrete ``divisor`` is negative or not finite.
        """
        acc = accumulation_dtype(values.dtype)
        total, count = self.partial(values.astype(acc), jnp.asarray(weights).astype(acc))
        if divisor is None:
            return self.finalize(total, count).astype(values.dtype)
        if not isinstance(divisor, jax.core.Tracer):
            d = float(jnp.asarray(divisor))
            if not (d >= 0 and d != float("inf")):
                raise ValueError(f"expected `divisor` to be finite and >= 0, got {d}")
        return safe_mean(total, jnp.asarray(divisor).astype(acc)).astype(values.dtype)
