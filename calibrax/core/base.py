"""Base classes shared by every tier.

- :class:`Metric`: tier-0 ``MetricProtocol`` classes, a named wrapper around a pure function.
- :class:`StatefulMetric`: the ``update / compute / reset / merge`` lifecycle on fixed-shape
  :class:`~calibrax.core.state.MetricState` variables.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any
from typing import ClassVar
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calibrax.core import checks
from calibrax.core.state import MetricState

__all__ = ["Metric", "Rejected", "Rows", "StatefulMetric"]


class Rows(NamedTuple):
    """Which rows of a batch an ``update`` folds in, and with what weight.

    Made by :meth:`StatefulMetric._rows`, the one place where ``mask=``, ``sample_weight=`` and
    empty batches are interpreted.

    Attributes:
        keep: ``(batch,)`` bool, ``None`` when every row counts.
        weight: ``(batch,)`` float weights, ``None`` when every row weighs 1.
    """

    keep: jax.Array | None
    weight: jax.Array | None

    @property
    def all(self) -> bool:
        """Whether every row counts with weight 1 (the unmasked fast path applies)."""
        return self.keep is None and self.weight is None

    def select(self, *arrays: Any) -> tuple[Any, ...]:
        """The kept rows of each array when the mask is concrete (for eager value checks).

        Under tracing the arrays come back whole: value checks do not run there anyway, and shape
        checks see the padded batch, whose trailing shape is the same.
        """
        if self.keep is None or not checks.is_concrete(self.keep):
            return arrays
        rows = np.asarray(self.keep)
        return tuple(a if a is None else a[rows] for a in arrays)

    def compact(self, *arrays: Any) -> tuple[Rows, tuple[Any, ...]]:
        """With a concrete mask, drop the masked rows: the update then sees a plain batch.

        For updates whose computation itself validates its input (a network on images): eagerly,
        padding never reaches it. Under tracing nothing changes (shapes must stay fixed).
        """
        if self.keep is None or not checks.is_concrete(self.keep):
            return self, arrays
        kept = np.asarray(self.keep)
        weight = None if self.weight is None else self.weight[kept]
        return Rows(None, weight), tuple(a if a is None else a[kept] for a in arrays)

    def factor(self, dtype: Any) -> jax.Array:
        """Per-row multiplier in ``dtype``: the weight (1 without weights), 0 for masked rows."""
        if self.weight is not None:
            base = self.weight.astype(dtype)
        else:
            base = jnp.ones(self.keep.shape, dtype)
        if self.keep is None:
            return base
        return jnp.where(self.keep, base, jnp.zeros((), dtype))

    def weighted_sums(
        self, per_total: jax.Array, per_count: jax.Array, dtype: Any, count_dtype: Any
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(Σ w·total, Σ w·count, Σ count)`` over the kept rows, from per-row statistics.

        The state increments of an average (``total / weight``) whose row ``i`` adds
        ``per_total[i]`` over ``per_count[i]`` elements; the last sum is the exact row count.
        """
        factor = self.factor(dtype)
        total = jnp.sum(self.where(per_total.astype(dtype) * factor))
        weight = jnp.sum(self.where(per_count.astype(dtype) * factor))
        count = jnp.sum(self.where(per_count), dtype=count_dtype)
        return total, weight, count

    def where(self, values: jax.Array, fill: Any = 0) -> jax.Array:
        """``values`` with masked rows (axis 0) replaced by ``fill`` (NaN-safe, unlike a product)."""
        if self.keep is None:
            return values
        keep = self.keep.reshape(self.keep.shape + (1,) * (values.ndim - 1))
        return jnp.where(keep, values, jnp.asarray(fill, values.dtype))


class Metric:
    """Base for tier-0 metrics that satisfy ``MetricProtocol``.

    Subclasses set the class attributes ``name`` and ``higher_is_better`` and implement
    :meth:`validate_inputs` and :meth:`_compute`. :meth:`compute` always validates first, so a bad
    input is a clear error rather than a wrong number. The keyword arguments given to the
    constructor are stored in ``self.config`` and passed to ``_compute``.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def __init__(self, **config: Any) -> None:
        self.config = dict(config)

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Validate that inputs are compatible for metric computation.

        Raises:
            ValueError: If inputs are incompatible.
            TypeError: If a dtype is wrong.
        """
        raise NotImplementedError

    def _compute(self, predictions: jax.Array, targets: jax.Array, **config: Any) -> Any:
        raise NotImplementedError

    def compute(self, predictions: jax.Array, targets: jax.Array) -> Any:
        """Validate the inputs, then compute the metric value."""
        self.validate_inputs(predictions, targets)
        return self._compute(predictions, targets, **self.config)

    def __call__(self, predictions: jax.Array, targets: jax.Array) -> Any:
        return self.compute(predictions, targets)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


def _where(path: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in path)


class Rejected(MetricState):
    """Rows rejected by value checks traced inside ``update`` (see :mod:`calibrax.core.checks`).

    Kept by :class:`StatefulMetric` itself (``rejected_rows``: how many rows broke a rule;
    ``rejected_rule``: the code of the first rule broken, 0 for none) and combined by its
    lifecycle methods, never by a subclass's statistics: ``merge`` adds the counts, ``reduce``
    sums them over the mesh axis.
    """


_LIFECYCLE = ("__init__", "update", "compute", "reset", "merge", "reduce")
_running = threading.local()


def _lifecycle(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a lifecycle method so the outermost call (not a ``super()`` chain) also keeps the
    rejected-row state."""

    @functools.wraps(method)
    def wrapped(self: StatefulMetric, *args: Any, **kwargs: Any) -> Any:
        running = _running.__dict__.setdefault("calls", set())
        key = (id(self), name)
        if key in running:
            return method(self, *args, **kwargs)
        running.add(key)
        try:
            return getattr(self, f"_rejected_{name.strip('_')}")(method, *args, **kwargs)
        finally:
            running.discard(key)

    return wrapped


class StatefulMetric(nnx.Module):
    """Base for streaming metrics (tiers 0-2): ``update``, ``compute``, ``reset``, ``merge``.

    State lives in :class:`MetricState` variables of fixed shape, so ``update`` runs under
    ``nnx.jit`` (or ``jax.jit`` via ``nnx.split``/``nnx.merge``), the state can be saved with Orbax,
    and it can be summed across devices.

    The defaults suit additive state (sums and counts): :meth:`reset` zeroes every
    :class:`MetricState` and :meth:`merge` adds them; :meth:`reduce` sums them over a named mesh
    axis with ``lax.psum``. Metrics whose state is not additive override these.

    ``update`` takes keyword arguments and ignores the ones it does not use, so a metric works
    inside ``nnx.MultiMetric`` next to metrics that take other inputs.

    Masks, weights and empty batches follow one rule, applied by :meth:`_rows` in every
    ``update``: ``mask=`` is a ``(batch,)`` bool (or 0/1 integer) vector and masked rows change
    nothing, so a padded last batch with its padding masked gives the state of the unpadded batch
    (under ``nnx.jit`` with fixed shapes too; padded rows may hold anything, NaN included). A
    batch with zero rows, or whose mask is all false, is a no-op. Averages (tier-0 means and the
    tier-2 distances) also take ``sample_weight=``, a ``(batch,)`` vector of weights >= 0; other
    metrics ignore it like any keyword they do not use. Eager value checks (NaN/Inf, ranges) look
    only at the kept rows.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _LIFECYCLE:
            if name in cls.__dict__:
                setattr(cls, name, _lifecycle(name, cls.__dict__[name]))

    def update(self, **kwargs: Any) -> None:
        """Accumulate batch statistics."""
        raise NotImplementedError

    # Bad values under jit (calibrax.core.checks): the rejected-row state, kept by the outermost
    # call of each lifecycle method.
    def _rejected(self) -> tuple[Rejected, Rejected] | None:
        rows = vars(self).get("rejected_rows")
        return None if rows is None else (rows, self.rejected_rule)

    def _rejected_init(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        method(self, *args, **kwargs)
        if self._rejected() is None:
            self.rejected_rows = Rejected(jnp.zeros((), jnp.int32))
            self.rejected_rule = Rejected(jnp.zeros((), jnp.int32))

    def _rejected_update(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with checks.collect() as scope:
            out = method(self, *args, **kwargs)
        state = self._rejected()
        if scope.problems and state is not None:
            rows, rule = state
            n, code = scope.rejected()
            rows[...] = rows[...] + n
            rule[...] = jnp.where(rule[...] == 0, code, rule[...])
        return out

    def _rejected_compute(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        state = self._rejected()
        if state is None:
            return method(self, *args, **kwargs)
        rows, rule = state
        if checks.is_concrete(rows[...]):
            n = int(rows[...])
            if n:
                raise ValueError(checks.jit_message(int(rule[...]), n))
            return method(self, *args, **kwargs)
        return checks.nan_unless(method(self, *args, **kwargs), rows[...] == 0)

    def _rejected_reset(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        method(self, *args, **kwargs)
        state = self._rejected()
        # Real statistics that survive a reset may hold the rejected rows: so does the count.
        if state is not None and getattr(self, "reset_real_features", True):
            for var in state:
                var[...] = jnp.zeros_like(var[...])

    def _rejected_merge(self, method: Callable[..., Any], other: Any, *args: Any) -> None:
        method(self, other, *args)
        mine, theirs = self._rejected(), other._rejected()
        if mine is not None and theirs is not None:
            mine[0][...] = mine[0][...] + theirs[0][...]
            mine[1][...] = jnp.where(mine[1][...] == 0, theirs[1][...], mine[1][...])

    def _rejected_reduce(self, method: Callable[..., Any], axis_name: str, *args: Any) -> None:
        method(self, axis_name, *args)
        state = self._rejected()
        if state is not None:
            state[0][...] = jax.lax.psum(state[0][...], axis_name)
            state[1][...] = jax.lax.pmax(state[1][...], axis_name)

    @staticmethod
    def _rows(batch: Any, mask: Any = None, sample_weight: Any = None) -> Rows | None:
        """The rows an update folds in; ``None`` when the update is a no-op.

        Args:
            batch: The batch's leading array (its first axis is the row axis).
            mask: ``None`` or a ``(batch,)`` bool / 0-1 integer vector.
            sample_weight: ``None`` or a ``(batch,)`` vector of floats >= 0.

        Returns:
            ``None`` for a zero-row batch or a concrete all-false mask (nothing to do), else the
            validated :class:`Rows`.

        Raises:
            ValueError: On a mask or weights of the wrong shape or (eagerly) values.
            TypeError: On a mask or weights of the wrong dtype.
        """
        shape = np.shape(batch)
        if not shape:
            # A rank error is the update's own check to raise; a scalar has no rows to mask.
            return Rows(None, None)
        n = shape[0]
        keep = None if mask is None else checks.check_mask(mask, n)
        if keep is not None and not checks.is_concrete(keep):
            checks.note_rows(keep)
        weight = None if sample_weight is None else checks.check_sample_weight(sample_weight, n)
        if n == 0:
            return None
        if keep is not None and checks.is_concrete(keep):
            kept = np.asarray(keep)
            if not kept.any():
                return None
            if kept.all():
                keep = None
        return Rows(keep, weight)

    def compute(self) -> dict[str, jax.Array]:
        """Compute final metric values from accumulated statistics."""
        raise NotImplementedError

    def _state_variables(self) -> list[tuple[tuple[Any, ...], MetricState]]:
        return [
            (path, var)
            for path, var in nnx.iter_graph(self)
            if isinstance(var, MetricState) and not isinstance(var, Rejected)
        ]

    def reset(self) -> None:
        """Reset accumulated state for a new evaluation run (zeroes every MetricState)."""
        for _, var in self._state_variables():
            var[...] = jnp.zeros_like(var[...])

    def _check_mergeable(self, other: StatefulMetric) -> None:
        if type(other) is not type(self):
            raise TypeError(
                f"expected `other` to be a {type(self).__name__}, got {type(other).__name__}"
            )
        mine = dict(self._state_variables())
        theirs = dict(other._state_variables())
        if mine.keys() != theirs.keys():
            raise ValueError(
                f"expected `other` to have the state variables {sorted(map(_where, mine))}, "
                f"got {sorted(map(_where, theirs))}"
            )
        for path, var in mine.items():
            a, b = var[...], theirs[path][...]
            if a.shape != b.shape or a.dtype != b.dtype:
                where = _where(path)
                raise ValueError(
                    f"expected state `{where}` of `other` to have shape {a.shape} and dtype "
                    f"{a.dtype}, got shape {b.shape} and dtype {b.dtype}"
                )

    def merge(self, other: StatefulMetric) -> None:
        """Combine ``other``'s accumulated state into this metric (adds every MetricState).

        Raises:
            TypeError: If ``other`` is a different metric class.
            ValueError: If the state shapes or dtypes differ (different configuration).
        """
        self._check_mergeable(other)
        theirs = dict(other._state_variables())
        for path, var in self._state_variables():
            var[...] = var[...] + theirs[path][...]

    def reduce(self, axis_name: str) -> None:
        """Sum the state over the named mesh axis (inside ``shard_map`` / ``pmap``)."""
        for _, var in self._state_variables():
            var[...] = jax.lax.psum(var[...], axis_name)


for _name in _LIFECYCLE[1:]:
    setattr(StatefulMetric, _name, _lifecycle(_name, StatefulMetric.__dict__[_name]))
del _name
