"""HDCMiner: the hardest fraction of the positive pairs and of the negative pairs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import PairMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["HDCMiner"]


def _keep_top(values: jax.Array, valid: jax.Array, fraction: float, largest: bool) -> jax.Array:
    """Among the ``valid`` entries, the ``ceil(fraction * count)`` largest (or smallest) ones;
    ties to the lower row-major index."""
    flat_v = values.reshape(-1)
    flat_ok = valid.reshape(-1)
    key = -flat_v if largest else flat_v
    key = jnp.where(flat_ok, key, jnp.inf)
    order = jnp.argsort(key, stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    count = jnp.sum(flat_ok, dtype=jnp.int32)
    k = jnp.ceil(jnp.asarray(fraction, values.dtype) * count.astype(values.dtype))
    return (flat_ok & (rank.astype(values.dtype) < k)).reshape(values.shape)


@dataclasses.dataclass(frozen=True)
class HDCMiner(BaseMiner):
    """Pairs of Hard-Aware Deeply Cascaded embedding, as pytorch-metric-learning's ``HDCMiner``.

    Keeps the ``ceil(filter_percentage * P)`` hardest of the ``P`` positive pairs (largest
    distance / smallest similarity) and likewise of the negative pairs (smallest distance /
    largest similarity). Ties at the cut go to the lower (anchor, other) index in row-major order
    (PML's ``torch.topk`` leaves tie order unspecified). Returns a
    :class:`~calibrax.metric_learning.PairMask`. PML's ``set_idx_externally`` (filtering another
    miner's pairs) is not provided.

    Args:
        filter_percentage: Fraction kept, in (0, 1] (default 0.5).
        distance: Default :class:`~calibrax.metric_learning.LpDistance`.

    Raises:
        ValueError: If ``filter_percentage`` is not in (0, 1].

    References:
        Yuan et al., 2017, "Hard-Aware Deeply Cascaded Embedding", arXiv:1611.05720.
    """

    filter_percentage: float = 0.5

    def __post_init__(self) -> None:
        f = self.filter_percentage
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ValueError(f"expected `filter_percentage` to be in (0, 1], got {f!r}")

    def mine(self, embeddings: jax.Array, labels: jax.Array) -> PairMask:
        mat = self.dist(embeddings)
        inverted = self.dist.is_inverted
        pos, neg = label_masks(labels)
        f = float(self.filter_percentage)
        pos = _keep_top(mat, pos, f, largest=not inverted)
        neg = _keep_top(mat, neg, f, largest=inverted)
        return PairMask(pos=pos.astype(jnp.int32), neg=neg.astype(jnp.int32))
