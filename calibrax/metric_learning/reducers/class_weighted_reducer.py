"""ClassWeightedReducer: the mean of the loss values, each scaled by its anchor's class weight."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from calibrax.metric_learning.reducers._context import per_anchor
from calibrax.metric_learning.reducers._context import require_labels
from calibrax.metric_learning.reducers.base_reducer import BaseReducer
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype
from calibrax.metric_learning.reducers.base_reducer import safe_mean

__all__ = ["ClassWeightedReducer"]


@dataclasses.dataclass(frozen=True)
class ClassWeightedReducer(BaseReducer):
    """Mean of ``value * weights[label of the anchor]``, as pytorch-metric-learning's.

    Every counted value takes part (zero losses included, as PML's ``torch.mean``), scaled by
    the weight of its anchor's class: the sample's own class for per-sample losses, the anchor's
    for pair and triplet losses. A loss binds the batch labels (``reducer.bind(labels)``); the
    anchor of each value follows from the term's shape (see
    :mod:`calibrax.metric_learning.reducers._context`). Losses that stream triplets per anchor
    (:class:`~calibrax.metric_learning.TripletMarginLoss`) ask for :meth:`at_anchor`.

    Difference from PML: labels outside ``[0, len(weights))`` raise eagerly; under ``jax.jit``
    they give NaN (PML raises a CUDA/index error).

    Args:
        weights: One finite weight per class (a sequence or 1-D array), indexed by label.

    Raises:
        ValueError: If ``weights`` is not a non-empty 1-D sequence of finite numbers.
    """

    anchor_weighted: ClassVar[bool] = True
    weights: Sequence[float] = ()
    labels: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64) if _numeric(self.weights) else None
        if w is None or w.ndim != 1 or w.size == 0:
            raise ValueError(
                "expected `weights` to be a non-empty 1-D sequence of class weights, got "
                f"{_describe(self.weights)}"
            )
        if not np.all(np.isfinite(w)):
            raise ValueError(f"expected `weights` to be finite, got {w.tolist()}")
        object.__setattr__(self, "weights", tuple(float(v) for v in w))

    def bind(self, labels: jax.Array) -> ClassWeightedReducer:
        """This reducer with the batch labels (called by the loss)."""
        return dataclasses.replace(self, labels=labels)

    def _class_weights(self, dtype: Any) -> jax.Array:
        labels = require_labels(self.labels, "ClassWeightedReducer")
        if not isinstance(labels, jax.core.Tracer):
            lab = np.asarray(labels)
            if lab.size and (lab.min() < 0 or lab.max() >= len(self.weights)):
                raise ValueError(
                    f"expected labels in [0, {len(self.weights)}) to index `weights`, got labels "
                    f"in [{int(lab.min())}, {int(lab.max())}]"
                )
        table = jnp.asarray(self.weights, dtype)
        return jnp.take(table, labels, mode="fill", fill_value=jnp.nan)

    def __call__(self, values: jax.Array, weights: jax.Array) -> jax.Array:
        """Weighted mean of ``values`` (counts ``weights``) scaled by the anchors' class weights."""
        acc = accumulation_dtype(values.dtype)
        v = values.astype(acc)
        cw = self._class_weights(acc)
        scale = per_anchor(cw, tuple(v.shape), cw.shape[0])
        total, count = self._masked_sums(v * scale, jnp.asarray(weights).astype(acc), weights > 0)
        return safe_mean(total, count).astype(values.dtype)

    def at_anchor(self, anchor: jax.Array) -> _ScaledMean:
        """The reducer of one anchor's (positive, negative) triplet slice: its class weight."""
        return _ScaledMean(parent=self, anchor=anchor)


@dataclasses.dataclass(frozen=True)
class _ScaledMean(BaseReducer):
    """Mean-reducer partial sums of one anchor's values, scaled by that anchor's class weight."""

    parent: Any = None
    anchor: Any = None

    def partial(self, values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        scale = self.parent._class_weights(values.dtype)[self.anchor]
        return self._masked_sums(values * scale, weights, weights > 0)


def _numeric(x: Any) -> bool:
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        return False
    return arr.dtype.kind in "biuf"


def _describe(x: Any) -> str:
    if _numeric(x):
        return f"shape {np.shape(x)}"
    return type(x).__name__ if not isinstance(x, str) else repr(x)
