"""MultipleReducers: a reducer per sub-loss, the reduced sub-losses summed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from calibrax.metric_learning.reducers.base_reducer import BaseReducer
from calibrax.metric_learning.reducers.mean_reducer import MeanReducer

__all__ = ["MultipleReducers"]


@dataclasses.dataclass(frozen=True)
class MultipleReducers(BaseReducer):
    """One reducer per sub-loss name, as pytorch-metric-learning's ``MultipleReducers``.

    A loss's terms are named as PML's sub-losses (ContrastiveLoss: ``"pos_loss"`` and
    ``"neg_loss"``; single-term losses: ``"loss"``); each term is reduced by
    ``reducers[name]`` (``default_reducer`` for names not given) and the results are summed.
    Terms split by calibrax into two mirrored halves (``"name/rows"``, ``"name/cols"``) use the
    reducer of ``"name"``.

    Args:
        reducers: ``{sub-loss name: reducer}``.
        default_reducer: For the other names (default :class:`~calibrax.metric_learning.MeanReducer`).

    Raises:
        TypeError: If ``reducers`` is not a mapping of names to calibrax reducers, or
            ``default_reducer`` is not a calibrax reducer.
    """

    reducers: Any = dataclasses.field(default_factory=dict)
    default_reducer: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.reducers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, BaseReducer) for k, v in self.reducers.items()
        ):
            raise TypeError(
                "expected `reducers` to map sub-loss names (str) to calibrax.metric_learning "
                f"reducers, got {self.reducers!r}"
            )
        if self.default_reducer is not None and not isinstance(self.default_reducer, BaseReducer):
            raise TypeError(
                "expected `default_reducer` to be a calibrax.metric_learning reducer or None, "
                f"got {type(self.default_reducer).__name__}"
            )
        object.__setattr__(self, "reducers", tuple(sorted(self.reducers.items())))

    def __hash__(self) -> int:
        return hash((self.reducers, self.default_reducer))

    @property
    def anchor_weighted(self) -> bool:
        """Whether any of the reducers weights values by their anchor."""
        rs = [r for _, r in self.reducers] + [self.default_reducer]
        return any(getattr(r, "anchor_weighted", False) for r in rs)

    def for_term(self, name: str) -> BaseReducer:
        """The reducer of the sub-loss ``name`` (a ``"/rows"`` or ``"/cols"`` suffix ignored)."""
        base = name.split("/", 1)[0]
        table = dict(self.reducers)
        if base in table:
            return table[base]
        return self.default_reducer if self.default_reducer is not None else MeanReducer()

    def bind(self, labels: jax.Array) -> MultipleReducers:
        """Pass the batch labels on to the reducers that use them."""

        def bound(r: Any) -> Any:
            b = getattr(r, "bind", None)
            return r if b is None or r is None else b(labels)

        new = {k: bound(v) for k, v in self.reducers}
        return MultipleReducers(new, bound(self.default_reducer))

    def __call__(self, values: jax.Array, weights: jax.Array) -> jax.Array:
        """Reduce a single-term loss (the ``"loss"`` sub-loss)."""
        return self.for_term("loss")(values, weights)

    def finalize(self, total: jax.Array, count: jax.Array) -> jax.Array:
        """The ``"loss"`` reducer's finalize (single-term losses that stream, via :meth:`at_anchor`)."""
        return self.for_term("loss").finalize(total, count)

    def at_anchor(self, anchor: jax.Array) -> BaseReducer:
        """The ``"loss"`` reducer's per-anchor reducer (for triplet losses streaming anchors)."""
        r = self.for_term("loss")
        at = getattr(r, "at_anchor", None)
        return r if at is None else at(anchor)
