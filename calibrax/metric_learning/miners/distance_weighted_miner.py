"""DistanceWeightedMiner: negatives sampled with weights inverse to the density of distances."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from calibrax.metric_learning.base import validate_embeddings_and_labels
from calibrax.metric_learning.miners._distance_checks import require_unit_l2
from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import TripletMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["DistanceWeightedMiner", "SampledTripletMask"]


@struct.dataclass
class SampledTripletMask(TripletMask):
    """A :class:`~calibrax.metric_learning.TripletMask` of sampled triplets, with repeats.

    Anchor ``a`` has draws ``(p_draw[a, j], n_draw[a, j])`` for ``j`` with ``drawn[a, j]``; a
    triplet drawn twice counts twice (PML keeps duplicate triplets). ``anchor_slice`` gives the
    (positive, negative) counts of one anchor.
    """

    p_draw: Any = None
    n_draw: Any = None
    drawn: Any = None

    def anchor_slice(self, a: jax.Array) -> jax.Array:
        batch = self.pos.shape[0]
        counts = jnp.zeros((batch, batch), jnp.int32)
        return counts.at[self.p_draw[a], self.n_draw[a]].add(self.drawn[a].astype(jnp.int32))

    def to_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, p, n)`` of every draw (repeats kept), anchors in order."""
        drawn = np.asarray(self.drawn)
        a, j = np.nonzero(drawn)
        return a, np.asarray(self.p_draw)[a, j], np.asarray(self.n_draw)[a, j]


def _inverse_cdf(key: jax.Array, weights: jax.Array, draws: int) -> jax.Array:
    """(B, draws) indices sampled per row with probabilities ``weights / row sum`` (>= 0)."""
    cdf = jnp.cumsum(weights, axis=1)
    total = cdf[:, -1:]
    u = jax.random.uniform(key, (weights.shape[0], draws), weights.dtype) * total
    idx = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(cdf, u)
    return jnp.minimum(idx, weights.shape[1] - 1)


@dataclasses.dataclass(frozen=True)
class DistanceWeightedMiner(BaseMiner):
    """Distance-weighted sampling (Wu et al. 2017), as pytorch-metric-learning's.

    With ``d`` the distance on the unit sphere clamped below at ``cutoff`` and ``D`` the
    embedding size, negative ``n`` of anchor ``a`` has weight
    ``d^(2-D) (1 - d²/4)^(-(D-3)/2)`` (computed in log space, scaled by the largest finite log
    weight of the batch as PML), 0 for ``d >= nonzero_loss_cutoff``, normalised per anchor
    (:meth:`negative_weights`). Every anchor whose class has another member and whose weights
    are not all 0 gets as many triplets as its class has members: each a uniformly random other
    member of its class and a negative drawn from the weights, both with replacement.

    Randomness: ``miner(embeddings, labels, key=key)`` takes a ``jax.random`` key (required).
    PML draws from torch's global generator; the two cannot give the same triplets, only the
    same distribution (checked in the tests). Returns a :class:`SampledTripletMask`.

    Args:
        cutoff: Default 0.5.
        nonzero_loss_cutoff: Default 1.4.
        distance: Must be ``LpDistance(p=2, power=1, normalize_embeddings=True)`` (the default).

    Raises:
        ValueError: If ``distance`` is another distance.

    References:
        Wu et al., 2017, "Sampling Matters in Deep Embedding Learning", arXiv:1706.07567.
    """

    cutoff: float = 0.5
    nonzero_loss_cutoff: float = 1.4

    def __post_init__(self) -> None:
        require_unit_l2(self.distance, "DistanceWeightedMiner")

    def negative_weights(self, embeddings: jax.Array, labels: jax.Array) -> jax.Array:
        """(B, B) per-anchor sampling probabilities of the negatives (NaN rows: no weight)."""
        mat = jnp.maximum(self.dist(embeddings), self.cutoff)
        d = float(embeddings.shape[1])
        log_w = (2.0 - d) * jnp.log(mat) - ((d - 3) / 2) * jnp.log(1.0 - 0.25 * mat**2)
        bad = ~jnp.isfinite(log_w)
        other = labels[:, None] != labels[None, :]
        log_w = jnp.where(other, log_w, log_w * 0)
        top = jnp.max(jnp.where(bad, -jnp.inf, log_w))
        w = jnp.exp(log_w - top)
        w = jnp.where(other & (mat < self.nonzero_loss_cutoff) & ~bad, w, jnp.zeros_like(w))
        return w / jnp.sum(w, axis=1, keepdims=True)

    def __call__(self, embeddings: jax.Array, labels: jax.Array, *, key: jax.Array) -> Any:
        """Validate the inputs and sample (see the class doc); ``key`` is a ``jax.random`` key."""
        validate_embeddings_and_labels(embeddings, labels)
        emb = jax.lax.stop_gradient(jnp.asarray(embeddings))
        return self.mine_with_key(emb, jnp.asarray(labels), key)

    def mine(self, embeddings: jax.Array, labels: jax.Array) -> Any:
        raise TypeError("DistanceWeightedMiner samples: call it with `key=`")

    def mine_with_key(self, embeddings: jax.Array, labels: jax.Array, key: jax.Array) -> Any:
        batch, dtype = labels.shape[0], embeddings.dtype
        weights = self.negative_weights(embeddings, labels)
        usable = jnp.sum(jnp.where(jnp.isnan(weights), 0, weights), axis=1) > 0
        pos, neg = label_masks(labels)
        class_size = jnp.sum(labels[:, None] == labels[None, :], axis=1)
        eligible = (class_size >= 2) & jnp.any(neg, axis=1) & usable
        key_p, key_n = jax.random.split(key)
        p_draw = _inverse_cdf(key_p, pos.astype(dtype), batch)
        n_draw = _inverse_cdf(key_n, jnp.where(usable[:, None], weights, 0).astype(dtype), batch)
        drawn = eligible[:, None] & (jnp.arange(batch)[None, :] < class_size[:, None])
        pos_hit = jnp.zeros((batch, batch), bool).at[jnp.arange(batch)[:, None], p_draw].max(drawn)
        neg_hit = jnp.zeros((batch, batch), bool).at[jnp.arange(batch)[:, None], n_draw].max(drawn)
        return SampledTripletMask(
            pos=pos_hit,
            neg=neg_hit,
            score=jnp.zeros((batch, batch), dtype),
            low=jnp.asarray(-jnp.inf, dtype),
            high=jnp.asarray(jnp.inf, dtype),
            bounded=True,
            p_draw=p_draw,
            n_draw=n_draw,
            drawn=drawn,
        )
