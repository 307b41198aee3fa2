"""BatchHardMiner: for each anchor, its hardest positive and hardest negative."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.metric_learning.base import ref_embeddings
from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import TripletMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["BatchHardMiner"]


@dataclasses.dataclass(frozen=True)
class BatchHardMiner(BaseMiner):
    """One triplet per anchor: the farthest positive and the closest negative.

    As pytorch-metric-learning's ``BatchHardMiner``: anchors without a positive or without a
    negative give no triplet; ties go to the lowest index. Returns a
    :class:`~calibrax.metric_learning.TripletMask` with at most one positive and one negative per anchor
    row.

    Args:
        distance: Default :class:`~calibrax.metric_learning.LpDistance`.

    References:
        Hermans et al., 2017, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv:1703.07737.
    """

    supports_ref = True

    def mine(self, embeddings: jax.Array, labels: jax.Array, ref: Any = None) -> TripletMask:
        distance = self.dist
        mat = distance(embeddings, None if ref is None else ref_embeddings(embeddings, ref))
        # Orient so that larger = farther apart.
        far = -mat if distance.is_inverted else mat
        pos, neg = label_masks(labels, ref)
        keep = jnp.any(pos, axis=1) & jnp.any(neg, axis=1)
        big = jnp.asarray(jnp.inf, far.dtype)
        hardest_p = jnp.argmax(jnp.where(pos, far, -big), axis=1)
        hardest_n = jnp.argmin(jnp.where(neg, far, big), axis=1)
        width = mat.shape[1]
        one_p = jax.nn.one_hot(hardest_p, width, dtype=bool) & keep[:, None]
        one_n = jax.nn.one_hot(hardest_n, width, dtype=bool) & keep[:, None]
        return TripletMask(
            pos=one_p,
            neg=one_n,
            score=jnp.zeros(mat.shape, mat.dtype),
            low=jnp.asarray(-jnp.inf, mat.dtype),
            high=jnp.asarray(jnp.inf, mat.dtype),
            bounded=False,
        )
