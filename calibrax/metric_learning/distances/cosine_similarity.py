"""CosineSimilarity: the cosine of the angle between embeddings (larger = closer)."""

from __future__ import annotations

import dataclasses

from calibrax.metric_learning.distances.dot_product_similarity import DotProductSimilarity

__all__ = ["CosineSimilarity"]


@dataclasses.dataclass(frozen=True)
class CosineSimilarity(DotProductSimilarity):
    """Cosine-similarity matrix, as pytorch-metric-learning's ``CosineSimilarity``.

    A :class:`DotProductSimilarity` whose embeddings are always L2-normalised.

    Args:
        power: Exponent applied to each similarity (default 1).

    Example:
        >>> import jax.numpy as jnp
        >>> from calibrax.metric_learning import CosineSimilarity
        >>> x = jnp.array([[1.0, 0.0], [1.0, 1.0]])
        >>> print(CosineSimilarity()(x).round(4))
        [[1.     0.7071]
         [0.7071 1.    ]]
    """

    normalize_embeddings: bool = dataclasses.field(default=True, init=False)
    p: float = dataclasses.field(default=2, init=False)
