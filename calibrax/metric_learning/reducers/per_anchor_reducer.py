"""PerAnchorReducer: average each anchor's pair losses, then reduce the per-anchor values."""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp

from calibrax.metric_learning.reducers._context import anchor_axis_kind
from calibrax.metric_learning.reducers.base_reducer import BaseReducer
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype
from calibrax.metric_learning.reducers.base_reducer import safe_mean
from calibrax.metric_learning.reducers.mean_reducer import MeanReducer

__all__ = ["PerAnchorReducer"]


@dataclasses.dataclass(frozen=True)
class PerAnchorReducer(BaseReducer):
    """Per-anchor mean of the pair losses, then ``reducer`` over all anchors, as PML's.

    For a pair term (values (B, N), anchors on the rows) each anchor's value is the mean of its
    selected pairs' losses, each distinct pair once (PML writes the losses into a (B, B) array,
    so a pair mined twice counts once), and 0 for an anchor without pairs; every anchor then
    takes part in ``reducer`` with weight 1. Per-sample terms go to ``reducer`` as they are.
    Triplet losses are not supported, as in PML.

    Args:
        reducer: The reducer of the per-anchor values (default
            :class:`~calibrax.metric_learning.MeanReducer`).

    Raises:
        TypeError: If ``reducer`` is not a calibrax reducer.
    """

    anchor_weighted: ClassVar[bool] = True
    reducer: Any = None

    def __post_init__(self) -> None:
        if self.reducer is not None and not isinstance(self.reducer, BaseReducer):
            raise TypeError(
                "expected `reducer` to be a calibrax.metric_learning reducer or None, got "
                f"{type(self.reducer).__name__}"
            )

    @property
    def inner(self) -> BaseReducer:
        """The reducer of the per-anchor values."""
        return self.reducer if self.reducer is not None else MeanReducer()

    def bind(self, labels: jax.Array) -> PerAnchorReducer:
        """Pass the batch labels on to the inner reducer (when it uses them)."""
        bind = getattr(self.inner, "bind", None)
        return self if bind is None else dataclasses.replace(self, reducer=bind(labels))

    def __call__(self, values: jax.Array, weights: jax.Array) -> jax.Array:
        """Reduce one loss term (see the class doc)."""
        weights = jnp.asarray(weights)
        shape = tuple(values.shape)
        if len(shape) != 2 or shape[1] == 1 or anchor_axis_kind(shape, shape[0]) != "pair":
            return self.inner(values, weights)
        acc = accumulation_dtype(values.dtype)
        keep = weights > 0
        total = jnp.sum(jnp.where(keep, values.astype(acc), jnp.zeros((), acc)), axis=1)
        per_row = safe_mean(total, jnp.sum(keep, axis=1).astype(acc))
        return self.inner(per_row.astype(values.dtype), jnp.ones(shape[0], acc)).astype(
            values.dtype
        )

    def at_anchor(self, anchor: jax.Array) -> BaseReducer:
        """Triplet losses stream per anchor: not supported, as in PML."""
        raise NotImplementedError("PerAnchorReducer: triplet reduction not supported")
