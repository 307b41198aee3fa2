"""The regularizer interface: a (N, D) matrix of embeddings or class weights in, a scalar out."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.metric_learning.reducers.base_reducer import BaseReducer
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype
from calibrax.metric_learning.reducers.mean_reducer import MeanReducer

__all__ = ["BaseRegularizer", "regularizer_example"]


def regularizer_example(make: Any) -> Any:
    """A registry ``example``: ``make()`` builds the regularizer; the argument is a (6, 4)
    matrix (6 class weights or embeddings)."""

    def example() -> tuple[Any, tuple[jax.Array]]:
        x = jax.random.normal(jax.random.key(0), (6, 4), jnp.float32)

        def fn(x: jax.Array) -> jax.Array:
            return make()(x)

        return fn, (x,)

    return example


@dataclasses.dataclass(frozen=True)
class BaseRegularizer:
    """Base for regularizers, as pytorch-metric-learning's ``BaseRegularizer``.

    ``regularizer(x)`` takes a (N, D) matrix (the class weights of a loss, one row per class or
    sub-centre, or a batch of embeddings), computes one value per row (or per pair) with
    :meth:`compute_values` and reduces them with ``reducer`` (default
    :class:`~calibrax.metric_learning.MeanReducer`, as in pytorch-metric-learning). Losses take a
    regularizer as ``weight_regularizer=`` (class-weight losses) or ``embedding_regularizer=``
    (every loss) and add ``reg_weight * regularizer(...)``.

    The arithmetic runs in float32 for half-precision inputs; the result has the input's dtype.

    Args:
        reducer: A calibrax.metric_learning reducer, or None for the default.
    """

    reducer: BaseReducer | None = None

    def default_reducer(self) -> BaseReducer:
        """The reducer used when none is given."""
        return MeanReducer()

    def compute_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(values, weights)`` of any fixed shape; implemented by each regularizer."""
        raise NotImplementedError

    def reduce(self, values: jax.Array, weights: jax.Array) -> jax.Array:
        """Reduce the values (the default reducer unless one was given)."""
        reducer = self.reducer if self.reducer is not None else self.default_reducer()
        return reducer(values, weights)

    def __call__(self, x: Any) -> jax.Array:
        """The scalar regularization loss of ``x``.

        Args:
            x: (N, D) floating.

        Returns:
            A differentiable scalar in the dtype of ``x`` (NaN under jit when ``x`` holds
            NaN/Inf).

        Raises:
            ValueError: If ``x`` is not 2-D, is empty or holds NaN/Inf (eagerly).
            TypeError: If ``x`` is not floating.
        """
        checks.check_rank(x, 2, "x", "rows, embedding_dim")
        checks.check_floating(x, "x")
        checks.check_nonempty(x, "x")
        checks.check_finite(x, "x")
        x = jnp.asarray(x)
        work = x.astype(accumulation_dtype(x.dtype))
        values, weights = self.compute_values(work)
        out = self.reduce(values, weights)
        # Under jit a NaN/Inf input must not give a plausible number (a norm's safe square root
        # would turn a NaN row into 0).
        out = jnp.where(jnp.all(jnp.isfinite(work)), out, jnp.nan)
        return out.astype(x.dtype)
