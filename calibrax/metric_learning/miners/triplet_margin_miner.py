"""TripletMarginMiner: the triplets whose margin is within (or, for "easy", beyond) ``margin``."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.metric_learning.base import ref_embeddings
from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import TripletMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["TripletMarginMiner"]

_TYPES = ("all", "hard", "semihard", "easy")


@dataclasses.dataclass(frozen=True)
class TripletMarginMiner(BaseMiner):
    """Mines triplets by their margin ``m = d(a, n) - d(a, p)`` (``s(a, p) - s(a, n)`` for
    similarities), as pytorch-metric-learning's ``TripletMarginMiner``.

    - ``"all"``: ``m <= margin`` (the triplets that violate the margin),
    - ``"hard"``: ``m <= margin`` and ``m <= 0`` (the negative is closer than the positive),
    - ``"semihard"``: ``0 < m <= margin``,
    - ``"easy"``: ``m > margin``.

    Returns a :class:`~calibrax.metric_learning.TripletMask` of O(B²) size that encodes the rule, not a
    (B, B, B) array.

    Args:
        margin: The margin (default 0.2).
        type_of_triplets: One of "all", "hard", "semihard", "easy" (default "all").
        distance: Default :class:`~calibrax.metric_learning.LpDistance`.

    Raises:
        ValueError: If ``type_of_triplets`` is not a known type.
    """

    margin: float = 0.2
    type_of_triplets: str = "all"

    def __post_init__(self) -> None:
        checks.check_choice(self.type_of_triplets, _TYPES, "type_of_triplets")

    supports_ref = True

    def mine(self, embeddings: jax.Array, labels: jax.Array, ref: Any = None) -> TripletMask:
        distance = self.dist
        mat = distance(embeddings, None if ref is None else ref_embeddings(embeddings, ref))
        score = -mat if distance.is_inverted else mat
        inf = jnp.inf
        low, high = {
            "all": (-inf, self.margin),
            "hard": (-inf, min(self.margin, 0.0)),
            "semihard": (0.0, self.margin),
            "easy": (self.margin, inf),
        }[self.type_of_triplets]
        pos, neg = label_masks(labels, ref)
        return TripletMask(
            pos=pos,
            neg=neg,
            score=score,
            low=jnp.asarray(low, mat.dtype),
            high=jnp.asarray(high, mat.dtype),
            bounded=True,
        )
