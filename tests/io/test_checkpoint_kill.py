"""Crash safety of ``CheckpointManager``: a save killed with SIGKILL part-way loses nothing.

A fork server (``_checkpoint_writer.py``) imports JAX, Flax and Orbax once; each trial forks a worker
that saves a few MB per step into one shared directory and is SIGKILLed at a seeded random moment
after it starts a save. After every kill a fresh ``CheckpointManager`` must report a latest step
that is at least the last step the worker reported done, and every step it lists must restore to
exactly the values written for it. The directory is reused, so later workers also start next to
the debris (temporary directories) of earlier kills.
"""

from __future__ import annotations

import importlib.util
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest
from flax import nnx

from calibrax.io.checkpoint import CheckpointManager

HERE = os.path.dirname(os.path.abspath(__file__))
TRIALS = 20
SIZE = 1_000_000  # float32 values: 4 MB per step, so a save takes long enough to be interrupted
LINE_TIMEOUT_S = 60.0  # generous: the machine is shared; a healthy worker answers in ~1 s


def _load_writer():
    # Imported under its own module name, as the server imports it, so class names match.
    spec = importlib.util.spec_from_file_location(
        "_checkpoint_writer", os.path.join(HERE, "_checkpoint_writer.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["_checkpoint_writer"] = module
    spec.loader.exec_module(module)
    return module


writer = _load_writer()


class _Lines:
    """Line reader over a pipe with a timeout per line."""

    def __init__(self, proc: subprocess.Popen, stderr_path: str) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.fd = proc.stdout.fileno()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.buffer = b""

    def next(self) -> str:
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(timeout=left):
                raise AssertionError(f"writer sent no line in {LINE_TIMEOUT_S} s{self._stderr()}")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise AssertionError(f"writer closed its output{self._stderr()}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def _stderr(self) -> str:
        with open(self.stderr_path) as f:
            return "; stderr:\n" + f.read()[-3000:]


def _check_directory(directory: str, last_done: int, last_begun: int) -> None:
    manager = CheckpointManager(directory, max_to_keep=2)
    steps = manager.all_steps()
    assert steps, "no complete step after the kill"
    # A step reported done is never lost; a step is never listed before its save began.
    assert last_done <= steps[-1] <= last_begun, (steps, last_done, last_begun)
    assert manager.latest_step() == steps[-1]
    for step in steps:
        abstract = nnx.eval_shape(lambda: writer.Blob(SIZE, rngs=nnx.Rngs(0)))
        blob = manager.restore(abstract, step=step)
        weights, count, key = writer.expected(step, SIZE)
        # Exact: a checkpoint stores the bits, so anything but equality is corruption.
        np.testing.assert_array_equal(np.asarray(blob.weights[...]), weights)
        assert int(blob.count[...]) == count
        np.testing.assert_array_equal(
            np.asarray(jax.random.key_data(blob.rngs.default.key[...])), key
        )
        assert manager.read_metadata(step)["metadata"] == {"step": step}


@pytest.mark.slow  # about 45 s: 20 worker starts, each initialising a JAX backend
def test_sigkill_during_save_keeps_the_previous_step_restorable():
    rng = np.random.default_rng(20261127)
    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "ckpts")
        stderr_path = os.path.join(tmp, "stderr.txt")
        code = f"import sys; sys.path.insert(0, {HERE!r}); import _checkpoint_writer as w; w.main()"
        # One CPU device is enough for the writer and starts faster than the tests' eight.
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        with open(stderr_path, "w") as stderr:
            server = subprocess.Popen(
                [sys.executable, "-c", code, directory, str(SIZE)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        lines = _Lines(server, stderr_path)
        worker_pid = None
        interrupted = 0
        try:
            assert lines.next() == "ready"
            for _ in range(TRIALS):
                server.stdin.write(b"fork\n")
                server.stdin.flush()
                kind, pid = lines.next().split()
                assert kind == "pid"
                worker_pid = int(pid)
                # Let the worker complete one save, and time it.
                kind, first = lines.next().split()
                assert kind == "begin"
                started = time.monotonic()
                assert lines.next() == f"done {first}"
                duration = time.monotonic() - started
                last_done = last_begun = int(first)
                assert lines.next() == f"begin {last_done + 1}"
                last_begun = last_done + 1
                time.sleep(rng.uniform(0.0, duration))
                os.kill(worker_pid, signal.SIGKILL)
                while (line := lines.next()) != f"exited {worker_pid}":
                    kind, step = line.split()
                    if kind == "done":
                        last_done = int(step)
                    elif kind == "begin":
                        last_begun = int(step)
                worker_pid = None
                interrupted += any(
                    name.endswith(".orbax-checkpoint-tmp") for name in os.listdir(directory)
                )
                _check_directory(directory, last_done, last_begun)
        finally:
            if worker_pid is not None:
                os.kill(worker_pid, signal.SIGKILL)
            server.stdin.close()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        # Proof that the kills really landed inside saves (not only between them): most leave an
        # Orbax temporary directory behind.
        assert interrupted >= TRIALS // 4, (
            f"only {interrupted} of {TRIALS} kills interrupted a save"
        )
