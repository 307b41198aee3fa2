"""Metrics across hosts: every process feeds its own shard, :func:`sync` gives all the same state.

After ``jax.distributed.initialize`` (:func:`initialize` wraps it for CPU hosts, whose
collectives go through gloo), each process updates its own copy of a metric with its shard of the
evaluation set, then calls :func:`sync`. Sync contract:

1. **Configuration first.** Every process describes its metric (class, every variable's path,
   type, shape and dtype, the settings stored on each module, ``jax_enable_x64``) and the
   descriptions are all-gathered as fixed-size collectives (their lengths, then the bytes padded
   to the longest). If any differs from process 0's, every process raises the same
   ``ValueError`` naming the processes and settings that differ, before any collective whose
   size depends on the configuration could hang.
2. **State, bit for bit.** The :class:`~calibrax.core.MetricState` arrays travel as raw bytes in
   one all-gather, so the values are exact whatever the dtypes and x64 settings.
3. **Merge in process order.** Every process rebuilds process ``p``'s metric for each ``p`` and
   merges them in order ``0, 1, ..., n - 1`` with the metric's own ``merge`` (Chan's update for
   FID, row appends for KID/IS/PRDC, sums for additive metrics). Every host runs the same
   operations on the same inputs, so every host holds bit-identical state; buffer rows end up
   in process order; a process with no samples contributes an empty state and changes nothing.

Failures. Before its collectives, every :func:`sync` is a rendezvous through the coordinator's
key-value store: each process marks its arrival and waits, up to ``sync_timeout`` seconds, until
every process has arrived. A process that leaves the job (an uncaught exception, ``sys.exit``,
a :func:`sync` that gave up) first records why under its index (an ``atexit`` hook that
:func:`initialize` installs), so the processes waiting for it raise at once, naming it, instead
of waiting in a collective. A process that dies without a word (``SIGKILL``, a lost host) or a
lost coordinator cannot be caught here: JAX's coordination service then aborts every survivor
(see :func:`initialize`).

The synced metric is updated in place. Its arrays must be process-local (as after ``update``
on one host's devices); processes must have equal numbers of local devices (a requirement of
``jax.experimental.multihost_utils.process_allgather``). Frozen backbone weights are compared by
shape and dtype, not by value.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax._src import distributed
from jax.experimental import multihost_utils

from calibrax.core.base import StatefulMetric
from calibrax.core.state import MetricState
from calibrax.parallel.launch import COORDINATOR_ADDRESS_ENV
from calibrax.parallel.launch import NUM_PROCESSES_ENV
from calibrax.parallel.launch import PROCESS_ID_ENV

__all__ = ["initialize", "process_shard", "sync"]

_SIMPLE = (bool, int, float, complex, str, bytes, type(None), np.dtype, np.generic)
_MAX_LISTED = 5
_POLL_SECONDS = 0.05
_KEY = "calibrax"
# Set by `initialize`; `sync` after a plain `jax.distributed.initialize` uses the defaults.
_settings = {"sync_timeout": 1800.0, "syncs": 0}


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"expected the environment variable {name} to be an integer, got {raw!r}"
        ) from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 60,
    heartbeat_timeout: int = 30,
    shutdown_timeout: int = 30,
    sync_timeout: float = 1800.0,
) -> None:
    """Join a multi-process JAX job with gloo CPU collectives (``jax.distributed.initialize``).

    Call it first, before any JAX computation. Arguments left ``None`` are read from
    ``CALIBRAX_COORDINATOR_ADDRESS``, ``CALIBRAX_NUM_PROCESSES`` and ``CALIBRAX_PROCESS_ID``
    (set by :func:`calibrax.parallel.launch_local`). Cluster auto-detection is turned off, so
    nothing is probed on the network.

    Before returning, every process takes part in one tiny all-gather. It builds the gloo
    communicator while all processes are together: jaxlib gives that setup a fixed 30 s (not
    reached by any timeout here), so a process arriving at its first collective more than 30 s
    after the others would otherwise kill the job. Later collectives wait for late peers, and
    :func:`sync` bounds that wait with ``sync_timeout``.

    It also installs an ``atexit`` hook: a process that ends (normally or not) records that it
    left the job, and why (the uncaught exception, if any), so that peers still waiting in
    :func:`sync` raise at once, naming it. What the timeouts bound:

    - ``heartbeat_timeout``: a process that stops responding (killed, host lost) is declared
      dead after this long; JAX's coordination service then aborts every other process
      (``SIGABRT``, "Terminating process because the JAX distributed service detected fatal
      errors", with "Task N heartbeat timeout" in the log). The same happens to every process
      when the coordinator (process 0) dies: its peers lose their heartbeat. jaxlib offers no
      way to turn this into a Python exception (its ``missed_heartbeat_callback`` crashes with
      ``std::bad_cast`` when called from Python).
    - ``shutdown_timeout``: at exit, every process waits this long for the others in JAX's
      shutdown barrier; a peer that never comes makes it abort.
    - ``sync_timeout``: how long :func:`sync` waits for every process to arrive; past it, the
      waiting processes raise ``TimeoutError`` naming the missing ones.

    Args:
        coordinator_address: ``"host:port"`` of process 0, where it serves the coordinator.
        num_processes: Number of processes in the job.
        process_id: This process's index, in ``[0, num_processes)``.
        initialization_timeout: Seconds to wait for every process to connect.
        heartbeat_timeout: Seconds without a heartbeat after which a peer counts as dead.
        shutdown_timeout: Seconds each process waits for the others at exit.
        sync_timeout: Seconds :func:`sync` waits for the slowest process to reach it.

    Raises:
        ValueError: If a setting is missing (neither given nor in the environment) or invalid.
    """
    address = coordinator_address or os.environ.get(COORDINATOR_ADDRESS_ENV)
    count = num_processes if num_processes is not None else _env_int(NUM_PROCESSES_ENV)
    index = process_id if process_id is not None else _env_int(PROCESS_ID_ENV)
    if not isinstance(address, str) or address.rpartition(":")[0] == "":
        raise ValueError(
            f"expected `coordinator_address` (or ${COORDINATOR_ADDRESS_ENV}) to be 'host:port', "
            f"got {address!r}"
        )
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(
            f"expected `num_processes` (or ${NUM_PROCESSES_ENV}) to be a positive integer, "
            f"got {count!r}"
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ValueError(
            f"expected `process_id` (or ${PROCESS_ID_ENV}) to be an integer in [0, {count}), "
            f"got {index!r}"
        )
    for name, value in (
        ("initialization_timeout", initialization_timeout),
        ("heartbeat_timeout", heartbeat_timeout),
        ("shutdown_timeout", shutdown_timeout),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"expected `{name}` to be a positive integer, got {value!r}")
    if (
        isinstance(sync_timeout, bool)
        or not isinstance(sync_timeout, (int, float))
        or not sync_timeout > 0
    ):
        raise ValueError(f"expected `sync_timeout` to be a positive number, got {sync_timeout!r}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=count,
        process_id=index,
        cluster_detection_method="deactivate",
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout,
        shutdown_timeout_seconds=shutdown_timeout,
    )
    _settings["sync_timeout"] = float(sync_timeout)
    # Registered after JAX's own exit hook, so it runs first, while the coordinator still serves.
    atexit.register(_leave)
    multihost_utils.process_allgather(np.zeros((1,), dtype=np.int32))


def _client() -> Any:
    """The coordination-service client of this process, ``None`` outside a multi-process job."""
    if jax.process_count() == 1:
        return None
    return distributed.global_state.client


def _indices(entries: list[tuple[str, str]]) -> dict[int, str]:
    return {int(key.rsplit("/", 1)[1]): value for key, value in entries}


def _leave_reason() -> str:
    # Set by the interpreter when an uncaught exception ends the program, before atexit hooks.
    exc = getattr(sys, "last_value", None)
    if exc is None:
        return "it exited"
    return f"it exited with {type(exc).__name__}: {exc}"


def _record_leaving(client: Any, reason: str) -> None:
    client.key_value_set(f"{_KEY}/left/{jax.process_index()}", reason, allow_overwrite=True)


def _leave() -> None:
    """``atexit``: tell the processes waiting in :func:`sync` that this one has left, and why."""
    client = _client()
    if client is None:
        return
    reason = _leave_reason()
    # The UTC time lets logs of different hosts be lined up (and launch_local order failures).
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    print(
        f"calibrax: process {jax.process_index()} leaves the job at {now}: {reason}",
        file=sys.stderr,
        flush=True,
    )
    try:
        _record_leaving(client, reason)
    except jax.errors.JaxRuntimeError:  # the coordinator is gone: nobody is left to tell
        pass


def _rendezvous(client: Any, number: int, timeout: float) -> None:
    """Wait until every process reaches sync ``number``; raise if one left or ``timeout`` passes."""
    count, here = jax.process_count(), jax.process_index()
    client.key_value_set(f"{_KEY}/sync/{number}/{here}", "")
    deadline = time.monotonic() + timeout
    while True:
        arrived = _indices(client.key_value_dir_get(f"{_KEY}/sync/{number}/"))
        if len(arrived) == count:
            return
        left = {
            p: why
            for p, why in _indices(client.key_value_dir_get(f"{_KEY}/left/")).items()
            if p not in arrived
        }
        if left:
            first = min(left)
            message = (
                f"expected every process to reach sync #{number}, got process {first} leaving "
                f"the job first ({left[first]}); see process {first}'s log for the cause"
            )
            _record_leaving(client, f"its sync #{number} failed because process {first} left")
            raise RuntimeError(message)
        if time.monotonic() >= deadline:
            missing = ", ".join(str(p) for p in range(count) if p not in arrived)
            _record_leaving(client, f"its sync #{number} timed out")
            raise TimeoutError(
                f"expected every process to reach sync #{number} within sync_timeout="
                f"{timeout:g} s, got process(es) {missing} still missing"
            )
        time.sleep(_POLL_SECONDS)


def process_shard(
    num_items: int, process_index: int | None = None, process_count: int | None = None
) -> slice:
    """The contiguous rows ``[start, stop)`` of ``num_items`` that one process evaluates.

    Shards are in process order and as even as possible (the first ``num_items % count``
    processes get one more); a process gets an empty slice when there are fewer items than
    processes. Concatenating the shards in process order gives the whole set, which is the row
    order :func:`sync` produces in feature buffers.

    Args:
        num_items: Size of the evaluation set (>= 0).
        process_index: The process (default ``jax.process_index()``).
        process_count: Number of processes (default ``jax.process_count()``).

    Returns:
        A ``slice`` with integer ``start`` and ``stop``.

    Raises:
        ValueError: If ``num_items`` is negative or not an integer, or the index is out of range.
    """
    count = jax.process_count() if process_count is None else process_count
    index = jax.process_index() if process_index is None else process_index
    if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items < 0:
        raise ValueError(f"expected `num_items` to be a non-negative integer, got {num_items!r}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"expected `process_count` to be a positive integer, got {count!r}")
    if (
        isinstance(index, bool)
        or not isinstance(index, (int, np.integer))
        or not 0 <= index < count
    ):
        raise ValueError(
            f"expected `process_index` to be an integer in [0, {count}), got {index!r}"
        )
    base, extra = divmod(int(num_items), int(count))
    start = index * base + min(index, extra)
    return slice(start, start + base + (1 if index < extra else 0))


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def _attribute(value: Any) -> str:
    """A process-independent description of a setting stored on a module."""
    if isinstance(value, _SIMPLE):
        return repr(value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, _SIMPLE) for v in value):
        return repr(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__} shape {tuple(value.shape)} {np.dtype(value.dtype)}"
    if callable(value) and hasattr(value, "__qualname__"):  # functions and classes
        return _qualname(value)
    return _qualname(type(value))


def _describe(metric: StatefulMetric) -> dict[str, str]:
    """The configuration of ``metric`` that must agree on every process before :func:`sync`.

    Keys are ``"class"``, ``"jax_enable_x64"``, each variable's path (value: variable type, shape
    and dtype) and each public setting stored on a module of the metric, ``"<path>.<name>"``
    (value: its ``repr`` for numbers, strings, dtypes and tuples of those, else its type). Values
    of arrays are not included.

    Args:
        metric: The metric.

    Returns:
        A dict from setting to its description, identical on processes with the same settings.
    """
    out = {"class": _qualname(type(metric)), "jax_enable_x64": repr(jax.config.jax_enable_x64)}
    for path, node in nnx.iter_graph(metric):
        where = "/".join(map(str, path))
        if isinstance(node, nnx.Variable):
            value = node.get_value()
            shape, dtype = tuple(np.shape(value)), np.dtype(value.dtype)
            out[where] = f"{type(node).__name__} shape {shape} {dtype}"
        elif isinstance(node, nnx.Module):
            prefix = f"{where}." if where else ""
            if where:
                out[where] = _qualname(type(node))
            for name, value in vars(node).items():
                # Sub-modules and variables are described at their own paths.
                if name.startswith("_") or isinstance(value, (nnx.Variable, nnx.Pytree)):
                    continue
                out[f"{prefix}{name}"] = _attribute(value)
    return out


def _mismatch_message(descriptions: list[dict[str, str]]) -> str | None:
    """The error message for differing configurations across processes, ``None`` if all agree.

    Args:
        descriptions: :func:`_describe` of each process, in process order.

    Returns:
        The message naming the processes that differ from process 0 and, for the first of
        them, up to five differing settings; ``None`` when every description equals process 0's.
    """
    reference = descriptions[0]
    differing = [p for p, d in enumerate(descriptions) if d != reference]
    if not differing:
        return None
    first = differing[0]
    other = descriptions[first]
    keys = sorted(k for k in reference.keys() | other.keys() if reference.get(k) != other.get(k))
    shown = "; ".join(
        f"`{k}`: {reference.get(k, '<missing>')} vs {other.get(k, '<missing>')}"
        for k in keys[:_MAX_LISTED]
    )
    more = f"; and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    listed = ", ".join(map(str, differing))
    return (
        "expected every process to sync the same metric configuration, got process(es) "
        f"{listed} differing from process 0; process 0 vs process {first}: {shown}{more}"
    )


def _allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in process order, in two fixed-shape all-gathers."""
    lengths = multihost_utils.process_allgather(np.asarray([len(data)], dtype=np.int32))
    lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
    padded = np.zeros((max(max(lengths), 1),), dtype=np.uint8)
    padded[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [gathered[p, :n].tobytes() for p, n in enumerate(lengths)]


def sync(metric: StatefulMetric) -> StatefulMetric:
    """Combine ``metric``'s state over every process of the job; every process gets the same.

    Every process must call it, with a metric built with the same settings. See the module
    docstring for the contract (configuration check, bit-exact transfer, merge in process order).
    With one process it leaves the metric unchanged.

    Args:
        metric: This process's metric, updated with this process's shard.

    Returns:
        ``metric``, updated in place with the state of all processes.

    Raises:
        TypeError: If ``metric`` is not a :class:`~calibrax.core.StatefulMetric`.
        ValueError: If the configurations differ across processes (same message everywhere), or
            the metric's ``merge`` rejects the combined state (e.g. feature buffers whose total
            rows exceed ``max_samples``); the metric is left unchanged then.
        RuntimeError: If another process left the job before reaching this sync (the message
            names it and says why it left).
        TimeoutError: If some process has not reached this sync within ``sync_timeout``
            seconds (see :func:`initialize`); the message names them.
    """
    if not isinstance(metric, StatefulMetric):
        raise TypeError(f"expected `metric` to be a StatefulMetric, got {type(metric).__name__}")
    client = _client()
    if client is not None:
        _settings["syncs"] += 1
        _rendezvous(client, _settings["syncs"], _settings["sync_timeout"])
    encoded = json.dumps(_describe(metric), sort_keys=True).encode()
    descriptions = [json.loads(b) for b in _allgather_bytes(encoded)]
    message = _mismatch_message(descriptions)
    if message is not None:
        raise ValueError(message)
    graphdef, state, rest = nnx.split(metric, MetricState, ...)
    leaves, treedef = jax.tree.flatten(state)
    arrays = [np.asarray(leaf) for leaf in leaves]
    payload = b"".join(a.tobytes(order="C") for a in arrays)
    per_process = _allgather_bytes(payload)
    merged = None
    for data in per_process:
        values, offset = [], 0
        for a in arrays:
            values.append(
                jnp.asarray(
                    np.frombuffer(data, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
                )
            )
            offset += a.nbytes
        replica = nnx.merge(graphdef, jax.tree.unflatten(treedef, values), rest, copy=True)
        if merged is None:
            merged = replica
        else:
            merged.merge(replica)
    nnx.update(metric, nnx.state(merged, MetricState))
    return metric
