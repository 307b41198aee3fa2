"""MultiSimilarityMiner: pairs that are hard relative to the anchor's hardest opposite pair."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.metric_learning.base import ref_embeddings
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import PairMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["MultiSimilarityMiner"]


@dataclasses.dataclass(frozen=True)
class MultiSimilarityMiner(BaseMiner):
    """Pair mining of the multi-similarity loss, as pytorch-metric-learning's.

    With a similarity ``s``: a positive pair ``(a, p)`` is kept if ``s(a, p) - epsilon`` is below
    the anchor's largest negative similarity, a negative pair ``(a, n)`` if ``s(a, n) + epsilon``
    is above the anchor's smallest positive similarity (mirrored for distances). If the batch has
    no positive pair or no negative pair, nothing is mined.

    Args:
        epsilon: Default 0.1.
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity`.

    References:
        Wang et al., 2019, "Multi-Similarity Loss with General Pair Weighting for Deep Metric
        Learning", arXiv:1904.06627.
    """

    epsilon: float = 0.1

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, as in pytorch-metric-learning."""
        return CosineSimilarity()

    supports_ref = True

    def mine(self, embeddings: jax.Array, labels: jax.Array, ref: Any = None) -> PairMask:
        distance = self.dist
        mat = distance(embeddings, None if ref is None else ref_embeddings(embeddings, ref))
        pos, neg = label_masks(labels, ref)
        # Rows without a negative (positive) mine no positive (negative): comparisons with ±inf.
        if distance.is_inverted:
            max_neg = jnp.max(mat, axis=1, where=neg, initial=-jnp.inf, keepdims=True)
            min_pos = jnp.min(mat, axis=1, where=pos, initial=jnp.inf, keepdims=True)
            hard_pos = pos & (mat - self.epsilon < max_neg)
            hard_neg = neg & (mat + self.epsilon > min_pos)
        else:
            min_neg = jnp.min(mat, axis=1, where=neg, initial=jnp.inf, keepdims=True)
            max_pos = jnp.max(mat, axis=1, where=pos, initial=-jnp.inf, keepdims=True)
            hard_pos = pos & (mat + self.epsilon > min_neg)
            hard_neg = neg & (mat - self.epsilon < max_pos)
        any_pairs = jnp.any(pos) & jnp.any(neg)
        return PairMask(
            pos=(hard_pos & any_pairs).astype(jnp.int32),
            neg=(hard_neg & any_pairs).astype(jnp.int32),
        )
