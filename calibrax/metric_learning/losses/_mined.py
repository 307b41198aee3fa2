"""Miner weights per sample, and the class-weight loss shell that takes miner output.

pytorch-metric-learning's classification-style losses (LargeMarginSoftmax, SphereFace, SoftTriple,
FastAP, NCA) use a miner only to weight each sample by how often it appears in the mined tuples
(``lmu.convert_to_weights``). :func:`miner_weights` is that rule on the fixed-shape miner outputs
of :mod:`calibrax.metric_learning.tuples`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.metric_learning.losses._weight_losses import ClassWeightLoss
from calibrax.metric_learning.losses._weight_losses import compute_dtype
from calibrax.metric_learning.reducers import MeanReducer
from calibrax.metric_learning.tuples import PairMask

__all__ = [
    "MinedClassWeightLoss",
    "NonFiniteIsNaN",
    "check_indices_tuple",
    "miner_weights",
    "nan_unless_finite",
    "reject_indices_tuple",
    "reject_ref",
]


def nan_unless_finite(loss: jax.Array, embeddings: jax.Array) -> jax.Array:
    """``loss``, or NaN if ``embeddings`` hold NaN/Inf: under jit the eager check cannot raise,
    and masks built from comparisons would silently drop such rows and give a plausible number."""
    finite = jnp.all(jnp.isfinite(embeddings))
    return jnp.where(finite, loss, jnp.full_like(loss, jnp.nan))


class NonFiniteIsNaN:
    """Mixin for a :class:`~calibrax.metric_learning.BaseMetricLossFunction`: the loss is NaN when
    the embeddings (or ``ref_emb``) hold NaN/Inf (see :func:`nan_unless_finite`). Passes
    ``ref`` on to the loss's own ``compute_loss`` when one is given."""

    def compute_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        reducer: Any,
        ref: Any = None,
    ) -> jax.Array:
        """The loss, NaN if ``embeddings`` (or the reference embeddings of ``ref``, a
        :class:`~calibrax.metric_learning.tuples.Reference`) hold NaN/Inf."""
        if ref is None:
            loss = super().compute_loss(embeddings, labels, indices_tuple, reducer)  # type: ignore[misc]
            return nan_unless_finite(loss, embeddings)
        loss = super().compute_loss(embeddings, labels, indices_tuple, reducer, ref=ref)  # type: ignore[misc]
        return nan_unless_finite(nan_unless_finite(loss, embeddings), ref.embeddings)


def check_indices_tuple(indices_tuple: Any, batch: int) -> None:
    """Raise unless ``indices_tuple`` is None or a miner output of this batch size.

    Raises:
        TypeError: If it is not a miner output.
        ValueError: If its masks are not (batch, batch).
    """
    if indices_tuple is None:
        return
    check = getattr(indices_tuple, "validate", None)
    if check is None:
        raise TypeError(
            "expected `indices_tuple` to be a miner output (PairMask or TripletMask) "
            f"or None, got {type(indices_tuple).__name__}"
        )
    check(batch)


def reject_ref(loss_name: str, ref_emb: Any, ref_labels: Any) -> None:
    """Raise ``ValueError`` if a reference set is given to a loss that has none (as
    pytorch-metric-learning's ``ref_not_supported``)."""
    if ref_emb is not None or ref_labels is not None:
        raise ValueError(
            f"expected `ref_emb` and `ref_labels` to be None ({loss_name} does not compare "
            "with a reference set), got "
            f"{type(ref_emb).__name__} and {type(ref_labels).__name__}"
        )


def reject_indices_tuple(loss_name: str, indices_tuple: Any) -> None:
    """Raise ``ValueError`` if miner output is given to a loss that takes none."""
    if indices_tuple is not None:
        raise ValueError(
            f"expected `indices_tuple` to be None ({loss_name} does not use a miner), "
            f"got {type(indices_tuple).__name__}"
        )


def miner_weights(
    indices_tuple: Any, batch: int, dtype: Any, *, anchors_only: bool = False
) -> Float[Array, " batch"]:
    """Per-sample weights from a miner output, pytorch-metric-learning's ``convert_to_weights``.

    Each sample's weight is the number of times its index appears in the mined tuples (every
    position of every pair or triplet; only the anchor positions with ``anchors_only``, PML's
    ``using_ref``) divided by the largest such count. No miner, or a miner that selected nothing,
    gives weight 1 everywhere.

    Args:
        indices_tuple: None, a :class:`~calibrax.metric_learning.PairMask` or a
            :class:`~calibrax.metric_learning.TripletMask`.
        batch: The batch size.
        dtype: dtype of the weights.
        anchors_only: Count the anchor positions only.

    Returns:
        The weights, shape (batch,).
    """
    if indices_tuple is None:
        return jnp.ones((batch,), dtype)
    if isinstance(indices_tuple, PairMask):
        pos = indices_tuple.pos.astype(jnp.int32)
        neg = indices_tuple.neg.astype(jnp.int32)
        counts = jnp.sum(pos, axis=1) + jnp.sum(neg, axis=1)
        if not anchors_only:
            counts = counts + jnp.sum(pos, axis=0) + jnp.sum(neg, axis=0)
    else:
        # A triplet (a, p, n) counts a once (the anchor), p and n once each.
        pos, neg = indices_tuple.pair_counts()
        counts = jnp.sum(pos, axis=1)
        if not anchors_only:
            counts = counts + jnp.sum(pos, axis=0) + jnp.sum(neg, axis=0)
    top = jnp.max(counts)
    safe_top = jnp.maximum(top, 1).astype(dtype)
    return jnp.where(top > 0, counts.astype(dtype) / safe_top, jnp.ones((batch,), dtype))


class MinedClassWeightLoss(ClassWeightLoss):
    """A class-weight loss called as pytorch-metric-learning's: ``loss(embeddings, labels,
    indices_tuple=None, ref_emb=None, ref_labels=None)``.

    The per-sample losses are multiplied by :func:`miner_weights` of ``indices_tuple`` before
    the reducer (the mean by default), as in pytorch-metric-learning; a reference set is refused.
    """

    def __call__(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any = None,
        ref_emb: Any = None,
        ref_labels: Any = None,
    ) -> Float[Array, ""]:
        """The loss of a batch.

        Args:
            embeddings: Embedding vectors, shape ``(batch, embedding_size)``, any float dtype.
            labels: Integer class ids in ``[0, num_classes)``, shape ``(batch,)``.
            indices_tuple: Optional miner output; weights each sample's loss.
            ref_emb: Must be None (no reference set).
            ref_labels: Must be None.

        Returns:
            The scalar loss, in the dtype of ``embeddings``; differentiable with respect to the
            embeddings and to the class weights.

        Raises:
            ValueError: If ``ref_emb``/``ref_labels`` is given, if the miner output's masks are
                not (batch, batch), or see :meth:`ClassWeightLoss.validate_inputs`.
            TypeError: If ``indices_tuple`` is not a miner output, or see
                :meth:`ClassWeightLoss.validate_inputs`.
        """
        reject_ref(type(self).__name__, ref_emb, ref_labels)
        embeddings = jnp.asarray(embeddings)
        labels = jnp.asarray(labels)
        self.validate_inputs(embeddings, labels)
        check_indices_tuple(indices_tuple, embeddings.shape[0])
        labels = labels.astype(jnp.int32)
        dtype = compute_dtype(embeddings)
        values = self._per_sample(embeddings.astype(dtype), labels)
        values = values * miner_weights(indices_tuple, labels.shape[0], values.dtype)
        reducer = self.reducer if self.reducer is not None else MeanReducer()
        loss = nan_unless_finite(reducer(values, jnp.ones_like(values)), embeddings)
        out_of_range = jnp.any((labels < 0) | (labels >= self.num_classes))
        loss = jnp.where(out_of_range, jnp.nan, loss)
        return loss.astype(embeddings.dtype)
