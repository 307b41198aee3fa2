"""Per-sample weights from a miner output, as pytorch-metric-learning's ``convert_to_weights``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from calibrax.metric_learning.tuples import PairMask

__all__ = ["sample_weights"]


def sample_weights(indices_tuple: Any, batch: int, dtype: Any) -> jax.Array:
    """(batch,) weights: how often each sample appears in the mined tuples, over the largest count.

    pytorch-metric-learning concatenates the index arrays of the tuple (``(a1, p, a2, n)`` for
    pairs, ``(a, p, n)`` for triplets) and counts each sample; samples never mined weigh 0. No
    miner, or a miner that selected nothing, gives weight 1 everywhere.
    """
    if indices_tuple is None:
        return jnp.ones((batch,), dtype)
    if isinstance(indices_tuple, PairMask):
        pos = indices_tuple.pos.astype(jnp.int32)
        neg = indices_tuple.neg.astype(jnp.int32)
        # a1 and a2 both list the anchors.
        anchors = jnp.sum(pos, axis=1) + jnp.sum(neg, axis=1)
    else:
        pos, neg = indices_tuple.pair_counts()
        # One anchor entry per triplet.
        anchors = jnp.sum(pos, axis=1)
    counts = anchors + jnp.sum(pos, axis=0) + jnp.sum(neg, axis=0)
    top = jnp.max(counts)
    weights = counts.astype(dtype) / jnp.maximum(top, 1).astype(dtype)
    return jnp.where(top > 0, weights, jnp.ones_like(weights))
