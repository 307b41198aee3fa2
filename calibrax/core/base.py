"""Base classes shared by every tier.

- :class:`Metric`: tier-0 ``MetricProtocol`` classes, a named wrapper around a pure function.
- :class:`StatefulMetric`: the ``update / compute / reset / merge`` lifecycle on fixed-shape
  :class:`~calibrax.core.state.MetricState` variables.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from calibrax.core.state import MetricState

__all__ = ["Metric", "StatefulMetric"]


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
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def update(self, **kwargs: Any) -> None:
        """Accumulate batch statistics."""
        raise NotImplementedError

    def compute(self) -> dict[str, jax.Array]:
        """Compute final metric values from accumulated statistics."""
        raise NotImplementedError

    def _state_variables(self) -> list[tuple[tuple[Any, ...], MetricState]]:
        return [(path, var) for path, var in nnx.iter_graph(self) if isinstance(var, MetricState)]

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
