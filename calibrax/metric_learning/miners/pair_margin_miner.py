"""PairMarginMiner: positive pairs farther than ``pos_margin``, negatives closer than
``neg_margin``."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.metric_learning.base import ref_embeddings
from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import PairMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["PairMarginMiner"]


@dataclasses.dataclass(frozen=True)
class PairMarginMiner(BaseMiner):
    """The pairs that violate their margins, as pytorch-metric-learning's ``PairMarginMiner``.

    Positive pairs with ``d > pos_margin`` and negative pairs with ``d < neg_margin`` (for
    similarities: ``s < pos_margin`` and ``s > neg_margin``).

    Args:
        pos_margin: Default 0.2.
        neg_margin: Default 0.8.
        distance: Default :class:`~calibrax.metric_learning.LpDistance`.
    """

    pos_margin: float = 0.2
    neg_margin: float = 0.8

    supports_ref = True

    def mine(self, embeddings: jax.Array, labels: jax.Array, ref: Any = None) -> PairMask:
        distance = self.dist
        mat = distance(embeddings, None if ref is None else ref_embeddings(embeddings, ref))
        pos, neg = label_masks(labels, ref)
        if distance.is_inverted:
            pos = pos & (mat < self.pos_margin)
            neg = neg & (mat > self.neg_margin)
        else:
            pos = pos & (mat > self.pos_margin)
            neg = neg & (mat < self.neg_margin)
        return PairMask(pos=pos.astype(jnp.int32), neg=neg.astype(jnp.int32))
