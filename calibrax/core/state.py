"""Metric state: a dedicated ``nnx.Variable`` type so it can be filtered, split and checkpointed."""

from __future__ import annotations

from flax import nnx

__all__ = ["FrozenWeight", "MetricState", "TunedWeight"]


class MetricState(nnx.Variable):
    """Accumulated statistics of a metric: fixed-shape arrays, never Python lists.

    Being its own Variable type, metric state can be selected with
    ``nnx.state(metric, MetricState)``, saved with Orbax, and reduced across devices, while
    ``nnx.Optimizer(..., wrt=nnx.Param)`` never sees it.
    """


class FrozenWeight(nnx.Variable):
    """A pretrained weight that must never be trained.

    Not an ``nnx.Param``: optimizers built with ``wrt=nnx.Param`` cannot touch it, and modules that
    hold it apply ``jax.lax.stop_gradient`` when reading it.
    """


class TunedWeight(nnx.Param):
    """A pretrained weight unfrozen for fine-tuning (what a :class:`FrozenWeight` becomes on request).

    An ``nnx.Param``, so gradients flow into it and ``nnx.Optimizer(..., wrt=nnx.Param)`` trains it;
    a type of its own, so it can be told apart from trainable heads
    (``nnx.state(model, TunedWeight)``) and turned back into a :class:`FrozenWeight`. Made only by
    :func:`calibrax.backbones.unfreeze`, never by default.
    """
