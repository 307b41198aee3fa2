"""ZeroMeanRegularizer: rows whose entries sum to zero."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import safe_abs
from calibrax.metric_learning.regularizers.base_regularizer import BaseRegularizer
from calibrax.metric_learning.regularizers.base_regularizer import regularizer_example

__all__ = ["ZeroMeanRegularizer"]


@register(
    "zero_mean_regularizer",
    kind="regularizer",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=regularizer_example(lambda: ZeroMeanRegularizer()),
)
@dataclasses.dataclass(frozen=True)
class ZeroMeanRegularizer(BaseRegularizer):
    r"""Mean of ``|sum_j x_ij|`` over the rows, as pytorch-metric-learning's
    ``ZeroMeanRegularizer`` (the gradient of ``|.|`` at 0 is 0, as torch's).

    References:
        Zhang et al., 2020, "Learning Discriminative Features with Multiple Granularities"
        (zero-mean regularization of embeddings); pytorch-metric-learning 2.9.
    """

    def compute_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        values = safe_abs(jnp.sum(x, axis=1))
        return values, jnp.ones_like(values)
