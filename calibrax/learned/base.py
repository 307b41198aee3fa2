"""The tier-2 base: a frozen trunk plus trainable calibration heads, with the metric lifecycle.

A learned metric is a distance ``d(x, y)`` computed by a frozen pretrained trunk (weights in
:class:`~calibrax.core.FrozenWeight`, never trained unless asked) and small calibration heads
(``nnx.Param``) trained on judgments. As a streaming metric it accumulates the distances of the
pairs it is given (``update(predictions=..., targets=...)``) and reports their mean or sum.

To define your own: subclass :class:`LearnedMetric`, build the trunk and heads in ``__init__``
(call ``super().__init__(reduction=...)``), implement :meth:`distance`, and, if the heads have a
constraint, :meth:`project`. :func:`calibrax.learned.fit` trains any such module with optax.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.base import StatefulMetric
from calibrax.core.state import MetricState

__all__ = ["LearnedMetric"]

REDUCTIONS = ("mean", "sum")


class LearnedMetric(StatefulMetric):
    """Base class of tier-2 metrics (see the module docstring).

    Args:
        reduction: ``"mean"`` or ``"sum"`` of the accumulated distances.

    Raises:
        ValueError: If ``reduction`` is not one of ``"mean"``, ``"sum"``.
    """

    name: ClassVar[str] = "learned_distance"
    higher_is_better: ClassVar[bool] = False

    def __init__(self, *, reduction: str = "mean") -> None:
        checks.check_choice(reduction, REDUCTIONS, "reduction")
        self.reduction = reduction
        self.total = MetricState(jnp.zeros((), jnp.float32))
        self.total_weight = MetricState(jnp.zeros((), jnp.float32))
        self.count = MetricState(jnp.zeros((), jnp.int32))

    def distance(self, x: jax.Array, y: jax.Array) -> Float[Array, " batch"]:
        """One distance per pair of the batch."""
        raise NotImplementedError

    def project(self) -> None:
        """Map the trainable heads back onto their constraint set (called after every step)."""

    def update(
        self,
        *,
        predictions: jax.Array,
        targets: jax.Array,
        mask: jax.Array | None = None,
        sample_weight: jax.Array | None = None,
        **kwargs: Any,
    ) -> None:
        """Accumulate the distances between ``predictions`` and ``targets`` (pairwise by row).

        Args:
            predictions: The first image of each pair.
            targets: The second image of each pair.
            mask: Optional ``(batch,)`` bool / 0-1 vector; masked pairs change nothing.
            sample_weight: Optional ``(batch,)`` weights >= 0; ``compute`` is then the weighted
                mean (``reduction="sum"``: the weighted sum).
            **kwargs: Ignored (other metrics' inputs in ``nnx.MultiMetric``).
        """
        del kwargs
        rows = self._rows(predictions, mask, sample_weight)
        if rows is None:
            return
        rows, (predictions, targets) = rows.compact(predictions, targets)
        d = jax.lax.stop_gradient(self.distance(predictions, targets)).astype(jnp.float32)
        if rows.all:
            total, weight, count = jnp.sum(d), jnp.float32(d.shape[0]), jnp.int32(d.shape[0])
        else:
            ones = jnp.ones(d.shape[0], jnp.int32)
            total, weight, count = rows.weighted_sums(d, ones, jnp.float32, jnp.int32)
        self.total[...] = self.total[...] + total
        self.total_weight[...] = self.total_weight[...] + weight
        self.count[...] = self.count[...] + count

    def compute(self) -> dict[str, jax.Array]:
        """The mean (or sum) of every distance accumulated since the last reset.

        The mean of no pairs is NaN: there is nothing to average.
        """
        if self.reduction == "sum":
            return {self.name: self.total[...]}
        return {self.name: self.total[...] / self.total_weight[...]}

    def _check_mergeable(self, other: StatefulMetric) -> None:
        super()._check_mergeable(other)
        if other.reduction != self.reduction:
            raise ValueError(
                f"expected `other` to use reduction {self.reduction!r}, got {other.reduction!r}"
            )
