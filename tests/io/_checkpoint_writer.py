"""Child process for ``test_checkpoint_kill.py``: a fork server whose workers save until killed.

Usage: ``python _checkpoint_writer.py DIRECTORY SIZE``. The server imports the heavy dependencies
once (without starting a JAX backend or any thread, so forking is safe), prints ``ready``, then for
every ``fork`` line on stdin forks a worker and prints ``exited PID`` when that worker dies. A
worker prints ``pid PID``, then saves numbered steps into DIRECTORY with a
:class:`~calibrax.io.checkpoint.CheckpointManager` (continuing after the latest complete step),
printing ``begin N`` before and ``done N`` after each save, until the parent SIGKILLs it. The values
of step N are a pure function of N (:func:`expected`), so the parent can check a restored step
exactly.
"""

from __future__ import annotations

import os
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint  # noqa: F401 - preloaded so that each worker starts fast
from flax import nnx


class Blob(nnx.Module):
    """A few MB of state, a counter and an RNG stream: enough for a save to take a while."""

    def __init__(self, size: int, *, rngs: nnx.Rngs) -> None:
        from calibrax.core.state import MetricState

        self.weights = nnx.Param(jnp.zeros((size,), jnp.float32))
        self.count = MetricState(jnp.zeros((), jnp.int32))
        self.rngs = rngs


def expected(step: int, size: int) -> tuple[np.ndarray, int, np.ndarray]:
    """(weights, count, raw key data) written for ``step``."""
    # Random values: Orbax compresses, so a regular pattern would shrink to a few kB.
    weights = np.random.default_rng(step).standard_normal(size, dtype=np.float32)
    key = np.asarray(jax.random.key_data(jax.random.key(step)))
    return weights, step, key


def _worker(directory: str, size: int) -> None:
    from calibrax.io.checkpoint import CheckpointManager

    print(f"pid {os.getpid()}", flush=True)
    manager = CheckpointManager(directory, max_to_keep=2)
    step = (manager.latest_step() or 0) + 1
    while True:
        weights, count, _ = expected(step, size)
        blob = Blob(size, rngs=nnx.Rngs(step))
        blob.weights[...] = jnp.asarray(weights)
        blob.count[...] = jnp.asarray(count, jnp.int32)
        print(f"begin {step}", flush=True)
        manager.save(step, blob, metadata={"step": step})
        print(f"done {step}", flush=True)
        step += 1


def main() -> None:
    directory, size = sys.argv[1], int(sys.argv[2])
    # Forking is only safe while this process has a single thread and no JAX backend.
    if threading.active_count() != 1:
        raise RuntimeError(f"expected 1 thread before forking, got {threading.active_count()}")
    print("ready", flush=True)
    for command in sys.stdin:
        if command.strip() != "fork":
            break
        pid = os.fork()
        if pid == 0:
            try:
                _worker(directory, size)
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        print(f"exited {pid}", flush=True)


if __name__ == "__main__":
    main()
