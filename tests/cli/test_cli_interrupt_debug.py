"""``calibrax --debug CMD`` and Ctrl-C, through the real entry point in a subprocess (issue 18)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

CLI = [sys.executable, "-m", "calibrax.cli.main"]


def test_debug_before_the_command_shows_the_traceback(tmp_path):
    missing = [str(tmp_path / "nope"), str(tmp_path / "nope2")]
    proc = subprocess.run([*CLI, "--debug", "fid", *missing], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    plain = subprocess.run([*CLI, "fid", *missing], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in plain.stderr
    assert plain.stderr.startswith("calibrax: error: ")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    rng = np.random.default_rng(0)
    for side in ("a", "b"):
        (root / side).mkdir()
        for i in range(64):
            arr = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / side / f"{i}.png")
    return root


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_ctrl_c_prints_interrupted_and_exits_130(folders):
    """SIGINT while the run is busy (in XLA's compilation of the backbone, or embedding), several
    times: every try ends in one "interrupted" line and exit code 130 within seconds, never a
    crash. The signal goes once JAX's backend is up (its threads exist), i.e. inside ``main``."""
    for delay in (0.0, 1.0, 2.5):
        proc = subprocess.Popen(
            [*CLI, "fid", str(folders / "a"), str(folders / "b"), "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 120
        while _threads(proc.pid) < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(delay)
        if proc.poll() is not None:
            pytest.fail(f"finished before the interrupt: {proc.returncode} {proc.stderr.read()}")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, (delay, proc.returncode, err[-2000:])
        assert err.strip().splitlines() == ["calibrax: interrupted"], err[-2000:]
