"""One process of the multi-host tests (run by ``launch_local``, never collected by pytest).

Usage: ``python _multihost_worker.py DATA.npz MODE`` where ``DATA.npz`` holds ``real``, ``fake``
(float64 features), ``predictions``, ``targets`` and the shard bounds ``real_bounds``,
``fake_bounds`` (``num_processes + 1`` offsets each): process ``p`` feeds rows
``bounds[p]:bounds[p + 1]`` in batches of 4. ``MODE`` is ``agree`` (every process builds the same
metrics) or ``mismatch`` (process 1 builds a Fréchet distance with one feature fewer). After
:func:`calibrax.parallel.sync`, a line ``RESULT {json}`` reports the values as ``float.hex``
strings, so the test compares them bit for bit.
"""

import json
import sys

import jax

from calibrax.parallel import initialize
from calibrax.parallel import sync

# Short timeouts: a peer that never comes or dies ends the job in seconds, not minutes.
initialize(initialization_timeout=30, heartbeat_timeout=10, shutdown_timeout=10)
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from calibrax.metrics import FrechetDistance  # noqa: E402
from calibrax.metrics import KernelDistance  # noqa: E402
from calibrax.metrics import StreamingMeanSquaredError  # noqa: E402

BATCH = 4
# Jitted: one compilation per program instead of one per primitive (eager), which dominates a
# worker's run time.
update = nnx.jit(lambda m, x, real: m.update(features=x, real=real), static_argnums=2)
compute = nnx.jit(lambda m: m.compute())
KID_SETTINGS = {"max_samples": 40, "subsets": 5, "subset_size": 8, "seed": 3}


def shard(data, name: str) -> np.ndarray:
    bounds = data[f"{name}_bounds"]
    p = jax.process_index()
    return data[name][bounds[p] : bounds[p + 1]]


def batches(x: np.ndarray):
    for i in range(0, len(x), BATCH):
        yield x[i : i + BATCH]


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    data = np.load(path)
    dim = data["real"].shape[1]
    if mode == "mismatch" and jax.process_index() == 1:
        dim -= 1
    fid = FrechetDistance(backbone=None, num_features=dim)
    kid = KernelDistance(backbone=None, num_features=dim, **KID_SETTINGS)
    mse = StreamingMeanSquaredError(dtype=np.float64)
    for side, real in (("real", True), ("fake", False)):
        for x in batches(shard(data, side)[:, :dim]):
            update(fid, x, real)
            update(kid, x, real)
    for p, t in zip(
        batches(shard(data, "predictions")), batches(shard(data, "targets")), strict=True
    ):
        mse.update(predictions=p, targets=t)
    local = {"real": int(fid.real_count[...]), "fake": int(fid.fake_count[...])}
    sync(fid)
    sync(kid)
    sync(mse)
    kid_values = compute(kid)
    result = {
        "process": jax.process_index(),
        "local": local,
        "fid": float(compute(fid)["frechet_distance"]).hex(),
        "kid_mean": float(kid_values["kid_mean"]).hex(),
        "kid_std": float(kid_values["kid_std"]).hex(),
        "kid_real_rows": int(kid.real_count[...]),
        "kid_real_buffer_sum": float(np.sum(np.asarray(kid.real_features[...]))).hex(),
        "mse": float(mse.compute()["mean_squared_error"]).hex(),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
