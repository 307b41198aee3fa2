"""CenterInvariantRegularizer: class weights of equal norm."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from calibrax.core.registry import register
from calibrax.metric_learning.regularizers.base_regularizer import BaseRegularizer
from calibrax.metric_learning.regularizers.base_regularizer import regularizer_example

__all__ = ["CenterInvariantRegularizer"]


@register(
    "center_invariant_regularizer",
    kind="regularizer",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=regularizer_example(lambda: CenterInvariantRegularizer()),
)
@dataclasses.dataclass(frozen=True)
class CenterInvariantRegularizer(BaseRegularizer):
    r"""Penalises the spread of the squared row norms, as pytorch-metric-learning's.

    .. math::
        R = \frac{1}{N} \sum_i \frac{\big(\lVert w_i \rVert^2 - \overline{\lVert w \rVert^2}\big)^2}{4}

    pytorch-metric-learning only allows its default distance here (``LpDistance(power=1,
    normalize_embeddings=False)``, i.e. the plain Euclidean norm), so this class has no
    ``distance`` argument.

    References:
        Wu et al., 2019, "Deep Face Recognition with Center Invariant Loss".
    """

    def compute_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        squared = jnp.sum(x * x, axis=1)
        deviation = squared - jnp.mean(squared)
        values = deviation**2 / 4
        return values, jnp.ones_like(values)
