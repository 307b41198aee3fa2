"""What miners return and losses consume: fixed-shape pair and triplet selections.

pytorch-metric-learning passes index tuples of data-dependent length between miners and losses.
Here a miner returns masks of fixed shape, so mining and the loss jit together:

- :class:`PairMask`: ``pos[a, p]`` and ``neg[a, n]`` count how many times the anchor-positive and
  anchor-negative pairs are selected (0 = not selected). Pair miners give 0/1 masks.
- :class:`TripletMask`: triplet ``(a, p, n)`` is selected iff ``pos[a, p]`` and ``neg[a, n]`` and
  ``low < score[a, n] - score[a, p] <= high``. That describes all triplets, margin-mined triplets
  and batch-hard triplets in O(B·M) memory: a loss rebuilds the (M, M) slice of one anchor at a
  time (:meth:`TripletMask.anchor_slice`) and never holds a (B, M, M) array.
- :class:`TripletList`: an explicit list of triplets ``(a, p, n)`` of fixed length, padded with
  ``-1`` (what a pytorch-metric-learning ``(a, p, n)`` tuple becomes, see :func:`as_indices`).

Anchors index the batch (``B`` rows). Positives and negatives index the *reference set*: the batch
itself by default, or ``ref_emb`` (``M`` rows) when a loss or miner is given one
(:class:`Reference`), as in pytorch-metric-learning. Only when the reference set is the batch
itself is ``(i, i)`` excluded from the positive pairs (pytorch-metric-learning's
``get_matches_and_diffs`` does the same when ``ref_labels is labels``).

Index tuples in pytorch-metric-learning's form are accepted everywhere an ``indices_tuple`` is:
``(a1, p, a2, n)`` (pairs) or ``(a, p, n)`` (triplets) of integer arrays, padded to a fixed size
with :data:`PAD` (``-1``): a pair or triplet with any index ``-1`` is ignored. :func:`as_indices`
turns them into a :class:`PairMask` (pairs, counted with their multiplicity) or a
:class:`TripletList`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from calibrax.core import checks

__all__ = [
    "PAD",
    "PairMask",
    "Reference",
    "TripletList",
    "TripletMask",
    "all_pairs",
    "all_triplets",
    "anchor_block_size",
    "as_indices",
    "element_weights",
    "label_masks",
    "pair_weights",
    "triplet_mask",
]

PAD = -1
"""The padding value of index tuples: pairs/triplets holding it are ignored."""


@struct.dataclass
class Reference:
    """A reference set given to a loss or a miner in place of the batch itself.

    Attributes:
        embeddings: (M, D) reference embeddings (``ref_emb``).
        labels: (M,) integer labels (``ref_labels``), or None when only an ``indices_tuple`` is
            used.
        mask: (M,) bool, the rows that exist, or None for all. :class:`CrossBatchMemory` passes
            the filled slots of its ring buffer; a row outside the mask is in no pair.
        query_mask: (B,) bool, the batch rows that are anchors, or None for all.
            :class:`CrossBatchMemory` with an ``enqueue_mask`` passes the rows that are not
            enqueued (pytorch-metric-learning drops the others from the batch): a row outside it
            is in no pair, and per-anchor loss terms leave it out of their reduction.
        self_index: (B,) int32, the reference row that is each batch row's own copy (its pair
            is not a positive pair), or None. :class:`CrossBatchMemory` passes the slots the
            batch was just written to.
        frozen: Static. True when no gradient is wanted w.r.t. ``embeddings`` (a memory bank):
            distances then skip that half of their backward pass.
    """

    embeddings: jax.Array
    labels: jax.Array | None = None
    mask: jax.Array | None = None
    query_mask: jax.Array | None = None
    self_index: jax.Array | None = None
    frozen: bool = struct.field(pytree_node=False, default=False)

    @property
    def size(self) -> int:
        """M, the number of reference rows."""
        return int(self.embeddings.shape[0])


def _check_matrix(x: Any, batch: int, ref_size: int, name: str) -> None:
    shape = tuple(np.shape(x))
    if shape != (batch, ref_size):
        raise ValueError(
            f"expected `{name}` to have shape ({batch}, {ref_size}) (batch, reference size), "
            f"got shape {shape}"
        )


def label_masks(labels: jax.Array, ref: Reference | None = None) -> tuple[jax.Array, jax.Array]:
    """``(positive, negative)`` boolean (B, M) masks from the labels.

    Positives share the label, negatives do not. With ``ref=None`` the reference set is the batch
    and ``(i, i)`` is not a positive pair; with a :class:`Reference` every same-label pair counts
    (as pytorch-metric-learning) and rows outside ``ref.mask`` are in no pair.
    """
    if ref is None:
        same = labels[:, None] == labels[None, :]
        eye = jnp.eye(labels.shape[0], dtype=bool)
        return same & ~eye, ~same
    same = labels[:, None] == ref.labels[None, :]
    pos, neg = same, ~same
    if ref.mask is not None:
        pos, neg = pos & ref.mask[None, :], neg & ref.mask[None, :]
    if ref.query_mask is not None:
        pos, neg = pos & ref.query_mask[:, None], neg & ref.query_mask[:, None]
    if ref.self_index is not None:
        column = jnp.arange(ref.labels.shape[0], dtype=ref.self_index.dtype)
        pos = pos & (column[None, :] != ref.self_index[:, None])
    return pos, neg


@struct.dataclass
class PairMask:
    """Selected anchor-positive and anchor-negative pairs, as counts.

    Attributes:
        pos: (B, M) integer counts of the anchor-positive pairs ``(a, p)``.
        neg: (B, M) integer counts of the anchor-negative pairs ``(a, n)``.
        repeats: Static. True when a count can exceed 1 (built from an index tuple with
            duplicates); triplet losses then weight each triplet by the product of its pair
            counts, as pytorch-metric-learning's ``convert_to_triplets`` repeats it.
    """

    pos: jax.Array
    neg: jax.Array
    repeats: bool = struct.field(pytree_node=False, default=False)

    def validate(self, batch: int, ref_size: int | None = None) -> None:
        """Raise ``ValueError`` unless both masks are (batch, ref_size) (ref_size defaults to
        batch)."""
        ref_size = batch if ref_size is None else ref_size
        _check_matrix(self.pos, batch, ref_size, "indices_tuple.pos")
        _check_matrix(self.neg, batch, ref_size, "indices_tuple.neg")

    def to_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(a1, p, a2, n)`` index arrays in row-major order, repeated by count (not jittable)."""
        pos, neg = np.asarray(self.pos), np.asarray(self.neg)
        a1, p = np.nonzero(pos)
        a2, n = np.nonzero(neg)
        r1, r2 = pos[a1, p], neg[a2, n]
        return np.repeat(a1, r1), np.repeat(p, r1), np.repeat(a2, r2), np.repeat(n, r2)

    def pair_counts(self) -> tuple[jax.Array, jax.Array]:
        """(B, M) int32 counts of each anchor-positive and anchor-negative pair."""
        return self.pos.astype(jnp.int32), self.neg.astype(jnp.int32)


@struct.dataclass
class TripletMask:
    """Selected triplets ``(a, p, n)``: ``pos[a, p] & neg[a, n] & low < m <= high``.

    ``m = score[a, n] - score[a, p]`` is the triplet margin in the distance's "farther apart"
    direction (``score`` is the distance matrix, or minus the similarity matrix).

    Attributes:
        pos: (B, M) bool, candidate anchor-positive pairs; or (unbounded only) integer pair
            counts, a triplet then counting ``pos[a, p] * neg[a, n]`` times.
        neg: (B, M) bool, candidate anchor-negative pairs (or integer counts, see ``pos``).
        score: (B, M) float, see above.
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

    def validate(self, batch: int, ref_size: int | None = None) -> None:
        """Raise ``ValueError`` unless every mask is (batch, ref_size) (ref_size defaults to
        batch)."""
        ref_size = batch if ref_size is None else ref_size
        _check_matrix(self.pos, batch, ref_size, "indices_tuple.pos")
        _check_matrix(self.neg, batch, ref_size, "indices_tuple.neg")
        _check_matrix(self.score, batch, ref_size, "indices_tuple.score")

    def anchor_slice(self, a: jax.Array) -> jax.Array:
        """(M, M) bool: ``[p, n]`` is True iff triplet ``(a, p, n)`` is selected (integer
        counts of each triplet when ``pos``/``neg`` are counts)."""
        if self.pos.dtype != jnp.bool_:
            return self.pos[a][:, None] * self.neg[a][None, :]
        sel = self.pos[a][:, None] & self.neg[a][None, :]
        if not self.bounded:
            return sel
        m = self.score[a][None, :] - self.score[a][:, None]
        return sel & (m > self.low) & (m <= self.high)

    def pair_counts(self) -> tuple[jax.Array, jax.Array]:
        """(B, M) int32 counts: triplets using each anchor-positive / anchor-negative pair."""
        pos, neg = self.pos.astype(jnp.int32), self.neg.astype(jnp.int32)
        if not self.bounded:
            return pos * jnp.sum(neg, axis=1, keepdims=True, dtype=jnp.int32), neg * jnp.sum(
                pos, axis=1, keepdims=True, dtype=jnp.int32
            )
        batch, width = pos.shape

        def counts(a: jax.Array) -> tuple[jax.Array, jax.Array]:
            s = self.anchor_slice(a).astype(jnp.int32)
            return jnp.sum(s, axis=1, dtype=jnp.int32), jnp.sum(s, axis=0, dtype=jnp.int32)

        return jax.lax.map(
            counts, jnp.arange(batch), batch_size=anchor_block_size(batch, width=width)
        )

    def to_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, p, n)`` index arrays in lexicographic order (builds (B, M, M): small sizes only)."""
        batch = np.shape(self.pos)[0]
        dense = np.stack([np.asarray(self.anchor_slice(a)) for a in range(batch)])
        a, p, n = np.nonzero(dense)
        return a, p, n


@struct.dataclass
class TripletList:
    """An explicit, fixed-length list of triplets ``(a, p, n)``, padded with :data:`PAD`.

    What a pytorch-metric-learning ``(a, p, n)`` index tuple becomes (:func:`as_indices`).
    ``a`` indexes the batch, ``p`` and ``n`` the reference set.

    Attributes:
        a: (T,) int32 anchors.
        p: (T,) int32 positives.
        n: (T,) int32 negatives.
        shape: Static ``(B, M)``: batch and reference sizes.
    """

    a: jax.Array
    p: jax.Array
    n: jax.Array
    shape: tuple[int, int] = struct.field(pytree_node=False, default=(0, 0))

    def validate(self, batch: int, ref_size: int | None = None) -> None:
        """Raise ``ValueError`` unless the list was built for (batch, ref_size)."""
        ref_size = batch if ref_size is None else ref_size
        if tuple(self.shape) != (batch, ref_size):
            raise ValueError(
                f"expected `indices_tuple` to be built for (batch, reference size) = "
                f"({batch}, {ref_size}), got {tuple(self.shape)}"
            )

    @property
    def valid(self) -> jax.Array:
        """(T,) bool: the entries that are not padding."""
        return (self.a >= 0) & (self.p >= 0) & (self.n >= 0)

    def safe(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(a, p, n)`` with padding replaced by 0 (gather-safe; weight them with ``valid``)."""
        valid = self.valid
        return (
            jnp.where(valid, self.a, 0),
            jnp.where(valid, self.p, 0),
            jnp.where(valid, self.n, 0),
        )

    def pair_counts(self) -> tuple[jax.Array, jax.Array]:
        """(B, M) int32 counts: triplets using each anchor-positive / anchor-negative pair."""
        batch, width = self.shape
        valid = self.valid
        a, p, n = self.safe()
        one = valid.astype(jnp.int32)
        zeros = jnp.zeros((batch, width), jnp.int32)
        return zeros.at[a, p].add(one), zeros.at[a, n].add(one)

    def to_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, p, n)`` of the non-padding entries, in list order (not jittable)."""
        keep = np.asarray(self.valid)
        return np.asarray(self.a)[keep], np.asarray(self.p)[keep], np.asarray(self.n)[keep]


def anchor_block_size(batch: int, budget: int = 1 << 22, width: int | None = None) -> int:
    """How many anchors to process at once so that a block of (M, M) slices stays within budget
    (``width`` is M, default ``batch``)."""
    width = batch if width is None else width
    return max(1, min(batch, budget // max(1, width * width)))


def _index_array(x: Any, name: str) -> jax.Array:
    checks.check_rank(x, 1, name, "pairs or triplets")
    checks.check_integer(x, name)
    return jnp.asarray(x).astype(jnp.int32)


def _check_index_range(x: jax.Array, size: int, name: str) -> None:
    """Eagerly: every entry in ``[-1, size)`` (skipped under tracing)."""
    if not checks.is_concrete(x):
        return
    arr = np.asarray(x)
    bad = (arr < PAD) | (arr >= size)
    if bad.any():
        raise ValueError(
            f"expected `{name}` to hold indices in [0, {size}) or the padding value -1, "
            f"got {int(arr[bad][0])}"
        )


def as_indices(indices_tuple: Any, batch: int, ref_size: int | None = None) -> Any:
    """Check an ``indices_tuple`` and turn pytorch-metric-learning index tuples into a fixed-shape
    selection.

    Args:
        indices_tuple: None; a :class:`PairMask`, :class:`TripletMask` or :class:`TripletList`;
            or a tuple/list of 1-D integer arrays ``(a1, p, a2, n)`` or ``(a, p, n)`` padded with
            :data:`PAD`. Anchors index the batch, the others the reference set.
        batch: B, the number of embeddings.
        ref_size: M, the number of reference embeddings (default ``batch``).

    Returns:
        None, a :class:`PairMask` (a 4-tuple: pairs counted with their multiplicity, as
        pytorch-metric-learning keeps duplicates) or a :class:`TripletList` (a 3-tuple).

    Raises:
        ValueError: If a mask has the wrong shape, a tuple has another length than 3 or 4, its
            arrays are not 1-D, paired arrays differ in length, or (eagerly) an index is out of
            range.
        TypeError: If ``indices_tuple`` is none of the above, or an index array is not integer.
    """
    ref_size = batch if ref_size is None else ref_size
    if indices_tuple is None:
        return None
    if isinstance(indices_tuple, (PairMask, TripletMask, TripletList)):
        indices_tuple.validate(batch, ref_size)
        return indices_tuple
    if not isinstance(indices_tuple, (tuple, list)):
        raise TypeError(
            "expected `indices_tuple` to be a miner output (PairMask, TripletMask, TripletList), "
            f"an (a1, p, a2, n) or (a, p, n) tuple of index arrays, or None, "
            f"got {type(indices_tuple).__name__}"
        )
    if len(indices_tuple) == 4:
        names = ("a1", "p", "a2", "n")
    elif len(indices_tuple) == 3:
        names = ("a", "p", "n")
    else:
        raise ValueError(
            "expected `indices_tuple` to have 4 arrays (a1, p, a2, n) or 3 arrays (a, p, n), "
            f"got {len(indices_tuple)}"
        )
    arrays = [
        _index_array(x, f"indices_tuple.{name}")
        for x, name in zip(indices_tuple, names, strict=True)
    ]
    for x, name in zip(arrays, names, strict=True):
        _check_index_range(x, batch if name.startswith("a") else ref_size, f"indices_tuple.{name}")
    if len(arrays) == 3:
        a, p, n = arrays
        checks.check_same_length(a, p, "indices_tuple.a", "indices_tuple.p")
        checks.check_same_length(a, n, "indices_tuple.a", "indices_tuple.n")
        return TripletList(a=a, p=p, n=n, shape=(batch, ref_size))
    a1, p, a2, n = arrays
    checks.check_same_length(a1, p, "indices_tuple.a1", "indices_tuple.p")
    checks.check_same_length(a2, n, "indices_tuple.a2", "indices_tuple.n")
    return PairMask(
        pos=_scatter_pairs(a1, p, batch, ref_size),
        neg=_scatter_pairs(a2, n, batch, ref_size),
        repeats=True,
    )


def _scatter_pairs(a: jax.Array, b: jax.Array, batch: int, ref_size: int) -> jax.Array:
    valid = (a >= 0) & (b >= 0)
    counts = jnp.zeros((batch, ref_size), jnp.int32)
    return counts.at[jnp.where(valid, a, 0), jnp.where(valid, b, 0)].add(valid.astype(jnp.int32))


def all_pairs(labels: jax.Array, ref: Reference | None = None) -> PairMask:
    """Every positive pair (same label; ``a != p`` when the reference set is the batch) and every
    negative pair (different label)."""
    pos, neg = label_masks(labels, ref)
    return PairMask(pos=pos.astype(jnp.int32), neg=neg.astype(jnp.int32))


def all_triplets(
    labels: jax.Array, dtype: Any = jnp.float32, ref: Reference | None = None
) -> TripletMask:
    """Every triplet ``(a, p, n)`` with ``(a, p)`` a positive and ``(a, n)`` a negative pair."""
    pos, neg = label_masks(labels, ref)
    return TripletMask(
        pos=pos,
        neg=neg,
        score=jnp.zeros(pos.shape, dtype),
        low=jnp.asarray(-jnp.inf, dtype),
        high=jnp.asarray(jnp.inf, dtype),
        bounded=False,
    )


def pair_weights(
    indices_tuple: Any, labels: jax.Array, ref: Reference | None = None
) -> tuple[jax.Array, jax.Array]:
    """(B, M) int32 pair counts from a selection (``None`` = all pairs).

    Triplets become their anchor-positive and anchor-negative pairs, each counted once per
    triplet, as pytorch-metric-learning's ``convert_to_pairs`` keeps duplicates.
    """
    if indices_tuple is None:
        mask = all_pairs(labels, ref)
        return mask.pos, mask.neg
    return indices_tuple.pair_counts()


def triplet_mask(
    indices_tuple: Any, labels: jax.Array, dtype: Any, ref: Reference | None = None
) -> TripletMask | TripletList:
    """Triplets from a selection (``None`` = all triplets).

    A :class:`PairMask` gives every ``(a, p, n)`` whose pairs ``(a, p)`` and ``(a, n)`` are both
    selected, as pytorch-metric-learning's ``convert_to_triplets``; with ``repeats`` (an index
    tuple) each triplet counts ``pos[a, p] * neg[a, n]`` times, as there. A :class:`TripletList`
    is returned as is.
    """
    if indices_tuple is None:
        return all_triplets(labels, dtype, ref)
    if isinstance(indices_tuple, PairMask):
        counted = indices_tuple.repeats
        return TripletMask(
            pos=indices_tuple.pos.astype(jnp.int32) if counted else indices_tuple.pos > 0,
            neg=indices_tuple.neg.astype(jnp.int32) if counted else indices_tuple.neg > 0,
            score=jnp.zeros(indices_tuple.pos.shape, dtype),
            low=jnp.asarray(-jnp.inf, dtype),
            high=jnp.asarray(jnp.inf, dtype),
            bounded=False,
        )
    return indices_tuple


def element_weights(
    indices_tuple: Any, batch: int, dtype: Any, *, anchors_only: bool = False
) -> jax.Array:
    """(B,) per-sample weights of a selection, as pytorch-metric-learning's
    ``convert_to_weights``: how many times each embedding appears in the selected pairs or
    triplets (any role; only as an anchor with ``anchors_only``, pytorch-metric-learning's
    ``using_ref``), divided by the largest count; all ones when nothing is selected (or
    ``indices_tuple`` is None). Used by the class-weight losses, whose reference set is the batch.
    """
    if indices_tuple is None:
        return jnp.ones((batch,), dtype)
    if isinstance(indices_tuple, TripletList):
        valid = indices_tuple.valid.astype(jnp.int32)
        a, p, n = indices_tuple.safe()
        counts = jnp.zeros((batch,), jnp.int32).at[a].add(valid)
        if not anchors_only:
            counts = counts.at[p].add(valid).at[n].add(valid)
    elif isinstance(indices_tuple, PairMask):
        pos, neg = indices_tuple.pair_counts()
        counts = jnp.sum(pos, axis=1) + jnp.sum(neg, axis=1)
        if not anchors_only:
            counts = counts + jnp.sum(pos, axis=0) + jnp.sum(neg, axis=0)
    else:
        pos, neg = indices_tuple.pair_counts()
        counts = jnp.sum(pos, axis=1)
        if not anchors_only:
            counts = counts + jnp.sum(pos, axis=0) + jnp.sum(neg, axis=0)
    top = jnp.max(counts)
    weights = counts.astype(dtype) / jnp.maximum(top, 1).astype(dtype)
    return jnp.where(top > 0, weights, jnp.ones_like(weights))
