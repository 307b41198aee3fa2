"""What the fused memory kernels (``_memory_contrastive``, ``_memory_supcon``) share: the column
blocks a (B, M) pair matrix is taken in, the loop over them, and the masks of a memory."""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer

__all__ = ["MemoryMasks", "block_columns", "fused_memory_rows", "memory_masks", "scan_blocks"]


def fused_memory_rows(
    distance: Any, embeddings: jax.Array, indices_tuple: Any, reducer: Any, ref: Any
) -> tuple[jax.Array, jax.Array] | None:
    """The anchors and the reference rows, in the working dtype and normalised as ``distance``
    does, when a fused memory kernel applies to the call: a frozen reference set with labels
    (CrossBatchMemory's memory), all pairs (no ``indices_tuple``) and the default
    :class:`~calibrax.metric_learning.AvgNonZeroReducer`; else None (the caller checks its own
    distance)."""
    if (
        ref is None
        or not ref.frozen
        or ref.labels is None
        or indices_tuple is not None
        or type(reducer) is not AvgNonZeroReducer
    ):
        return None
    emb = working(embeddings)
    other = ref.embeddings.astype(embeddings.dtype).astype(emb.dtype)
    return distance.maybe_normalize(emb), distance.maybe_normalize(other)


# Pairs per column block: a (B, block) float32 array is 1 MiB, within a core's L2 cache. Counts of
# a block's pairs are summed in the working dtype and stay exact (whole numbers below 2^24) for
# batches up to 2^24 / _MIN_BLOCK = 131072 rows.
_BLOCK_PAIRS = 1 << 18
_MIN_BLOCK = 128


def block_columns(batch: int, ref_size: int) -> int:
    """Reference rows per block for ``batch`` anchors: about ``_BLOCK_PAIRS`` pairs, at least
    ``_MIN_BLOCK`` rows, at most the whole reference set."""
    return min(ref_size, max(_MIN_BLOCK, _BLOCK_PAIRS // max(batch, 1)))


def scan_blocks(
    ref: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    width: int,
    fn: Any,
    carry: Any,
    extra: list[Any] | None = None,
) -> tuple[Any, list[Any]]:
    """Run ``fn(carry, r, rl, rv, first, *more) -> (carry, out)`` over the blocks of ``width``
    reference rows (``first`` the block's first row): a ``lax.scan`` over the full blocks, then
    the remainder block, if any. Returns the final carry and the outputs as a list: the scan's
    stacked outputs, then the remainder's. ``extra`` is such a list from an earlier call (per-block
    arrays handed to ``fn`` as ``more``)."""
    size, dim = ref.shape
    n_full = size // width
    stop = n_full * width
    extra = extra or []
    outs: list[Any] = []
    if n_full > 0:

        def body(c: Any, block: Any) -> tuple[Any, Any]:
            r, rl, rv, index, *more = block
            return fn(c, r, rl, rv, index * width, *more)

        blocks = (
            ref[:stop].reshape(n_full, width, dim),
            ref_labels[:stop].reshape(n_full, width),
            ref_valid[:stop].reshape(n_full, width),
            jnp.arange(n_full, dtype=jnp.int32),
            *extra[:1],
        )
        carry, out = jax.lax.scan(body, carry, blocks)
        outs.append(out)
    if stop < size:
        more = extra[len(outs) :]
        carry, out = fn(
            carry, ref[stop:], ref_labels[stop:], ref_valid[stop:], jnp.int32(stop), *more
        )
        outs.append(out)
    return carry, outs


class MemoryMasks(NamedTuple):
    """The row masks of a memory: ``ref_valid`` (M,) slots in use, ``anchors`` (B,) rows that are
    anchors, ``own`` (B,) each anchor's own slot (-1 for none) and ``own_valid`` (B,) whether that
    pair is one the label masks would count as positive (a valid slot with the anchor's label:
    the positive-pair count leaves it out)."""

    ref_valid: jax.Array
    anchors: jax.Array
    own: jax.Array
    own_valid: jax.Array

    @classmethod
    def of(
        cls,
        labels: jax.Array,
        ref_labels: jax.Array,
        ref_mask: jax.Array | None,
        query_mask: jax.Array | None,
        self_index: jax.Array | None,
    ) -> MemoryMasks:
        """The masks of a Reference's ``mask``, ``query_mask`` and ``self_index`` (None: all
        slots, all rows, no own slot)."""
        batch, size = labels.shape[0], ref_labels.shape[0]
        ref_valid = jnp.ones((size,), bool) if ref_mask is None else ref_mask
        anchors = jnp.ones((batch,), bool) if query_mask is None else query_mask
        if self_index is None:
            return cls(
                ref_valid, anchors, jnp.full((batch,), -1, jnp.int32), jnp.zeros((batch,), bool)
            )
        own = self_index.astype(jnp.int32)
        inside = (own >= 0) & (own < size)
        slot = jnp.clip(own, 0, size - 1)
        own_valid = inside & anchors & ref_valid[slot] & (ref_labels[slot] == labels)
        return cls(ref_valid, anchors, own, own_valid)

    def pair_totals(self, n_pos: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(enough, n_neg)`` from the int32 number of positive pairs: the negative pairs are
        the valid pairs that are not same-label, and ``enough`` is pytorch-metric-learning's
        ``GenericPairLoss`` test (more than one positive or more than one negative pair)."""
        n_pairs = jnp.sum(self.anchors, dtype=jnp.int32) * jnp.sum(self.ref_valid, dtype=jnp.int32)
        n_neg = n_pairs - n_pos - jnp.sum(self.own_valid, dtype=jnp.int32)
        return (n_pos > 1) | (n_neg > 1), n_neg


def memory_masks(
    labels: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    anchors: jax.Array,
    own: jax.Array,
    first: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(B, block) ``(pos, neg)`` for the block of reference rows starting at ``first``: the label
    masks of a Reference (same label, valid slot and anchor row, not the own slot; different
    label, valid slot and anchor row)."""
    same = labels[:, None] == ref_labels[None, :]
    valid = anchors[:, None] & ref_valid[None, :]
    column = first + jnp.arange(ref_labels.shape[0], dtype=own.dtype)
    pos = same & valid & (column[None, :] != own[:, None])
    return pos, valid & ~same
