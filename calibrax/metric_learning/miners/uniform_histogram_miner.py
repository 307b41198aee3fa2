"""UniformHistogramMiner: pairs sampled uniformly across a histogram of their distances."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.metric_learning.base import validate_embeddings_and_labels
from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import PairMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["UniformHistogramMiner"]


def _bins(values: jax.Array, valid: jax.Array, num_bins: int) -> tuple[jax.Array, jax.Array]:
    """(bin of each entry (-1 if invalid), entries per bin): ``num_bins`` equal-width bins from
    the smallest to the largest valid value, each ``[s, e)`` and the last ``[s, e]`` (PML's)."""
    lo = jnp.min(jnp.where(valid, values, jnp.inf))
    hi = jnp.max(jnp.where(valid, values, -jnp.inf))
    edges = jnp.linspace(lo, hi, num_bins + 1, dtype=values.dtype)
    # Last bin whose start is <= value (a value on an inner edge starts the next bin).
    b = jnp.searchsorted(edges[:-1], values, side="right") - 1
    b = jnp.where(valid, jnp.clip(b, 0, num_bins - 1), -1)
    counts = jnp.zeros(num_bins, jnp.int32).at[jnp.where(valid, b, 0)].add(valid.astype(jnp.int32))
    return b, counts


@dataclasses.dataclass(frozen=True)
class UniformHistogramMiner(BaseMiner):
    """Pairs spread uniformly over the range of distances, as pytorch-metric-learning's.

    The positive pairs' distances (similarities) are cut into ``num_bins`` equal-width bins
    between their minimum and maximum; from every non-empty bin ``pos_per_bin`` pairs are drawn
    uniformly with replacement; likewise for the negative pairs with ``neg_per_bin``. Returns a
    :class:`~calibrax.metric_learning.PairMask` of counts (a pair drawn twice counts twice, as
    PML's duplicate indices). :meth:`expected_counts` gives the expected count of every pair.

    Randomness: ``miner(embeddings, labels, key=key)`` takes a ``jax.random`` key (required);
    PML draws from torch's global generator, so only the distribution can match (tested).

    Args:
        num_bins: Default 100.
        pos_per_bin: Default 10.
        neg_per_bin: Default 10.
        distance: Default :class:`~calibrax.metric_learning.LpDistance`.

    Raises:
        ValueError: If a count is not a positive integer.
    """

    num_bins: int = 100
    pos_per_bin: int = 10
    neg_per_bin: int = 10

    def __post_init__(self) -> None:
        for name in ("num_bins", "pos_per_bin", "neg_per_bin"):
            checks.check_positive_int(getattr(self, name), name)

    def expected_counts(
        self, embeddings: jax.Array, labels: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """(B, B) expected draws of each positive and negative pair: ``per_bin / bin size``."""
        mat = self.dist(embeddings)
        out = []
        for valid, per_bin in zip(
            label_masks(labels), (self.pos_per_bin, self.neg_per_bin), strict=True
        ):
            b, counts = _bins(mat, valid, self.num_bins)
            size = counts[jnp.maximum(b, 0)].astype(mat.dtype)
            out.append(jnp.where(valid, per_bin / jnp.maximum(size, 1), jnp.zeros((), mat.dtype)))
        return out[0], out[1]

    def __call__(self, embeddings: jax.Array, labels: jax.Array, *, key: jax.Array) -> PairMask:
        """Validate the inputs and sample (see the class doc); ``key`` is a ``jax.random`` key."""
        validate_embeddings_and_labels(embeddings, labels)
        emb = jax.lax.stop_gradient(jnp.asarray(embeddings))
        return self.mine_with_key(emb, jnp.asarray(labels), key)

    def mine(self, embeddings: jax.Array, labels: jax.Array) -> Any:
        raise TypeError("UniformHistogramMiner samples: call it with `key=`")

    def mine_with_key(self, embeddings: jax.Array, labels: jax.Array, key: jax.Array) -> PairMask:
        mat = self.dist(embeddings)
        batch = labels.shape[0]
        masks = []
        keys = jax.random.split(key, 2)
        for k, valid, per_bin in zip(
            keys, label_masks(labels), (self.pos_per_bin, self.neg_per_bin), strict=True
        ):
            b, counts = _bins(mat, valid, self.num_bins)
            # Pairs sorted by bin (invalid last); bin j holds sorted positions [start_j, start_j + n_j).
            flat_b = jnp.where(b < 0, self.num_bins, b).reshape(-1)
            order = jnp.argsort(flat_b, stable=True)
            start = jnp.cumsum(counts) - counts
            u = jax.random.uniform(k, (self.num_bins, per_bin), mat.dtype)
            offset = jnp.minimum(
                jnp.floor(u * counts[:, None].astype(mat.dtype)).astype(jnp.int32),
                jnp.maximum(counts[:, None] - 1, 0),
            )
            picked = order[start[:, None] + offset]
            hit = jnp.broadcast_to(counts[:, None] > 0, picked.shape).astype(jnp.int32)
            flat = jnp.zeros(batch * batch, jnp.int32).at[picked.reshape(-1)].add(hit.reshape(-1))
            masks.append(flat.reshape(batch, batch))
        return PairMask(pos=masks[0], neg=masks[1])
