"""Shared pieces of the tier-3 losses: input validation, loss terms and the loss base class.

A loss computes one or more :class:`LossTerm` (fixed-shape values and a weight per value: a pair
mask, a triplet mask or per-element ones), and a reducer turns each term into a scalar; the scalars
are summed. Fixed shapes mean every loss runs under ``jax.jit`` whatever the labels are.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from calibrax.core import checks
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype

__all__ = [
    "BaseMetricLossFunction",
    "LossTerm",
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


class BaseMetricLossFunction(nnx.Module):
    """Base for metric-learning losses: ``loss(embeddings, labels, indices_tuple=None)``.

    Subclasses implement :meth:`compute_terms`, returning ``{name: LossTerm}`` (or override
    :meth:`compute_loss`), and may override :meth:`default_reducer` (mean by default, as in
    pytorch-metric-learning). Each term is reduced by ``self.reducer`` (or the default) and the
    results are summed; the result has the dtype of ``embeddings``.

    ``indices_tuple`` is the output of a miner from :mod:`calibrax.metric_learning.miners` (a pair mask
    or a triplet mask); ``None`` means all pairs / all triplets, as in pytorch-metric-learning.
    """

    def __init__(self, *, reducer: Any = None) -> None:
        self.reducer = reducer

    def default_reducer(self) -> Any:
        """The reducer used when none is given."""
        from calibrax.metric_learning.reducers.mean_reducer import MeanReducer

        return MeanReducer()

    def compute_terms(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any
    ) -> dict[str, LossTerm]:
        """The unreduced sub-losses; implemented by each loss."""
        raise NotImplementedError

    def validate_inputs(self, embeddings: Any, labels: Any, indices_tuple: Any = None) -> None:
        """Check the inputs (see :func:`validate_embeddings_and_labels`)."""
        validate_embeddings_and_labels(embeddings, labels)
        if indices_tuple is not None:
            check = getattr(indices_tuple, "validate", None)
            if check is None:
                raise TypeError(
                    "expected `indices_tuple` to be a miner output (PairMask or TripletMask) "
                    f"or None, got {type(indices_tuple).__name__}"
                )
            check(embeddings.shape[0])

    @checks.nan_if_invalid
    def __call__(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any = None
    ) -> jax.Array:
        """Validate the inputs and return the scalar loss.

        Args:
            embeddings: Embedding vectors, shape (batch, embedding_dim).
            labels: Integer class labels, shape (batch,).
            indices_tuple: Optional miner output restricting the pairs/triplets used.

        Returns:
            The scalar loss, a differentiable array with the dtype of ``embeddings``.
        """
        self.validate_inputs(embeddings, labels, indices_tuple)
        embeddings = jnp.asarray(embeddings)
        labels = jnp.asarray(labels)
        reducer = self.reducer if self.reducer is not None else self.default_reducer()
        if hasattr(reducer, "bind"):  # reducers that use the labels (ClassWeightedReducer...)
            reducer = reducer.bind(labels)
        if getattr(reducer, "keeps_terms", False):  # DoNothingReducer: the unreduced terms
            return reducer.terms(self, embeddings, labels, indices_tuple)
        return self.compute_loss(embeddings, labels, indices_tuple, reducer).astype(
            embeddings.dtype
        )

    def compute_loss(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any, reducer: Any
    ) -> jax.Array:
        """Reduce each term of :meth:`compute_terms` with ``reducer`` and add them up.

        Losses over all triplets override this to stream anchor blocks through
        ``reducer.partial`` instead of building a (B, B, B) array of values.
        """
        terms = self.compute_terms(embeddings, labels, indices_tuple)
        total = jnp.zeros((), accumulation_dtype(embeddings.dtype))
        for name, term in terms.items():
            # MultipleReducers: a reducer per sub-loss name.
            red = reducer.for_term(name) if hasattr(reducer, "for_term") else reducer
            value = term.values if term.reduced else red(term.values, term.weights)
            value = jnp.reshape(value, ()).astype(total.dtype)
            total = total + (value if term.scale == 1 else term.scale * value)
        return total
