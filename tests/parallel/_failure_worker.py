"""One process of the multi-host failure tests (run by ``launch_local``, never collected by pytest).

Usage: ``python _failure_worker.py SCENARIO``. Every process runs the README's multi-host pattern
on a set of 2 items (``initialize()``, ``process_shard``, ``update``, ``sync``) with 3 processes,
so process 2's shard is empty; after the syncs a line ``RESULT {json}`` reports the values as
``float.hex`` strings. ``SCENARIO`` decides what goes wrong:

- ``straggler``: process 1 sleeps ``STRAGGLER_SECONDS`` in its update (longer than jaxlib's
  fixed 30 s for setting up gloo), then the job goes on;
- ``raise``: process 1 raises ``ValueError`` before its sync;
- ``kill``: process 1 SIGKILLs itself while the others wait in the sync;
- ``coordinator``: process 0, the coordinator, calls ``sys.exit(3)`` before its sync.

Timeouts are short (heartbeat 5 s, shutdown 20 s) so that a failed job ends in seconds.
"""

import json
import os
import signal
import sys
import time

import jax

from calibrax.parallel import initialize
from calibrax.parallel import process_shard
from calibrax.parallel import sync

STRAGGLER_SECONDS = 60
SCENARIO = sys.argv[1]

initialize(initialization_timeout=30, heartbeat_timeout=5, shutdown_timeout=20, sync_timeout=180)
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from calibrax.metrics import FrechetDistance  # noqa: E402
from calibrax.metrics import StreamingMeanSquaredError  # noqa: E402


def data() -> dict[str, np.ndarray]:
    """The 2 items: real and generated features, predictions and targets (the tests' copy too)."""
    rng = np.random.default_rng(7)
    return {
        "real": rng.normal(size=(2, 3)),
        "fake": rng.normal(size=(2, 3)) + 0.5,
        "predictions": rng.normal(size=(2,)),
        "targets": rng.normal(size=(2,)),
    }


def main() -> None:
    here = jax.process_index()
    items = data()
    fid = FrechetDistance(backbone=None, num_features=3)
    mse = StreamingMeanSquaredError(dtype=np.float64)
    rows = process_shard(len(items["real"]))
    if SCENARIO == "straggler" and here == 1:
        time.sleep(STRAGGLER_SECONDS)
    fid.update(features=items["real"][rows], real=True)
    fid.update(features=items["fake"][rows], real=False)
    mse.update(predictions=items["predictions"][rows], targets=items["targets"][rows])
    if SCENARIO == "raise" and here == 1:
        raise ValueError("bad batch on process 1")
    if SCENARIO == "kill" and here == 1:
        time.sleep(2)  # the others are in the sync by now
        os.kill(os.getpid(), signal.SIGKILL)
    if SCENARIO == "coordinator" and here == 0:
        sys.exit(3)
    sync(fid)
    sync(mse)
    result = {
        "process": here,
        "rows": rows.stop - rows.start,
        "fid": float(fid.compute()["frechet_distance"]).hex(),
        "mse": float(mse.compute()["mean_squared_error"]).hex(),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
