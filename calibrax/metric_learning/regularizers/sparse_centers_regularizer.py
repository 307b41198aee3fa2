"""SparseCentersRegularizer: sub-centres of the same class close to each other (SoftTriple)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.reducers.base_reducer import safe_mean
from calibrax.metric_learning.regularizers.base_regularizer import BaseRegularizer
from calibrax.metric_learning.regularizers.base_regularizer import regularizer_example

__all__ = ["SparseCentersRegularizer"]


@register(
    "sparse_centers_regularizer",
    kind="regularizer",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=regularizer_example(
        lambda: SparseCentersRegularizer(num_classes=2, centers_per_class=3)
    ),
)
@dataclasses.dataclass(frozen=True)
class SparseCentersRegularizer(BaseRegularizer):
    r"""The SoftTriple loss's centre regularizer, as pytorch-metric-learning's
    ``SparseCentersRegularizer``.

    Rows are ``num_classes * centers_per_class`` centres, class ``c`` owning rows
    ``c * centers_per_class ... (c + 1) * centers_per_class - 1``. Over the pairs ``j < k`` of
    centres of the same class, with cosine similarity ``s``:

    .. math::
        R = \frac{\sum_{j<k} \sqrt{2 + \epsilon - \min(2 s_{jk}, 2)}}{2 \cdot \#\{j<k\}}

    (``ε`` the dtype's smallest normal number): the default reducer divides by twice the number of
    pairs (pytorch-metric-learning's ``DivisorReducer``); another reducer reduces the pair values.

    Args:
        num_classes: Number of classes.
        centers_per_class: Centres per class, > 1.
        reducer: Default: the sum divided by twice the number of pairs.

    Raises:
        ValueError: If a size is not a positive integer, or ``centers_per_class`` is 1.

    References:
        Qian et al., 2019, "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling",
        ICCV.
    """

    num_classes: int = 1
    centers_per_class: int = 2

    def __post_init__(self) -> None:
        checks.check_positive_int(self.num_classes, "num_classes")
        checks.check_positive_int(self.centers_per_class, "centers_per_class")
        if self.centers_per_class < 2:
            raise ValueError(
                f"expected `centers_per_class` to be at least 2, got {self.centers_per_class}"
            )

    def same_class_mask(self) -> np.ndarray:
        """(N, N) bool: pairs ``j < k`` of centres of the same class."""
        k = self.centers_per_class
        n = self.num_classes * k
        cls = np.arange(n) // k
        index = np.arange(n)
        return (cls[:, None] == cls[None, :]) & (index[:, None] < index[None, :])

    def compute_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        n = self.num_classes * self.centers_per_class
        checks.check_dim(x, 0, n, "x", "num_classes * centers_per_class rows")
        sim = CosineSimilarity()(x)
        mask = jnp.asarray(self.same_class_mask())
        tiny = jnp.finfo(x.dtype).tiny
        clamped = jnp.minimum(2.0 * sim, 2.0)
        values = jnp.sqrt(jnp.where(mask, 2.0 + tiny - clamped, jnp.ones_like(sim)))
        return jnp.where(mask, values, jnp.zeros_like(values)), mask.astype(x.dtype)

    def reduce(self, values: jax.Array, weights: jax.Array) -> jax.Array:
        if self.reducer is not None:
            return self.reducer(values, weights)
        return safe_mean(jnp.sum(values * weights), 2 * jnp.sum(weights))
