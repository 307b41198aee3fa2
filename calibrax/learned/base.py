"""The tier-2 base: a frozen trunk plus trainable calibration heads, with the metric lifecycle.

A learned metric is a distance ``d(x, y)`` computed by a frozen pretrained trunk (weights in
:class:`~calibrax.core.FrozenWeight`, never trained unless asked) and small calibration heads
trained on judgments. As a streaming metric it accumulates the distances of the pairs it is given
(``update(predictions=..., targets=...)``) and reports their mean or sum.

Frozen unless built for training: the heads live under the ``heads`` attribute and hold
:class:`~calibrax.core.FrozenHead` weights (not ``nnx.Param``: an optimizer over a model that uses
the metric as a loss cannot touch them) unless the metric is built with ``trainable=True``, made
trainable with :meth:`LearnedMetric.set_trainable`, or handed to the training loop
(:func:`calibrax.learned.train_lpips` makes them trainable for the run and hands the model back
as it came).

To define your own: subclass :class:`LearnedMetric`, build the trunk and the ``heads`` in
``__init__`` (call ``super().__init__(reduction=...)``; create head weights with
:func:`head_weight` and read them with :func:`read_head`), implement :meth:`distance`, and, if the
heads have a constraint, :meth:`project`. :func:`calibrax.learned.fit` trains any such module with
optax.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.base import StatefulMetric
from calibrax.core.state import FrozenHead
from calibrax.core.state import MetricState

__all__ = ["LearnedMetric", "head_weight", "read_head"]

REDUCTIONS = ("mean", "sum")


def head_weight(value: jax.Array, *, trainable: bool) -> nnx.Variable:
    """A head weight: an ``nnx.Param`` if ``trainable``, otherwise a :class:`FrozenHead`."""
    return nnx.Param(value) if trainable else FrozenHead(value)


def read_head(variable: nnx.Variable, dtype: jnp.dtype) -> jax.Array:
    """A head weight's value cast to ``dtype``; gradients stopped unless it is an ``nnx.Param``."""
    value = jnp.asarray(variable[...]).astype(dtype)
    return value if isinstance(variable, nnx.Param) else jax.lax.stop_gradient(value)


def _swap_heads(heads: nnx.Module, source: type, make: type) -> int:
    """Replace every variable of exactly type ``source`` under ``heads`` by ``make(value)``."""
    owners = [
        node
        for _, node in nnx.iter_graph(heads)
        if nnx.graph.is_graph_node(node) and not isinstance(node, nnx.Variable)
    ]
    count = 0
    for owner in owners:
        for key, child in list(nnx.iter_children(owner)):
            if type(child) is not source:
                continue
            if isinstance(owner, nnx.List):
                owner[int(key)] = make(child[...])
            else:
                setattr(owner, str(key), make(child[...]))
            count += 1
    return count


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

    @property
    def trainable(self) -> bool:
        """Whether the heads are ``nnx.Param`` (trainable) rather than :class:`FrozenHead`."""
        heads = getattr(self, "heads", None)
        return heads is not None and bool(nnx.to_flat_state(nnx.state(heads, nnx.Param)))

    def set_trainable(self, trainable: bool) -> int:
        """Make the heads trainable (``nnx.Param``) or frozen (:class:`FrozenHead`), in place.

        Values are unchanged; only the variable type (which decides what
        ``nnx.Optimizer(..., wrt=nnx.Param)`` updates and where gradients flow) is swapped. The
        trunk is not touched (see ``tune`` and :func:`calibrax.backbones.unfreeze` for it).

        Returns:
            The number of head weights whose type changed (0 if they already were as asked).
        """
        heads = getattr(self, "heads", None)
        if heads is None:
            return 0
        if trainable:
            return _swap_heads(heads, FrozenHead, nnx.Param)
        return _swap_heads(heads, nnx.Param, FrozenHead)

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
