"""Stateful metrics on one host with many devices: a ``data`` mesh, sharded batches, two updates.

A batch is split over the devices of a one-dimensional mesh along its leading axis
(``NamedSharding(mesh, P("data"))``); metric state and weights are replicated
(``NamedSharding(mesh, P())``). Two ways to update a metric from such a batch give the value of
the same update on one device:

- :func:`sharded_update` jit-compiles ``metric.update`` on the *global* (sharded) batch. XLA
  partitions the program and inserts the collectives itself (for FID: a sum over devices of the
  per-device scatter matrices), so any metric works unchanged, including metrics whose
  ``reduce`` is not implemented.
- :func:`shard_map_update` runs ``metric.update`` inside ``jax.shard_map`` on each device's
  *local* rows and synchronises explicitly with ``metric.reduce(axis_name)`` (``lax.psum`` of
  additive state, Chan's parallel update for FID, ``all_gather`` for the feature buffers of KID,
  IS and PRDC).

Synchronisation contract of :func:`shard_map_update`: every device starts from an *empty* state
(all zeros, as :meth:`~calibrax.core.StatefulMetric.reset` leaves it), folds its local rows in
with ``update``, then ``reduce`` combines the per-device states; after ``reduce`` every device
holds the same state, that of the whole batch (replicated, hence ``out_specs=P()``). That batch
state is then merged (``metric.merge``) into the metric's running state, so the result does not
depend on how many devices there are, nor on previous updates. Buffer rows land in device order,
which is the row order of the global batch.

Both updates change the metric in place: after the first call its arrays (state and any frozen
backbone or heads) live replicated on the mesh devices, so later calls do not copy them again.
Value checks that need concrete numbers (NaN/Inf, ranges, buffer overflow) cannot run inside the
compiled update: each metric's jit policy applies (NaN results, or an error at ``compute``).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from calibrax.core import checks
from calibrax.core.base import StatefulMetric
from calibrax.core.state import MetricState

__all__ = [
    "data_mesh",
    "replicate",
    "shard_batch",
    "shard_map_update",
    "sharded_update",
]


def data_mesh(devices: Sequence[jax.Device] | None = None, *, axis_name: str = "data") -> Mesh:
    """A one-dimensional mesh over ``devices`` whose single axis is ``axis_name``.

    The mesh axis type is ``Auto``: under ``jax.jit`` XLA chooses the collectives itself (unlike
    ``jax.make_mesh``, whose default ``Explicit`` axes type shardings into array types).

    Args:
        devices: The devices, in mesh order; ``None`` means every device (``jax.devices()``).
        axis_name: Name of the mesh axis the batch is split over.

    Returns:
        The ``jax.sharding.Mesh``.

    Raises:
        ValueError: If ``devices`` is empty or repeats a device, or ``axis_name`` is not a
            non-empty string.
    """
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"expected `axis_name` to be a non-empty string, got {axis_name!r}")
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("expected `devices` to hold at least one device, got none")
    if len(set(devices)) != len(devices):
        raise ValueError(
            f"expected `devices` to hold distinct devices, got {len(devices)} entries for "
            f"{len(set(devices))} devices"
        )
    return Mesh(np.array(devices), (axis_name,))


def _check_mesh(mesh: Any, axis_name: str) -> int:
    """Validate ``mesh`` and ``axis_name``; return the number of devices along the axis."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"expected `mesh` to be a jax.sharding.Mesh, got {type(mesh).__name__}")
    checks.check_choice(axis_name, tuple(mesh.axis_names), "axis_name")
    return int(mesh.shape[axis_name])


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _check_rows(
    x: Any, name: str, n_devices: int, axis_name: str, *, allow_empty: bool = False
) -> None:
    shape = tuple(np.shape(x))
    if not shape:
        raise ValueError(f"expected `{name}` to have a leading batch axis, got shape {shape}")
    if not allow_empty:
        # A batch to train on must hold rows; a metric update with none is a no-op instead.
        checks.check_nonempty(x, name)
    if shape[0] % n_devices:
        raise ValueError(
            f"expected `{name}` to have a batch size divisible by {n_devices} (the devices on "
            f"mesh axis {axis_name!r}), got {shape[0]}"
        )


def replicate(x: Any, mesh: Mesh) -> Any:
    """Place a full copy of ``x`` on every device of ``mesh`` (``NamedSharding(mesh, P())``).

    Args:
        x: An nnx object such as an ``nnx.Module`` or ``nnx.Optimizer`` (its arrays are replaced
            in place, and it is returned) or any other pytree of arrays (a replicated copy is
            returned).
        mesh: The mesh.

    Returns:
        ``x`` itself for an nnx object, else the replicated pytree.

    Raises:
        TypeError: If ``mesh`` is not a ``jax.sharding.Mesh``.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"expected `mesh` to be a jax.sharding.Mesh, got {type(mesh).__name__}")
    everywhere = NamedSharding(mesh, P())
    if isinstance(x, nnx.Pytree):  # modules and optimizers: update their variables in place
        nnx.update(x, jax.device_put(nnx.state(x), everywhere))
        return x
    return jax.device_put(x, everywhere)


def shard_batch(batch: Any, mesh: Mesh, *, axis_name: str = "data") -> Any:
    """Split every array of ``batch`` over the devices of ``mesh`` along its leading axis.

    Each leaf is placed with ``NamedSharding(mesh, P(axis_name))``: device ``i`` of the axis holds
    rows ``i * n / d`` to ``(i + 1) * n / d`` (``n`` rows, ``d`` devices), the order of the batch.

    Args:
        batch: An array, or a pytree (dict, tuple, ...) of arrays with a leading batch axis.
        mesh: The mesh (see :func:`data_mesh`).
        axis_name: The mesh axis to split over.

    Returns:
        The same pytree of sharded ``jax.Array``.

    Raises:
        TypeError: If ``mesh`` is not a mesh or a leaf is not an array.
        ValueError: If ``axis_name`` is not an axis of ``mesh``, the batch holds no array, or an
            array is a scalar or has a batch size not divisible by the number of devices on the
            axis.
    """
    n_devices = _check_mesh(mesh, axis_name)
    leaves = jax.tree_util.tree_leaves_with_path(batch)
    if not leaves:
        raise ValueError("expected `batch` to hold at least one array, got none")
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path, simple=True, separator="/") or "batch"
        if not _is_array(leaf):
            raise TypeError(f"expected `{name}` to be an array, got {type(leaf).__name__}")
        _check_rows(leaf, name, n_devices, axis_name)
    return jax.device_put(batch, NamedSharding(mesh, P(axis_name)))


def _split_inputs(
    metric: Any, mesh: Any, axis_name: str, inputs: dict[str, Any]
) -> tuple[dict[str, jax.Array], tuple[tuple[str, Hashable], ...]]:
    """Validate, then split ``update``'s keywords into sharded arrays and static settings."""
    if not isinstance(metric, StatefulMetric):
        raise TypeError(
            f"expected `metric` to be a calibrax StatefulMetric, got {type(metric).__name__}"
        )
    n_devices = _check_mesh(mesh, axis_name)
    arrays, static = {}, []
    for key, value in sorted(inputs.items()):
        if _is_array(value):  # numpy scalars too, to reject them as arrays without a batch axis
            _check_rows(value, key, n_devices, axis_name, allow_empty=True)
            arrays[key] = value
        elif isinstance(value, Hashable):
            static.append((key, value))
        else:
            raise TypeError(
                f"expected `{key}` to be an array (split over the devices) or a hashable static "
                f"setting, got {type(value).__name__}"
            )
    if not arrays:
        raise ValueError(
            f"expected at least one array among the inputs to `update`, got {sorted(inputs)}"
        )
    return jax.device_put(arrays, NamedSharding(mesh, P(axis_name))), tuple(static)


def _empty(arrays: dict[str, Any]) -> bool:
    """Whether the batch has no rows: an update with it is a no-op (the base-class rule)."""
    return any(np.shape(x)[0] == 0 for x in arrays.values())


def _placed(metric: StatefulMetric, mesh: Mesh):
    """Replicate ``metric`` on ``mesh`` (in place) and split it into graph, state and the rest."""
    replicate(metric, mesh)
    return nnx.split(metric, MetricState, ...)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_update(graphdef, mesh, static, state, rest, arrays):
    metric = nnx.merge(graphdef, state, rest)
    metric.update(**arrays, **dict(static))
    # The state of the whole batch, the same on every device.
    return jax.lax.with_sharding_constraint(
        nnx.state(metric, MetricState), NamedSharding(mesh, P())
    )


def sharded_update(
    metric: StatefulMetric, mesh: Mesh, *, axis_name: str = "data", **inputs: Any
) -> None:
    """``metric.update(**inputs)`` under ``jax.jit`` with the arrays split over the mesh.

    The update sees the global batch as one sharded array, so the result is that of one device
    (up to the order of floating-point sums, which XLA splits over devices). Array keywords
    (``jax.Array``, ``numpy.ndarray``) are split along their leading axis; any other keyword
    (``real=True``, ...) is a static setting of the compiled update and must be hashable. The
    compiled update is cached per metric structure, settings and shapes.

    Example::

        mesh = data_mesh()                      # every device, axis "data"
        sharded_update(fid, mesh, features=x, real=True)

    Args:
        metric: The metric, updated in place (its arrays end up replicated on the mesh).
        mesh: The mesh (see :func:`data_mesh`).
        axis_name: The mesh axis the batch is split over.
        **inputs: The keywords of ``metric.update``.

    Raises:
        TypeError: If ``metric`` is not a ``StatefulMetric``, ``mesh`` is not a mesh, or a
            keyword is neither an array nor hashable.
        ValueError: If ``axis_name`` is not an axis of ``mesh``, no keyword is an array, or an
            array is a scalar or not divisible by the number of devices on the axis. The
            metric's own shape and dtype checks apply as in ``metric.update``.
    """
    arrays, static = _split_inputs(metric, mesh, axis_name, inputs)
    if _empty(arrays):
        return
    graphdef, state, rest = _placed(metric, mesh)
    nnx.update(metric, _jit_update(graphdef, mesh, static, state, rest, arrays))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _shard_map_update(graphdef, mesh, axis_name, static, state, rest, arrays):
    def per_device(state, rest, arrays):
        part = nnx.merge(graphdef, jax.tree.map(jnp.zeros_like, state), rest)
        part.update(**arrays, **dict(static))
        part.reduce(axis_name)  # every device now holds the state of the whole batch
        metric = nnx.merge(graphdef, state, rest)
        metric.merge(part)
        return nnx.state(metric, MetricState)

    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(), P(axis_name)),
        out_specs=P(),
        # `all_gather` (the feature buffers, Chan merges) returns the same value on every device,
        # but the varying-axes checker does not mark it replicated: the check is off, and
        # replication is the contract of `reduce` (tested per metric).
        check_vma=False,
    )(state, rest, arrays)


def shard_map_update(
    metric: StatefulMetric, mesh: Mesh, *, axis_name: str = "data", **inputs: Any
) -> None:
    """``metric.update(**inputs)`` per device inside ``jax.shard_map``, then ``metric.reduce``.

    Each device updates an empty copy of the metric with its own rows, the copies are combined
    with ``metric.reduce(axis_name)`` (``psum`` / ``all_gather``), and the combined batch state
    is merged into ``metric``'s running state (see the module docstring for the contract). The
    value is that of one device up to the order of floating-point sums. Keywords are split as in
    :func:`sharded_update`. Metrics whose ``reduce`` is not implemented (``StreamingRetrieval``)
    raise ``NotImplementedError``: use :func:`sharded_update` for them.

    Args:
        metric: The metric, updated in place (its arrays end up replicated on the mesh).
        mesh: The mesh (see :func:`data_mesh`).
        axis_name: The mesh axis the batch is split over (the axis ``reduce`` runs over).
        **inputs: The keywords of ``metric.update``.

    Raises:
        TypeError: As :func:`sharded_update`.
        ValueError: As :func:`sharded_update`.
        NotImplementedError: If the metric cannot ``reduce`` across devices.
    """
    arrays, static = _split_inputs(metric, mesh, axis_name, inputs)
    if _empty(arrays):
        return
    graphdef, state, rest = _placed(metric, mesh)
    nnx.update(metric, _shard_map_update(graphdef, mesh, axis_name, static, state, rest, arrays))
