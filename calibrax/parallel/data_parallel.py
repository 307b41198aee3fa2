"""Data-parallel training steps on one host: parameters replicated, the batch split over devices.

:func:`data_parallel_train_step` builds the jitted step of :func:`calibrax.learned.fit` for a
mesh: the module and optimizer state are replicated (``NamedSharding(mesh, P())``), the batch is
split along its leading axis over the ``data`` axis (``NamedSharding(mesh, P("data"))``), and
``jax.jit`` compiles the step of the *global* batch. XLA partitions the forward and backward
passes over the devices and inserts the collectives itself:

- the loss sees the whole batch, so batch-coupled losses (triplets and their miners, contrastive,
  NT-Xent, SupCon) use every cross-device pair exactly as on one device;
- for a loss that is a mean over samples, the gradient is the mean over devices of the
  per-device gradients: XLA all-reduces the partial gradient sums, and the step constrains the
  gradients to be replicated before the optimizer update, so every device applies the same
  update and the parameters stay replicated.

The result is the one-device step up to the order of floating-point sums. (The alternative,
``shard_map`` with a ``pmean`` of per-device gradients, would give each device only its own
pairs and change batch-coupled losses; this module does not use it.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from calibrax.parallel.sharding import _check_mesh
from calibrax.parallel.sharding import replicate
from calibrax.parallel.sharding import shard_batch

__all__ = ["data_parallel_train_step"]

LossFn = Callable[[nnx.Module, Any], tuple[jax.Array, dict[str, jax.Array]]]
TrainStep = Callable[[nnx.Module, nnx.Optimizer, Any], tuple[jax.Array, dict[str, jax.Array]]]


def data_parallel_train_step(loss_fn: LossFn, mesh: Mesh, *, axis_name: str = "data") -> TrainStep:
    """Build ``step(module, optimizer, batch) -> (loss, aux)``, data-parallel over ``mesh``.

    One call of ``step``: replicate ``module`` and ``optimizer`` on the mesh (in place; a no-op
    once they are), split ``batch`` over ``axis_name`` (:func:`~calibrax.parallel.shard_batch`),
    then run the jitted step: ``nnx.value_and_grad`` of ``loss_fn`` over the ``nnx.Param``
    leaves, gradients constrained to be replicated (the all-reduce), ``optimizer.update`` (under
    standard dtype promotion, which optax's Python-float hyperparameters need), and
    ``module.project()`` if the module has one (e.g. to keep LPIPS heads non-negative). See the
    module docstring for why this equals the one-device step.

    Example::

        step = data_parallel_train_step(loss_fn, data_mesh())
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        for batch in batches:
            loss, aux = step(model, optimizer, batch)

    Args:
        loss_fn: ``loss_fn(module, batch) -> (loss, aux)``, the convention of
            :func:`calibrax.learned.fit`: ``loss`` a scalar, ``aux`` a dict of scalars.
        mesh: The mesh (see :func:`~calibrax.parallel.data_mesh`).
        axis_name: The mesh axis the batch is split over.

    Returns:
        The step function. The jitted step is compiled once per module and optimizer structure
        and batch shape; the optax transformation is part of that structure, so build it once
        and reuse it (a new ``optax.adam(...)`` object compiles the step again).

    Raises:
        TypeError: If ``loss_fn`` is not callable or ``mesh`` is not a mesh; when called, if
            ``optimizer`` is not an ``nnx.Optimizer``.
        ValueError: If ``axis_name`` is not an axis of ``mesh``; when called, if the batch is
            empty, holds a scalar, or has a batch size not divisible by the number of devices.
    """
    if not callable(loss_fn):
        raise TypeError(f"expected `loss_fn` to be callable, got {type(loss_fn).__name__}")
    _check_mesh(mesh, axis_name)
    replicated = NamedSharding(mesh, P())

    @nnx.jit
    def jitted(module: nnx.Module, optimizer: nnx.Optimizer, batch: Any):
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(module, batch)
        grads = jax.lax.with_sharding_constraint(grads, replicated)
        # optax mixes Python floats with its int32 step count (Adam's bias correction), which
        # strict dtype promotion rejects; the promotion it relies on is the standard one.
        with jax.numpy_dtype_promotion("standard"):
            optimizer.update(module, grads)
        project = getattr(module, "project", None)
        if project is not None:
            project()
        return loss, aux

    def step(module: nnx.Module, optimizer: nnx.Optimizer, batch: Any):
        if not isinstance(optimizer, nnx.Optimizer):
            raise TypeError(
                f"expected `optimizer` to be an nnx.Optimizer, got {type(optimizer).__name__}"
            )
        batch = shard_batch(batch, mesh, axis_name=axis_name)
        replicate(module, mesh)
        replicate(optimizer, mesh)
        return jitted(module, optimizer, batch)

    return step
