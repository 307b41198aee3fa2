"""CrossBatchMemory: a ring buffer of past embeddings used as the reference set of a loss."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Bool
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.base import BaseMetricLossFunction
from calibrax.metric_learning.base import prepare_inputs
from calibrax.metric_learning.losses.base_loss_wrapper import BaseLossWrapper
from calibrax.metric_learning.tuples import PairMask
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import TripletMask
from calibrax.metric_learning.tuples import as_indices
from calibrax.metric_learning.tuples import label_masks

__all__ = [
    "CrossBatchMemory",
    "MemoryEmbeddings",
    "MemoryFilled",
    "MemoryIndex",
    "MemoryLabels",
]

# pytorch-metric-learning 2.9's CrossBatchMemory.supported_losses().
SUPPORTED_LOSSES = (
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NCALoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
)


class MemoryEmbeddings(nnx.Variable):
    """The (memory_size, embedding_size) ring buffer of past embeddings (not trained)."""


class MemoryLabels(nnx.Variable):
    """The (memory_size,) int32 labels of the buffered embeddings."""


class MemoryIndex(nnx.Variable):
    """The int32 slot the next embedding is written to (pytorch-metric-learning's ``queue_idx``)."""


class MemoryFilled(nnx.Variable):
    """Whether every slot has been written at least once (``has_been_filled``)."""


def _cbm_example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
    from calibrax.metric_learning.losses.contrastive import ContrastiveLoss

    embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
    labels = jnp.array([0, 0, 1, 1, 2, 2, 0, 1], jnp.int32)

    def fn(e: jax.Array, l: jax.Array) -> jax.Array:
        memory = CrossBatchMemory(ContrastiveLoss(), embedding_size=4, memory_size=16)
        memory(e, l)  # one earlier batch in memory
        return memory(e[::-1], l[::-1])

    return fn, (embeddings, labels)


@register(
    "cross_batch_memory",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=_cbm_example,
)
class CrossBatchMemory(BaseLossWrapper):
    r"""Cross-batch memory (Wang et al. 2020), as pytorch-metric-learning 2.9's.

    Keeps the last ``memory_size`` embeddings and labels in a ring buffer (NNX state: the
    :class:`MemoryEmbeddings`, :class:`MemoryLabels`, :class:`MemoryIndex` and
    :class:`MemoryFilled` variables, so the module runs under ``nnx.jit`` and is saved and restored
    by :func:`calibrax.io.save_state` / Orbax like any NNX state). A call:

    1. writes the batch (or, with ``enqueue_mask``, the rows where it is True) into the buffer,
       after the last written slot, wrapping around (the stored copies carry no gradient);
    2. computes ``loss(embeddings, labels, indices, ref_emb=memory, ref_labels=memory_labels)``:
       the batch (without the enqueued rows when ``enqueue_mask`` is given) as anchors against
       every filled slot of the memory, the current batch's own slots included. Until the buffer
       has been filled once, only the written slots count.
    3. Without ``enqueue_mask`` the pairs of an embedding with its own copy in the memory are
       removed from the positives (pytorch-metric-learning's ``remove_self_comparisons``).

    The pairs are all pairs (``miner=None``) or the miner's selection between the batch and the
    filled memory. An ``indices_tuple`` given to the call is added to them as
    pytorch-metric-learning does (its positives and negatives are memory slots).

    Fixed shapes: the memory is always (memory_size, embedding_size) and the slots that are not
    filled (and, with ``enqueue_mask``, the enqueued rows as anchors) are masked out, so the same
    compiled function serves every step. A (batch, memory_size) pair count matrix is the
    selection: O(B·M) memory, as pytorch-metric-learning's distance matrix.

    With :class:`~calibrax.metric_learning.ContrastiveLoss` or
    :class:`~calibrax.metric_learning.SupConLoss` (their default distance and reducer) and no
    miner or ``indices_tuple``, the loss against the memory is a fused kernel, blocked over the
    memory slots, with a written-out backward pass: ``jax.jvp`` of the loss raises (reverse mode,
    and second derivatives, work); see those losses.

    Differences from pytorch-metric-learning: a batch larger than ``memory_size`` is refused
    also with ``enqueue_mask`` (pytorch-metric-learning would write some slots twice); a call that
    enqueues nothing does not mark the memory as filled (pytorch-metric-learning's
    ``queue_idx <= prev_queue_idx`` test does, exposing the unwritten zero slots); an
    ``indices_tuple`` is only combined with a pair selection (no miner, or a pair miner); a batch
    of one embedding does not pair with its own slot (pytorch-metric-learning 2.9's
    ``remove_self_comparisons`` keeps that pair when the batch has one row: its wrap-around test
    ``e <= s`` also fires for ``s == e``).

    Args:
        loss: A loss that accepts a reference set (one of pytorch-metric-learning's supported
            losses for this wrapper: Contrastive, Triplet margin, NTXent, SupCon, ...).
        embedding_size: Dimension of the embeddings.
        memory_size: Number of slots (default 1024).
        miner: Optional miner (must accept ``ref_emb``).
        dtype: dtype of the stored embeddings (default float32; batches are cast to it).

    Raises:
        ValueError: If the loss or miner is not supported, or a size is not a positive integer.

    References:
        Wang et al., 2020, "Cross-Batch Memory for Embedding Learning", CVPR, arXiv:1912.06798.
    """

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        embedding_size: int,
        memory_size: int = 1024,
        miner: Any = None,
        *,
        dtype: Any = jnp.float32,
    ) -> None:
        super().__init__(loss)
        if not getattr(loss, "supports_ref", False):
            raise ValueError(f"CrossBatchMemory not supported for {type(loss).__name__}")
        if miner is not None and not getattr(miner, "supports_ref", False):
            raise ValueError(
                f"CrossBatchMemory needs a miner that accepts ref_emb, got {type(miner).__name__}"
            )
        checks.check_positive_int(embedding_size, "embedding_size")
        checks.check_positive_int(memory_size, "memory_size")
        self.loss = loss
        self.miner = miner
        self.embedding_size = int(embedding_size)
        self.memory_size = int(memory_size)
        self.dtype = jnp.dtype(dtype)
        self.embedding_memory = MemoryEmbeddings(
            jnp.zeros((self.memory_size, self.embedding_size), self.dtype)
        )
        self.label_memory = MemoryLabels(jnp.zeros((self.memory_size,), jnp.int32))
        self.queue_idx = MemoryIndex(jnp.zeros((), jnp.int32))
        self.has_been_filled = MemoryFilled(jnp.zeros((), bool))

    @staticmethod
    def supported_losses() -> tuple[str, ...]:
        """pytorch-metric-learning 2.9's list (the losses that accept a reference set)."""
        return SUPPORTED_LOSSES

    def reset_queue(self) -> None:
        """Empty the memory (zeros, index 0, not filled)."""
        self.embedding_memory[...] = jnp.zeros_like(self.embedding_memory[...])
        self.label_memory[...] = jnp.zeros_like(self.label_memory[...])
        self.queue_idx[...] = jnp.zeros((), jnp.int32)
        self.has_been_filled[...] = jnp.zeros((), bool)

    def filled_mask(self) -> Bool[Array, " memory_size"]:
        """(memory_size,) bool: the slots that hold an embedding."""
        slots = jnp.arange(self.memory_size, dtype=jnp.int32)
        return self.has_been_filled[...] | (slots < self.queue_idx[...])

    def __call__(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any = None,
        enqueue_mask: Bool[Array, " batch"] | None = None,
    ) -> Float[Array, ""]:
        """Enqueue the batch and return the loss against the memory.

        Args:
            embeddings: (batch, embedding_size) floating, batch <= memory_size.
            labels: (batch,) integer labels.
            indices_tuple: Optional extra pairs/triplets (batch anchors, memory slots), added to
                the memory pairs; not with ``enqueue_mask``.
            enqueue_mask: Optional (batch,) bool: True rows go into the memory only, False rows
                are the anchors only (pytorch-metric-learning's semantics, e.g. for MoCo-style
                training with two views).

        Returns:
            The scalar loss, differentiable with respect to ``embeddings``.

        Raises:
            ValueError: On a wrong shape or NaN/Inf, a batch larger than the memory, or
                ``indices_tuple`` together with ``enqueue_mask``.
            TypeError: On a wrong dtype.
        """
        if indices_tuple is not None and enqueue_mask is not None:
            raise ValueError("indices_tuple and enqueue_mask are mutually exclusive")
        embeddings, labels, _, _ = prepare_inputs(
            "CrossBatchMemory", embeddings, labels, None, None, None, requires_labels=True
        )
        checks.check_dim(embeddings, 1, self.embedding_size, "embeddings", "embedding_size")
        batch = int(embeddings.shape[0])
        if batch > self.memory_size:
            raise ValueError(
                f"expected at most memory_size={self.memory_size} embeddings per batch, got {batch}"
            )
        if enqueue_mask is not None:
            checks.check_rank(enqueue_mask, 1, "enqueue_mask", "batch")
            checks.check_same_length(embeddings, enqueue_mask, "embeddings", "enqueue_mask")
            enqueue = jnp.asarray(enqueue_mask).astype(bool)
        else:
            enqueue = jnp.ones((batch,), bool)
        start = self.queue_idx[...]
        self._enqueue(embeddings, labels, enqueue)
        filled = self.filled_mask()
        memory = jax.lax.stop_gradient(self.embedding_memory[...])
        own = None
        if enqueue_mask is None:
            own = (start + jnp.arange(batch, dtype=jnp.int32)) % self.memory_size
        ref = Reference(
            embeddings=memory,
            labels=self.label_memory[...],
            mask=filled,
            query_mask=None if enqueue_mask is None else ~enqueue,
            frozen=True,
        )
        selection = None
        if self.miner is not None:
            selection = self.miner(
                embeddings,
                labels,
                memory,
                ref.labels,
                ref_mask=filled,
                query_mask=ref.query_mask,
            )
            if own is not None:
                selection = _without_self(selection, own)
        elif indices_tuple is not None:
            pos, neg = label_masks(labels, ref.replace(self_index=own))
            selection = PairMask(pos=pos.astype(jnp.int32), neg=neg.astype(jnp.int32))
        if indices_tuple is not None:
            extra = as_indices(indices_tuple, batch, self.memory_size)
            selection = _combine(selection, extra)
        if selection is None:
            # All pairs: the loss builds them from the labels and the masks of ``ref`` (the
            # filled slots, and each row's own slot left out of its positives), fused.
            ref = ref.replace(self_index=own)
        return self.loss.prepared_loss(embeddings, labels, selection, ref)

    def _enqueue(self, embeddings: jax.Array, labels: jax.Array, enqueue: jax.Array) -> None:
        """Write the rows where ``enqueue`` is True after ``queue_idx``, wrapping around."""
        rank = jnp.cumsum(enqueue.astype(jnp.int32)) - 1
        count = jnp.sum(enqueue, dtype=jnp.int32)
        start = self.queue_idx[...]
        slots = jnp.where(enqueue, (start + rank) % self.memory_size, self.memory_size)
        values = jax.lax.stop_gradient(embeddings).astype(self.dtype)
        self.embedding_memory[...] = self.embedding_memory[...].at[slots].set(values, mode="drop")
        self.label_memory[...] = self.label_memory[...].at[slots].set(labels, mode="drop")
        self.queue_idx[...] = (start + count) % self.memory_size
        self.has_been_filled[...] = self.has_been_filled[...] | (start + count >= self.memory_size)


def _without_self(selection: Any, own: jax.Array) -> Any:
    """Drop the positive pairs (and the triplets) of each anchor with its own slot ``own[a]``."""
    width = selection.pos.shape[1]
    is_self = own[:, None] == jnp.arange(width, dtype=jnp.int32)[None, :]
    if isinstance(selection, PairMask):
        return selection.replace(pos=jnp.where(is_self, 0, selection.pos))
    if isinstance(selection, TripletMask):
        return selection.replace(pos=selection.pos & ~is_self)
    raise TypeError(f"unexpected miner output {type(selection).__name__}")


def _combine(selection: Any, extra: Any) -> PairMask:
    """Add the pairs of ``extra`` (anchors: batch rows; the others: memory slots) to a pair
    selection, each triplet of ``extra`` giving its two pairs (pytorch-metric-learning's
    ``convert_to_pairs`` and ``concatenate_indices_tuples``)."""
    if not isinstance(selection, PairMask):
        raise ValueError(
            "CrossBatchMemory combines an indices_tuple only with pairs (no miner, or a pair "
            "miner), got a triplet miner"
        )
    pos, neg = extra.pair_counts()
    return PairMask(pos=selection.pos + pos, neg=selection.neg + neg, repeats=True)
