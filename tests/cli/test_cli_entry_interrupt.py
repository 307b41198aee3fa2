"""Ctrl-C while the ``calibrax`` console script is still importing jax (issue 18).

The console script that pip writes for ``[project.scripts]`` is ``from MODULE import FUNC;
sys.exit(FUNC())``; the test builds that same command from this checkout's pyproject.toml, so
it runs the entry point a user's ``calibrax`` runs (the installed script may predate a change
of the entry point until the package is reinstalled).
"""

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _console_script() -> list[str]:
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["calibrax"]
    module, func = entry.split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_ctrl_c_during_startup_prints_interrupted_and_exits_130_every_time(tmp_path):
    """SIGINT at 10 moments of the startup (the package's imports: jax, flax, XLA's backend),
    each in a fresh process: each ends with the one line "calibrax: interrupted" and exit code
    130, never a traceback or a crash. The clock starts once the process runs a second thread
    (the interrupt watcher of the entry point, or before the fix BLAS's threads at numpy's
    import), so the signals land inside the imports whatever the machine's load."""
    rng = np.random.default_rng(0)
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        for i in range(4):
            arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / side / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [*_console_script(), "fid", str(tmp_path / "a"), str(tmp_path / "b")]
    outcomes = []
    for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9):
        proc = subprocess.Popen(
            [*command, "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 30
        while _threads(proc.pid) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(delay)
        if proc.poll() is not None:
            pytest.fail(f"finished before the interrupt: {proc.returncode} {proc.stderr.read()}")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        outcomes.append((delay, proc.returncode, err.strip().splitlines()[-3:]))
    bad = [o for o in outcomes if o[1] != 130 or o[2] != ["calibrax: interrupted"]]
    assert not bad, bad
