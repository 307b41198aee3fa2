"""EmbeddingsAlreadyPackagedAsTriplets: the batch is (anchor, positive, negative) triples."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import TripletMask

__all__ = ["EmbeddingsAlreadyPackagedAsTriplets"]


@dataclasses.dataclass(frozen=True)
class EmbeddingsAlreadyPackagedAsTriplets(BaseMiner):
    """Triplets ``(3i, 3i + 1, 3i + 2)``, as pytorch-metric-learning's miner of the same name.

    The labels are ignored (the caller packed the triplets). Returns a
    :class:`~calibrax.metric_learning.TripletMask` with one positive and one negative per anchor
    row.

    Difference from PML: a batch size that is not a multiple of 3 raises here (PML returns index
    tensors of different lengths, which the loss then fails on).

    Raises:
        ValueError: If the batch size is not a multiple of 3.
    """

    def mine(self, embeddings: jax.Array, labels: jax.Array) -> TripletMask:
        batch = embeddings.shape[0]
        if batch % 3:
            raise ValueError(
                f"expected the batch size to be a multiple of 3 (anchor, positive, negative), "
                f"got {batch}"
            )
        index = jnp.arange(batch)
        anchor = (index % 3 == 0)[:, None]
        pos = anchor & (index[None, :] == index[:, None] + 1)
        neg = anchor & (index[None, :] == index[:, None] + 2)
        dtype = embeddings.dtype
        return TripletMask(
            pos=pos,
            neg=neg,
            score=jnp.zeros((batch, batch), dtype),
            low=jnp.asarray(-jnp.inf, dtype),
            high=jnp.asarray(jnp.inf, dtype),
            bounded=False,
        )
