"""Shared pieces of the tier-3 losses: input validation, loss terms and the loss base class.

A loss computes one or more :class:`LossTerm` (fixed-shape values and a weight per value: a pair
mask, a triplet mask or per-element ones), and a reducer turns each term into a scalar; the scalars
are summed. Fixed shapes mean every loss runs under ``jax.jit`` whatever the labels are.

Every loss is called as pytorch-metric-learning's:
``loss(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None)``.

Extension point for a new loss (the contract other losses follow):

1. Subclass :class:`BaseMetricLossFunction` (or ``GenericPairLoss`` / ``DistanceLoss`` in
   ``losses/_pair_base.py``) and implement ``compute_terms(self, embeddings, labels,
   indices_tuple, ref=None) -> {name: LossTerm}`` (or override ``compute_loss(self, embeddings,
   labels, indices_tuple, reducer, ref=None)`` for a loss that reduces itself). The base has
   already validated everything and turned ``indices_tuple`` into ``None``, a
   :class:`~calibrax.metric_learning.tuples.PairMask`, a
   :class:`~calibrax.metric_learning.tuples.TripletMask` or a
   :class:`~calibrax.metric_learning.tuples.TripletList` (:func:`~calibrax.metric_learning.tuples.as_indices`).
2. ``ref`` is ``None`` (the batch is its own reference set: ``(i, i)`` is not a positive pair)
   or a :class:`~calibrax.metric_learning.tuples.Reference` holding ``ref_emb`` and
   ``ref_labels`` (every same-label pair is a positive pair). The helpers that take ``ref`` do
   the rest: ``tuples.label_masks(labels, ref)``, ``tuples.pair_weights(indices_tuple, labels,
   ref)``, ``tuples.triplet_mask(indices_tuple, labels, dtype, ref)``, ``ref_matrix(distance,
   embeddings, ref)`` (the (B, M) distance matrix; no reference gradient for a ``frozen``
   reference) and ``ref_embeddings(embeddings, ref)`` below; anchors always index the batch,
   positives and negatives the reference set, so pair matrices are (B, M). The masks also apply
   the fields wrappers set (``ref.mask``: reference rows that exist; ``ref.query_mask``: batch
   rows that are anchors, also applied by :meth:`BaseMetricLossFunction.compute_loss` to
   per-anchor (B,) terms; ``ref.self_index``: each row's own copy, not a positive), so a loss
   that builds its pairs with these helpers works inside
   :class:`~calibrax.metric_learning.CrossBatchMemory` unchanged.
3. Set the class attributes ``supports_ref = True`` only if the loss handles ``ref`` (default
   False: ``ref_emb`` then raises ``ValueError("ref_emb is not supported by <Loss>")``, the
   counterpart of pytorch-metric-learning's ``ref_not_supported``), and ``requires_labels =
   False`` if an ``indices_tuple`` alone is enough (default True: ``labels=None`` raises).
   ``GenericPairLoss`` subclasses get ``supports_ref`` and ``requires_labels = False`` for
   free: their ``pair_terms`` receive the (B, M) matrix and pair weights.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from calibrax.core import checks
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import as_indices

__all__ = [
    "BaseMetricLossFunction",
    "LossTerm",
    "add_regularization",
    "check_regularizer",
    "prepare_inputs",
    "ref_embeddings",
    "ref_matrix",
    "validate_embeddings_and_labels",
]


def validate_embeddings_and_labels(embeddings: Any, labels: Any) -> None:
    """Check the inputs every metric-learning loss and miner takes.

    Shape and dtype checks always run (also under ``jax.jit``); the NaN/Inf check runs on concrete
    arrays only, because a jitted function cannot raise on data.

    Args:
        embeddings: Embedding vectors, shape (batch, embedding_dim), floating dtype.
        labels: Integer class labels, shape (batch,).

    Raises:
        ValueError: If ``embeddings`` is not 2-D, is empty or holds NaN/Inf, if ``labels`` is not
            1-D, or if the two have different lengths.
        TypeError: If ``embeddings`` is not floating or ``labels`` is not integer.
    """
    checks.check_rank(embeddings, 2, "embeddings", "batch, embedding_dim")
    checks.check_rank(labels, 1, "labels", "batch")
    checks.check_floating(embeddings, "embeddings")
    checks.check_integer(labels, "labels")
    checks.check_same_length(embeddings, labels, "embeddings", "labels")
    checks.check_nonempty(embeddings, "embeddings")
    checks.check_finite(embeddings, "embeddings")


class LossTerm(NamedTuple):
    """One sub-loss before reduction.

    Attributes:
        values: Loss values of any fixed shape (per element, per pair (B, B), per anchor...).
        weights: Same shape as ``values``: how many times each value counts (0 = not a valid
            element/pair/triplet). Masks are 0/1 weights; mined triplets turned into pairs can
            count a pair several times, as pytorch-metric-learning does.
        reduced: If True, ``values`` is already a scalar loss and the reducer returns it as is.
        scale: Factor applied to the reduced term (0.5 for each half of a loss averaged with its
            mirror image, see ``GenericPairLoss``).
    """

    values: jax.Array
    weights: jax.Array
    reduced: bool = False
    scale: float = 1.0


def check_regularizer(regularizer: Any, name: str) -> Any:
    """``regularizer`` if it is None or a calibrax.metric_learning regularizer, else TypeError."""
    from calibrax.metric_learning.regularizers.base_regularizer import BaseRegularizer

    if regularizer is not None and not isinstance(regularizer, BaseRegularizer):
        raise TypeError(
            f"expected `{name}` to be a calibrax.metric_learning regularizer or None, "
            f"got {type(regularizer).__name__}"
        )
    return regularizer


def add_regularization(loss: jax.Array, regularizer: Any, weight: float, x: jax.Array) -> jax.Array:
    """``loss + weight * regularizer(x)`` (``loss`` when ``regularizer`` is None), computed in
    the loss's dtype: pytorch-metric-learning's ``embedding_reg_loss`` / ``weight_reg_loss``."""
    if regularizer is None:
        return loss
    return loss + weight * regularizer(x.astype(loss.dtype))


def ref_embeddings(embeddings: jax.Array, ref: Reference | None) -> jax.Array:
    """The reference embeddings in the dtype of ``embeddings`` (``embeddings`` itself when
    ``ref`` is None)."""
    return embeddings if ref is None else ref.embeddings.astype(embeddings.dtype)


def ref_matrix(distance: Any, embeddings: jax.Array, ref: Reference | None) -> jax.Array:
    """``distance(embeddings, ref rows)`` (the batch with itself when ``ref`` is None); for a
    ``frozen`` reference (a memory bank) the backward pass computes no gradient for it."""
    if ref is None:
        return distance(embeddings)
    other = ref_embeddings(embeddings, ref)
    if ref.frozen:
        return distance.frozen_ref_matrix(embeddings, other)
    return distance(embeddings, other)


def prepare_inputs(
    owner: str,
    embeddings: Any,
    labels: Any,
    indices_tuple: Any,
    ref_emb: Any,
    ref_labels: Any,
    *,
    supports_ref: bool = True,
    requires_labels: bool = False,
) -> tuple[jax.Array, jax.Array, Any, Reference | None]:
    """Validate pytorch-metric-learning's loss/miner arguments and put them in fixed-shape form.

    Shape and dtype checks always run (also under ``jax.jit``); NaN/Inf and index-range checks
    run on concrete arrays only.

    Args:
        owner: The loss or miner's name, for the messages.
        embeddings: (B, D) floating.
        labels: (B,) integer, or None when ``indices_tuple`` gives the pairs/triplets.
        indices_tuple: See :func:`~calibrax.metric_learning.tuples.as_indices`.
        ref_emb: (M, D) floating reference embeddings, or None (the batch is the reference).
        ref_labels: (M,) integer, required with ``ref_emb`` unless ``indices_tuple`` is given.
        supports_ref: Whether ``owner`` accepts ``ref_emb``.
        requires_labels: Whether ``owner`` needs labels even with an ``indices_tuple``.

    Returns:
        ``(embeddings, labels, indices, ref)``: jnp arrays (labels int32; zeros standing in for
        labels that were not given, which are then unused), the selection from ``as_indices``,
        and a :class:`~calibrax.metric_learning.tuples.Reference` or None.

    Raises:
        ValueError: On a wrong shape, a NaN/Inf, missing labels or ``ref_labels``, ``ref_labels``
            without ``ref_emb``, ``ref_emb`` where it is not supported, or a bad
            ``indices_tuple``.
        TypeError: On a wrong dtype or ``indices_tuple`` type.
    """
    checks.check_rank(embeddings, 2, "embeddings", "batch, embedding_dim")
    checks.check_floating(embeddings, "embeddings")
    checks.check_nonempty(embeddings, "embeddings")
    batch = int(embeddings.shape[0])
    if labels is None:
        if indices_tuple is None:
            raise ValueError(f"{owner} needs `labels` or `indices_tuple`, got neither")
        if requires_labels:
            raise ValueError(f"{owner} requires `labels`, got None")
    else:
        checks.check_rank(labels, 1, "labels", "batch")
        checks.check_integer(labels, "labels")
        checks.check_same_length(embeddings, labels, "embeddings", "labels")
    checks.check_finite(embeddings, "embeddings")
    ref = None
    ref_size = batch
    if ref_emb is None:
        if ref_labels is not None:
            raise ValueError("got `ref_labels` without `ref_emb`")
    else:
        if not supports_ref:
            raise ValueError(f"ref_emb is not supported by {owner}")
        checks.check_rank(ref_emb, 2, "ref_emb", "reference size, embedding_dim")
        checks.check_floating(ref_emb, "ref_emb")
        checks.check_nonempty(ref_emb, "ref_emb")
        checks.check_dim(ref_emb, 1, embeddings.shape[1], "ref_emb", "embedding size")
        ref_size = int(ref_emb.shape[0])
        if ref_labels is None:
            if labels is not None and indices_tuple is None:
                raise ValueError(
                    "expected `ref_labels` with `ref_emb` when the pairs come from the labels "
                    "(no `indices_tuple`), got None"
                )
        else:
            checks.check_rank(ref_labels, 1, "ref_labels", "reference size")
            checks.check_integer(ref_labels, "ref_labels")
            checks.check_same_length(ref_emb, ref_labels, "ref_emb", "ref_labels")
        checks.check_finite(ref_emb, "ref_emb")
    indices = as_indices(indices_tuple, batch, ref_size)
    embeddings = jnp.asarray(embeddings)
    labels = (
        jnp.zeros((batch,), jnp.int32) if labels is None else jnp.asarray(labels).astype(jnp.int32)
    )
    if ref_emb is not None:
        ref_labels = (
            jnp.zeros((ref_size,), jnp.int32)
            if ref_labels is None
            else jnp.asarray(ref_labels).astype(jnp.int32)
        )
        ref = Reference(embeddings=jnp.asarray(ref_emb), labels=ref_labels)
    return embeddings, labels, indices, ref


class BaseMetricLossFunction(nnx.Module):
    """Base for metric-learning losses, called as pytorch-metric-learning's:
    ``loss(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None)``.

    Subclasses implement :meth:`compute_terms`, returning ``{name: LossTerm}`` (or override
    :meth:`compute_loss`), and may override :meth:`default_reducer` (mean by default, as in
    pytorch-metric-learning). Each term is reduced by ``self.reducer`` (or the default) and the
    results are summed; the result has the dtype of ``embeddings``. See the module docstring for
    the ``ref`` contract (``supports_ref``, ``requires_labels``).

    ``indices_tuple`` is a miner's output from :mod:`calibrax.metric_learning.miners` (a pair or
    triplet mask), or a pytorch-metric-learning index tuple ``(a1, p, a2, n)`` / ``(a, p, n)``
    padded with ``-1`` (:func:`~calibrax.metric_learning.tuples.as_indices`); ``None`` means all
    pairs / all triplets, as in pytorch-metric-learning. ``ref_emb`` / ``ref_labels`` replace the
    batch as the set the positives and negatives are taken from (anchors stay the batch).
    """

    supports_ref: ClassVar[bool] = False
    requires_labels: ClassVar[bool] = True

    def __init__(
        self,
        *,
        reducer: Any = None,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
    ) -> None:
        self.reducer = reducer
        self.embedding_regularizer = check_regularizer(
            embedding_regularizer, "embedding_regularizer"
        )
        self.embedding_reg_weight = float(embedding_reg_weight)

    def default_reducer(self) -> Any:
        """The reducer used when none is given."""
        from calibrax.metric_learning.reducers.mean_reducer import MeanReducer

        return MeanReducer()

    def compute_terms(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any, ref: Any = None
    ) -> dict[str, LossTerm]:
        """The unreduced sub-losses; implemented by each loss."""
        raise NotImplementedError

    def validate_inputs(
        self,
        embeddings: Any,
        labels: Any,
        indices_tuple: Any = None,
        ref_emb: Any = None,
        ref_labels: Any = None,
    ) -> tuple[jax.Array, jax.Array, Any, Reference | None]:
        """Check the inputs and put them in fixed-shape form (see :func:`prepare_inputs`)."""
        return prepare_inputs(
            type(self).__name__,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            supports_ref=self.supports_ref,
            requires_labels=self.requires_labels,
        )

    @checks.nan_if_invalid
    def __call__(
        self,
        embeddings: jax.Array,
        labels: jax.Array | None = None,
        indices_tuple: Any = None,
        ref_emb: jax.Array | None = None,
        ref_labels: jax.Array | None = None,
    ) -> jax.Array:
        """Validate the inputs and return the scalar loss.

        Args:
            embeddings: Embedding vectors, shape (batch, embedding_dim).
            labels: Integer class labels, shape (batch,); may be None when ``indices_tuple``
                gives the pairs/triplets (losses with ``requires_labels = False``).
            indices_tuple: Optional selection of pairs/triplets (a miner's mask, or a padded
                pytorch-metric-learning index tuple).
            ref_emb: Optional reference embeddings, shape (ref_size, embedding_dim).
            ref_labels: Labels of ``ref_emb``, shape (ref_size,).

        Returns:
            The scalar loss, a differentiable array with the dtype of ``embeddings``.
        """
        embeddings, labels, indices_tuple, ref = self.validate_inputs(
            embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        return self.prepared_loss(embeddings, labels, indices_tuple, ref)

    def prepared_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        ref: Reference | None = None,
    ) -> jax.Array:
        """The loss of inputs already checked and put in fixed-shape form (what
        :meth:`validate_inputs` returns); wrappers such as
        :class:`~calibrax.metric_learning.CrossBatchMemory` call it with a
        :class:`~calibrax.metric_learning.tuples.Reference` carrying row masks."""
        reducer = self.reducer if self.reducer is not None else self.default_reducer()
        if hasattr(reducer, "bind"):  # reducers that use the labels (ClassWeightedReducer...)
            reducer = reducer.bind(labels)
        if getattr(reducer, "keeps_terms", False):  # DoNothingReducer: the unreduced terms
            if ref is not None:
                raise ValueError(
                    f"expected no `ref_emb` with DoNothingReducer ({type(self).__name__}'s "
                    "unreduced terms are those of the batch with itself), got one"
                )
            return reducer.terms(self, embeddings, labels, indices_tuple)
        if ref is None:
            loss = self.compute_loss(embeddings, labels, indices_tuple, reducer)
        else:
            loss = self.compute_loss(embeddings, labels, indices_tuple, reducer, ref=ref)
        loss = add_regularization(
            loss, self.embedding_regularizer, self.embedding_reg_weight, embeddings
        )
        return loss.astype(embeddings.dtype)

    def compute_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        reducer: Any,
        ref: Reference | None = None,
    ) -> jax.Array:
        """Reduce each term of :meth:`compute_terms` with ``reducer`` and add them up.

        Losses over all triplets override this to stream anchor blocks through
        ``reducer.partial`` instead of building a (B, M, M) array of values.
        """
        if ref is None:
            terms = self.compute_terms(embeddings, labels, indices_tuple)
        else:
            terms = self.compute_terms(embeddings, labels, indices_tuple, ref=ref)
        total = jnp.zeros((), accumulation_dtype(embeddings.dtype))
        rows = None if ref is None else ref.query_mask
        for name, term in terms.items():
            # MultipleReducers: a reducer per sub-loss name.
            red = reducer.for_term(name) if hasattr(reducer, "for_term") else reducer
            weights = term.weights
            if rows is not None and not term.reduced and term.values.shape == rows.shape:
                # A per-anchor term: rows that are not anchors are left out of the reduction.
                weights = jnp.where(rows, weights, jnp.zeros_like(weights))
            value = term.values if term.reduced else red(term.values, weights)
            value = jnp.reshape(value, ()).astype(total.dtype)
            total = total + (value if term.scale == 1 else term.scale * value)
        return total
