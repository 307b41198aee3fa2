"""What miners return and losses consume: fixed-shape pair and triplet masks.

pytorch-metric-learning passes index tuples of data-dependent length between miners and losses.
Here a miner returns masks of fixed shape, so mining and the loss jit together:

- :class:`PairMask`: ``pos[a, p]`` and ``neg[a, n]`` count how many times the anchor-positive and
  anchor-negative pairs are selected (0 = not selected). Pair miners give 0/1 masks.
- :class:`TripletMask`: triplet ``(a, p, n)`` is selected iff ``pos[a, p]`` and ``neg[a, n]`` and
  ``low < score[a, n] - score[a, p] <= high``. That describes all triplets, margin-mined triplets
  and batch-hard triplets in O(B²) memory: a loss rebuilds the (B, B) slice of one anchor at a
  time (:meth:`TripletMask.anchor_slice`) and never holds a (B, B, B) array.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = [
    "PairMask",
    "TripletMask",
    "all_pairs",
    "all_triplets",
    "anchor_block_size",
    "pair_weights",
    "triplet_mask",
]


def _check_square(x: Any, batch: int, name: str) -> None:
    shape = tuple(np.shape(x))
    if shape != (batch, batch):
        raise ValueError(
            f"expected `{name}` to have shape ({batch}, {batch}) (batch, batch), got shape {shape}"
        )


def label_masks(labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(same label and i != j, different label)`` boolean (B, B) masks."""
    same = labels[:, None] == labels[None, :]
    eye = jnp.eye(labels.shape[0], dtype=bool)
    return same & ~eye, ~same


@struct.dataclass
class PairMask:
    """Selected anchor-positive and anchor-negative pairs, as counts.

    Attributes:
        pos: (B, B) integer counts of the anchor-positive pairs ``(a, p)``.
        neg: (B, B) integer counts of the anchor-negative pairs ``(a, n)``.
    """

    pos: jax.Array
    neg: jax.Array

    def validate(self, batch: int) -> None:
        """Raise ``ValueError`` unless both masks are (batch, batch)."""
        _check_square(self.pos, batch, "indices_tuple.pos")
        _check_square(self.neg, batch, "indices_tuple.neg")

    def to_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(a1, p, a2, n)`` index arrays in row-major order, repeated by count (not jittable)."""
        pos, neg = np.asarray(self.pos), np.asarray(self.neg)
        a1, p = np.nonzero(pos)
        a2, n = np.nonzero(neg)
        r1, r2 = pos[a1, p], neg[a2, n]
        return np.repeat(a1, r1), np.repeat(p, r1), np.repeat(a2, r2), np.repeat(n, r2)


@struct.dataclass
class TripletMask:
    """Selected triplets ``(a, p, n)``: ``pos[a, p] & neg[a, n] & low < m <= high``.

    ``m = score[a, n] - score[a, p]`` is the triplet margin in the distance's "farther apart"
    direction (``score`` is the distance matrix, or minus the similarity matrix).

    Attributes:
        pos: (B, B) bool, candidate anchor-positive pairs.
        neg: (B, B) bool, candidate anchor-negative pairs.
        score: (B, B) float, see above.
        low: Scalar, exclusive lower bound of the triplet margin.
        high: Scalar, inclusive upper bound of the triplet margin.
        bounded: Static. False when ``low``/``high`` select everything, so that per-pair counts
            have a closed form.
    """

    pos: jax.Array
    neg: jax.Array
    score: jax.Array
    low: jax.Array
    high: jax.Array
    bounded: bool = struct.field(pytree_node=False, default=True)

    def validate(self, batch: int) -> None:
        """Raise ``ValueError`` unless every mask is (batch, batch)."""
        _check_square(self.pos, batch, "indices_tuple.pos")
        _check_square(self.neg, batch, "indices_tuple.neg")
        _check_square(self.score, batch, "indices_tuple.score")

    def anchor_slice(self, a: jax.Array) -> jax.Array:
        """(B, B) bool: ``[p, n]`` is True iff triplet ``(a, p, n)`` is selected."""
        sel = self.pos[a][:, None] & self.neg[a][None, :]
        if not self.bounded:
            return sel
        m = self.score[a][None, :] - self.score[a][:, None]
        return sel & (m > self.low) & (m <= self.high)

    def pair_counts(self) -> tuple[jax.Array, jax.Array]:
        """(B, B) int32 counts: triplets using each anchor-positive / anchor-negative pair."""
        pos, neg = self.pos.astype(jnp.int32), self.neg.astype(jnp.int32)
        if not self.bounded:
            return pos * jnp.sum(neg, axis=1, keepdims=True, dtype=jnp.int32), neg * jnp.sum(
                pos, axis=1, keepdims=True, dtype=jnp.int32
            )
        batch = pos.shape[0]

        def counts(a: jax.Array) -> tuple[jax.Array, jax.Array]:
            s = self.anchor_slice(a).astype(jnp.int32)
            return jnp.sum(s, axis=1, dtype=jnp.int32), jnp.sum(s, axis=0, dtype=jnp.int32)

        return jax.lax.map(counts, jnp.arange(batch), batch_size=anchor_block_size(batch))

    def to_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, p, n)`` index arrays in lexicographic order (builds (B, B, B): small B only)."""
        batch = np.shape(self.pos)[0]
        dense = np.stack([np.asarray(self.anchor_slice(a)) for a in range(batch)])
        a, p, n = np.nonzero(dense)
        return a, p, n


def anchor_block_size(batch: int, budget: int = 1 << 22) -> int:
    """How many anchors to process at once so that a block of (B, B) slices stays within budget."""
    return max(1, min(batch, budget // max(1, batch * batch)))


def all_pairs(labels: jax.Array) -> PairMask:
    """Every positive pair (same label, ``a != p``) and every negative pair (different label)."""
    pos, neg = label_masks(labels)
    return PairMask(pos=pos.astype(jnp.int32), neg=neg.astype(jnp.int32))


def all_triplets(labels: jax.Array, dtype: Any = jnp.float32) -> TripletMask:
    """Every triplet with ``labels[a] == labels[p]``, ``a != p`` and ``labels[a] != labels[n]``."""
    pos, neg = label_masks(labels)
    batch = labels.shape[0]
    return TripletMask(
        pos=pos,
        neg=neg,
        score=jnp.zeros((batch, batch), dtype),
        low=jnp.asarray(-jnp.inf, dtype),
        high=jnp.asarray(jnp.inf, dtype),
        bounded=False,
    )


def pair_weights(indices_tuple: Any, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, B) int32 pair counts from a miner output (``None`` = all pairs).

    A :class:`TripletMask` becomes its anchor-positive and anchor-negative pairs, each counted once
    per triplet, as pytorch-metric-learning's ``convert_to_pairs`` keeps duplicates.
    """
    if indices_tuple is None:
        mask = all_pairs(labels)
        return mask.pos, mask.neg
    if isinstance(indices_tuple, PairMask):
        return indices_tuple.pos.astype(jnp.int32), indices_tuple.neg.astype(jnp.int32)
    return indices_tuple.pair_counts()


def triplet_mask(indices_tuple: Any, labels: jax.Array, dtype: Any) -> TripletMask:
    """A :class:`TripletMask` from a miner output (``None`` = all triplets).

    A :class:`PairMask` gives every ``(a, p, n)`` whose pairs ``(a, p)`` and ``(a, n)`` are both
    selected, as pytorch-metric-learning's ``convert_to_triplets`` (pair counts are ignored: pair
    miners select each pair at most once).
    """
    if indices_tuple is None:
        return all_triplets(labels, dtype)
    if isinstance(indices_tuple, PairMask):
        batch = labels.shape[0]
        return TripletMask(
            pos=indices_tuple.pos > 0,
            neg=indices_tuple.neg > 0,
            score=jnp.zeros((batch, batch), dtype),
            low=jnp.asarray(-jnp.inf, dtype),
            high=jnp.asarray(jnp.inf, dtype),
            bounded=False,
        )
    return indices_tuple
