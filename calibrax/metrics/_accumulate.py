"""Shared shells of the tier-0 streaming metrics.

- :class:`SumCountMetric`: state (total, count), for every metric that is a mean of a per-sample
  quantity (MSE, MAE, accuracy, log loss, Brier, NLL, ...). Additive, so the default ``merge`` and
  ``reduce`` of :class:`~calibrax.core.StatefulMetric` apply.
- :class:`ChanMetric`: centred statistics (means and centred sums of squares) that merge with the
  parallel update of Chan et al. (1979); ``merge`` and ``reduce`` are overridden.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.core.base import StatefulMetric
from calibrax.core.state import MetricState

__all__ = ["ChanMetric", "SumCountMetric"]


class SumCountMetric(StatefulMetric):
    """Streaming ``total / total_weight`` where each batch adds to both.

    State: ``total`` (the weighted sum of the per-sample quantity), ``total_weight`` (the sum of the
    weights of the samples seen, their number without ``sample_weight``) and ``count`` (the
    number of unmasked samples, an exact integer). ``update`` takes ``mask=`` and
    ``sample_weight=`` (one weight per row; a row of several elements gives each its weight).

    Subclasses set ``name``, ``higher_is_better``, and implement :meth:`_check` (input validation),
    :meth:`_batch` (the functional ``_update``: batch to ``(total, count)``) and optionally
    :meth:`_finish` (the functional ``_compute``).
    """

    def __init__(self, *, dtype: Any = jnp.float32) -> None:
        dt = dtype
        self.total = MetricState(jnp.zeros((), dt))
        self.total_weight = MetricState(jnp.zeros((), dt))
        self.count = MetricState(jnp.zeros((), jnp.int32))

    def _check(self, predictions: jax.Array, targets: jax.Array) -> None:
        raise NotImplementedError

    def _batch(self, predictions: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def _finish(self, total: jax.Array, count: jax.Array) -> jax.Array:
        return total / count.astype(total.dtype)

    def update(
        self,
        *,
        predictions: jax.Array,
        targets: jax.Array,
        mask: jax.Array | None = None,
        sample_weight: jax.Array | None = None,
        **kwargs: Any,
    ) -> None:
        """Add a batch; keyword arguments other than these are ignored.

        Args:
            predictions: The batch's predictions (rows on axis 0).
            targets: The batch's targets.
            mask: Optional ``(batch,)`` bool / 0-1 vector; masked rows change nothing.
            sample_weight: Optional ``(batch,)`` weights >= 0 of a weighted mean.
            **kwargs: Ignored (other metrics' inputs in ``nnx.MultiMetric``).
        """
        del kwargs
        rows = self._rows(predictions, mask, sample_weight)
        if rows is None:
            return
        self._check(*rows.select(predictions, targets))
        dtype = self.total[...].dtype
        if rows.all:
            total, count = self._batch(predictions, targets)
            weight = count.astype(dtype)
        else:
            per_total, per_count = jax.vmap(lambda p, t: self._batch(p[None], t[None]))(
                predictions, targets
            )
            total, weight, count = rows.weighted_sums(
                per_total, per_count, dtype, self.count[...].dtype
            )
        self.total[...] = self.total[...] + total.astype(dtype)
        self.total_weight[...] = self.total_weight[...] + weight
        self.count[...] = self.count[...] + count.astype(self.count[...].dtype)

    def compute(self) -> dict[str, jax.Array]:
        """``{name: value}``; raises eagerly before any sample (NaN under jit)."""
        checks.check_accumulated(self.count[...], 1)
        return {self.name: self._finish(self.total[...], self.total_weight[...])}


class ChanMetric(StatefulMetric):
    """Centred statistics merged exactly with Chan et al.'s parallel update.

    Subclasses list their state variable names in ``_fields`` (the order of the functional
    statistics tuple, count first), and set ``_merge_stats``, ``_batch_stats``, ``_compute_stats``
    and ``_min_samples``.
    """

    _fields: ClassVar[tuple[str, ...]]
    _min_samples: ClassVar[int] = 2
    _merge_stats: ClassVar[Callable[..., tuple[jax.Array, ...]]]
    _batch_stats: ClassVar[Callable[..., tuple[jax.Array, ...]]]
    _compute_stats: ClassVar[Callable[..., jax.Array]]

    def __init__(self, *, dtype: Any = jnp.float32) -> None:
        self.count = MetricState(jnp.zeros((), jnp.int32))
        for field in self._fields[1:]:
            setattr(self, field, MetricState(jnp.zeros((), dtype)))

    def _check(self, predictions: jax.Array, targets: jax.Array) -> None:
        raise NotImplementedError

    def _stats(self) -> tuple[jax.Array, ...]:
        return tuple(getattr(self, f)[...] for f in self._fields)

    def _set(self, stats: tuple[jax.Array, ...]) -> None:
        for field, value in zip(self._fields, stats, strict=True):
            var = getattr(self, field)
            var[...] = value.astype(var[...].dtype)

    def update(
        self,
        *,
        predictions: jax.Array,
        targets: jax.Array,
        mask: jax.Array | None = None,
        **kwargs: Any,
    ) -> None:
        """Add a batch; keyword arguments other than these are ignored.

        Args:
            predictions: The batch's predictions (rows on axis 0).
            targets: The batch's targets.
            mask: Optional ``(batch,)`` bool / 0-1 vector; masked rows change nothing (their
                per-row statistics are merged as empty sets, to float rounding of the unmasked
                batch).
            **kwargs: Ignored (other metrics' inputs in ``nnx.MultiMetric``).
        """
        del kwargs
        rows = self._rows(predictions, mask)
        if rows is None:
            return
        self._check(*rows.select(predictions, targets))
        mine = self._stats()
        if rows.keep is None:
            stats = self._batch_stats(predictions, targets)
        else:
            per_row = jax.vmap(lambda p, t: self._batch_stats(p[None], t[None]))(
                predictions, targets
            )
            stats = self._tree_merge(tuple(rows.where(s) for s in per_row))
        batch = tuple(b.astype(m.dtype) for b, m in zip(stats, mine, strict=True))
        self._set(self._merge_stats(mine, batch))

    def _tree_merge(self, stats: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        """Merge statistics stacked on axis 0 into one set, pairwise (each level one vector merge)."""
        while stats[0].shape[0] > 1:
            size = stats[0].shape[0]
            even = size - size % 2
            merged = self._merge_stats(
                tuple(s[0:even:2] for s in stats), tuple(s[1:even:2] for s in stats)
            )
            if size % 2:
                merged = tuple(
                    jnp.concatenate([m, s[-1:]]) for m, s in zip(merged, stats, strict=True)
                )
            stats = merged
        return tuple(s[0] for s in stats)

    def merge(self, other: StatefulMetric) -> None:
        """Combine ``other``'s statistics into this metric (exact parallel update).

        Raises:
            TypeError: If ``other`` is a different metric class.
            ValueError: If the state shapes or dtypes differ.
        """
        self._check_mergeable(other)
        self._set(self._merge_stats(self._stats(), other._stats()))

    def reduce(self, axis_name: str) -> None:
        """Merge the statistics of every member of the named mesh axis (inside ``shard_map``)."""
        stats = tuple(jax.lax.all_gather(s, axis_name) for s in self._stats())
        self._set(self._tree_merge(stats))

    def compute(self) -> dict[str, jax.Array]:
        """``{name: value}``; raises eagerly with too few samples (unchecked under jit)."""
        checks.check_accumulated(self.count[...], self._min_samples)
        return {self.name: self._compute_stats(*self._stats())}
