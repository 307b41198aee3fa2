"""RegularFaceRegularizer: push each class weight away from its nearest other class weight."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.regularizers.base_regularizer import BaseRegularizer
from calibrax.metric_learning.regularizers.base_regularizer import regularizer_example

__all__ = ["RegularFaceRegularizer"]


@register(
    "regular_face_regularizer",
    kind="regularizer",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=regularizer_example(lambda: RegularFaceRegularizer()),
)
@dataclasses.dataclass(frozen=True)
class RegularFaceRegularizer(BaseRegularizer):
    r"""Mean over the rows of the similarity to the most similar other row, as
    pytorch-metric-learning's ``RegularFaceRegularizer``.

    .. math::
        R = \frac{1}{N} \sum_i \max_{j \ne i} s(w_i, w_j)

    The nearest row is chosen without gradient (the lowest index on ties), then the gradient
    flows through that similarity, as in pytorch-metric-learning. A single row has no other row:
    its value is the dtype's most negative number in pytorch-metric-learning's masked similarity
    matrix; here it is 0.

    Args:
        distance: A similarity (``is_inverted``), default
            :class:`~calibrax.metric_learning.CosineSimilarity`.
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    Raises:
        ValueError: If ``distance`` is not a similarity.

    References:
        Zhao et al., 2019, "RegularFace: Deep Face Recognition via Exclusive Regularization",
        CVPR.
    """

    distance: BaseDistance | None = None

    def __post_init__(self) -> None:
        if self.distance is not None and not self.distance.is_inverted:
            raise ValueError(
                "expected `distance` to be a similarity (is_inverted), "
                f"got {type(self.distance).__name__}"
            )

    def compute_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        distance = self.distance if self.distance is not None else CosineSimilarity()
        sim = distance(x)
        n = x.shape[0]
        off = ~jnp.eye(n, dtype=bool)
        masked = jnp.where(off, jax.lax.stop_gradient(sim), -jnp.inf)
        nearest = jnp.argmax(masked, axis=1)
        values = jnp.take_along_axis(sim, nearest[:, None], axis=1)[:, 0]
        values = jnp.where(n > 1, values, jnp.zeros_like(values))
        return values, jnp.ones_like(values)
