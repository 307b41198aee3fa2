"""DotProductSimilarity: the dot product between embeddings (a similarity: larger = closer)."""

from __future__ import annotations

import dataclasses

import jax

from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.base_distance import inner_products

__all__ = ["DotProductSimilarity"]


@dataclasses.dataclass(frozen=True)
class DotProductSimilarity(BaseDistance):
    """Dot-product similarity matrix, as pytorch-metric-learning's ``DotProductSimilarity``.

    ``is_inverted`` is True. As in pytorch-metric-learning the embeddings are L2-normalised by
    default (``normalize_embeddings=True``), which makes this the cosine similarity.

    Args:
        normalize_embeddings: L``p``-normalise each embedding first (default True).
        p: The norm's order used for normalisation (default 2).
        power: Exponent applied to each similarity (default 1).
    """

    is_inverted = True

    def compute_mat(self, query: jax.Array, ref: jax.Array, mode: str = "plain") -> jax.Array:
        return inner_products(query, ref, mode)

    def _apply_power(self, mat: jax.Array) -> jax.Array:
        # Similarities can be negative: a plain power, as torch's ``mat ** power``.
        return mat**self.power
