"""Metric state: a dedicated ``nnx.Variable`` type so it can be filtered, split and checkpointed."""

from __future__ import annotations

from flax import nnx

__all__ = ["FrozenHead", "FrozenWeight", "MetricState", "TunedWeight"]


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


class FrozenHead(nnx.Variable):
    """A learned head's weight (official or trained) loaded for evaluation: never trained.

    What the heads of a tier-2 metric (LPIPS's per-tap weights, DISTS's alpha/beta) hold unless the
    metric is built for training. Not an ``nnx.Param``, so a model that uses the metric as a loss
    and is trained with ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` cannot move it (the failure
    behind torchmetrics' "LPIPS returns negative values", their issue 2315), and the metric reads
    it through ``jax.lax.stop_gradient``. A type apart from :class:`FrozenWeight` so that
    unfreezing a trunk (:func:`calibrax.backbones.unfreeze`) and training heads
    (``set_trainable``) stay separate choices. Checkpoints store values by path, not by type: a
    head saved trainable restores into a frozen one and back.
    """
