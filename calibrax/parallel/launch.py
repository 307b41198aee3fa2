"""Run a script on N local processes that join one ``jax.distributed`` job on the loopback address.

:func:`launch_local` is for trying multi-host code on one machine (tests, examples): it picks a
free TCP port on ``127.0.0.1`` at run time, starts ``num_processes`` Python interpreters on the
script with the environment variables that :func:`calibrax.parallel.initialize` reads, and waits
for them with a deadline. It never leaves a process behind: when one process fails, the others get
``grace`` seconds to finish and are then killed; at the deadline all are killed. Each process runs
in its own session (process group), and the whole group is killed, so helper processes a script
spawns go too. Output is captured in a temporary directory that is removed before returning.

When a job fails, :func:`failure_report` says which process failed first and why. "First" is
the time in the line ``calibrax: process N leaves the job at TIME: ...`` that the exit hook of
:func:`calibrax.parallel.initialize` writes, or else when the launcher saw it exit. (The exit times alone
do not tell: a process that raises first still waits for the others in JAX's shutdown barrier,
and they all end together.)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from calibrax.core import checks

__all__ = [
    "COORDINATOR_ADDRESS_ENV",
    "NUM_PROCESSES_ENV",
    "PROCESS_ID_ENV",
    "ProcessResult",
    "failure_report",
    "free_port",
    "launch_local",
]

COORDINATOR_ADDRESS_ENV = "CALIBRAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "CALIBRAX_NUM_PROCESSES"
PROCESS_ID_ENV = "CALIBRAX_PROCESS_ID"

_POLL_SECONDS = 0.05
# The line calibrax.parallel.initialize's exit hook writes (multihost._leave).
_LEAVING = re.compile(rb"^calibrax: process \d+ leaves the job at (\S+): ", re.M)
_TAIL_LINES = 20


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """What one launched process left behind.

    Attributes:
        process_id: Its ``jax.process_index()``.
        returncode: Its exit status; negative (``-signal``) when it was killed.
        stdout: Everything it wrote to standard output.
        stderr: Everything it wrote to standard error.
        killed: Whether the launcher killed it (deadline reached, or another process failed and
            this one did not finish within the grace period).
        failed_at: Seconds after the launch at which it failed (the time in its ``calibrax:
            process N leaves the job at TIME`` line, else when it was seen to exit), ``None``
            if it succeeded or the launcher killed it.
    """

    process_id: int
    returncode: int
    stdout: str
    stderr: str
    killed: bool
    failed_at: float | None = None


def _status(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


def failure_report(
    results: Sequence[ProcessResult], *, tail_lines: int = _TAIL_LINES
) -> str | None:
    """Which process of a :func:`launch_local` job failed first, and why; ``None`` if none failed.

    Args:
        results: What :func:`launch_local` returned.
        tail_lines: How many of the last lines of its standard error to quote.

    Returns:
        ``"process P of N failed first (exit code C) after T s; ..."`` (or ``killed by
        SIGNAL``), the status of every other process, then the tail of process P's standard
        error. When no process failed but the launcher killed some (the deadline), it says so.
    """
    failed = [r for r in results if r.failed_at is not None]
    if not failed and not any(r.killed for r in results):
        return None
    first = min(failed, key=lambda r: (r.failed_at, r.process_id)) if failed else None
    others = "; ".join(
        f"process {r.process_id}: "
        + ("killed by the launcher" if r.killed else _status(r.returncode))
        for r in results
        if r is not first
    )
    if first is None:
        return f"no process failed before the launcher killed some: {others}"
    tail = "\n".join(first.stderr.rstrip("\n").splitlines()[-tail_lines:])
    return (
        f"process {first.process_id} of {len(results)} failed first ({_status(first.returncode)}) "
        f"after {first.failed_at:.1f} s; {others}. The end of its standard error:\n{tail}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (the OS picks it; it could be taken again later).

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group led by ``proc`` (one of ours: it was started in a new session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _left_at(err: Path, sizes: dict[int, int], i: int) -> float | None:
    """The wall-clock time in process ``i``'s line from the exit hook, if its log has it."""
    size = err.stat().st_size
    if size == sizes.get(i):
        return None
    sizes[i] = size
    match = _LEAVING.search(err.read_bytes())
    if match is None:
        return None
    try:
        return datetime.datetime.fromisoformat(match.group(1).decode()).timestamp()
    except ValueError:
        return time.time()


def launch_local(
    script: str | os.PathLike,
    num_processes: int,
    args: Sequence[str] = (),
    *,
    timeout: float = 120.0,
    grace: float = 10.0,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    cwd: str | os.PathLike | None = None,
) -> list[ProcessResult]:
    """Run ``python script *args`` as processes ``0 .. num_processes - 1`` of one local job.

    Each process gets ``CALIBRAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>``,
    ``CALIBRAX_NUM_PROCESSES`` and ``CALIBRAX_PROCESS_ID`` on top of ``env`` (default: this
    process's environment), which is what :func:`calibrax.parallel.initialize` reads.

    Args:
        script: Path of the Python script every process runs.
        num_processes: Number of processes (>= 1).
        args: Command-line arguments given to every process.
        timeout: Deadline in seconds for the whole job; processes still running then are killed.
        grace: Seconds the other processes get to finish once one has exited with a non-zero
            status; those still running then are killed (a failed peer would otherwise leave them
            waiting in a collective).
        env: Base environment of the processes (``None``: ``os.environ``).
        python: The interpreter.
        cwd: Working directory of the processes (``None``: this process's).

    Returns:
        One :class:`ProcessResult` per process, in process order. The job succeeded when every
        ``returncode`` is 0; nothing is raised for failed or killed processes:
        :func:`failure_report` says which failed first and why.

    Raises:
        ValueError: If ``script`` is not a file, ``num_processes`` is not a positive integer or
            ``timeout`` / ``grace`` is not a positive number.
    """
    if not Path(script).is_file():
        raise ValueError(f"expected `script` to be an existing file, got {os.fspath(script)!r}")
    checks.check_positive_int(num_processes, "num_processes")
    for name, value in (("timeout", timeout), ("grace", grace)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"expected `{name}` to be a positive number, got {value!r}")
    base = dict(os.environ if env is None else env)
    base[COORDINATOR_ADDRESS_ENV] = f"127.0.0.1:{free_port()}"
    base[NUM_PROCESSES_ENV] = str(num_processes)
    command = [python, os.fspath(script), *map(str, args)]
    start, wall_start = time.monotonic(), time.time()
    deadline = start + timeout
    procs: list[subprocess.Popen] = []
    killed: set[int] = set()
    left: dict[int, float] = {}  # process -> seconds after start when it was seen leaving
    sizes: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="calibrax-launch-") as tmp:
        logs = [(Path(tmp) / f"{i}.out", Path(tmp) / f"{i}.err") for i in range(num_processes)]
        try:
            for i, (out, err) in enumerate(logs):
                with open(out, "wb") as fout, open(err, "wb") as ferr:
                    procs.append(
                        subprocess.Popen(
                            command,
                            stdin=subprocess.DEVNULL,
                            stdout=fout,
                            stderr=ferr,
                            env={**base, PROCESS_ID_ENV: str(i)},
                            cwd=cwd,
                            start_new_session=True,
                        )
                    )
            while True:
                codes = [p.poll() for p in procs]
                now = time.monotonic()
                for i, code in enumerate(codes):
                    if i not in left:
                        at = _left_at(logs[i][1], sizes, i)
                        if at is not None:
                            left[i] = at - wall_start
                        elif code not in (None, 0):
                            left[i] = now - start
                if None not in codes:
                    break
                if any(code not in (None, 0) for code in codes):
                    deadline = min(deadline, now + grace)
                if now >= deadline:
                    break
                time.sleep(_POLL_SECONDS)
        finally:
            for i, proc in enumerate(procs):
                if proc.poll() is None:
                    killed.add(i)
                _kill_group(proc)
        return [
            ProcessResult(
                process_id=i,
                returncode=proc.returncode,
                stdout=out.read_text(errors="replace"),
                stderr=err.read_text(errors="replace"),
                killed=i in killed,
                failed_at=None if proc.returncode == 0 or i in killed else left.get(i),
            )
            for i, (proc, (out, err)) in enumerate(zip(procs, logs, strict=True))
        ]
