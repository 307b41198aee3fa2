"""Fréchet distance and KID across hosts: each process evaluates its shard, then all sync.

Run as is, the script launches itself on ``--processes`` local processes (default 2) that join
one ``jax.distributed`` job on 127.0.0.1 (a free port is picked at run time; gloo carries the CPU
collectives). Each process takes its contiguous shard of the evaluation set (real photo patches
and noisy, blurred copies of them), embeds it with the embedded EfficientNet-Lite0 backbone,
updates its own ``FrechetDistance`` and ``KernelDistance``, and calls
``calibrax.parallel.sync``; then every process prints the same values, those of one process
that saw the whole set. ``--features-only`` replaces the backbone by cheap stand-in features (a
fixed random projection of 8x8-pooled pixels), for a quick run.

On real hosts, start the script once per host with ``CALIBRAX_COORDINATOR_ADDRESS`` (process 0's
``host:port``), ``CALIBRAX_NUM_PROCESSES`` and ``CALIBRAX_PROCESS_ID`` set; it then runs as one
process of the job instead of launching local ones.

Usage: ``python examples/fid_multihost.py [--processes 2] [--num-images 48] [--features-only]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from calibrax.parallel.launch import PROCESS_ID_ENV

STAND_IN_DIM = 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="local processes to launch")
    parser.add_argument("--num-images", type=int, default=48, help="size of the evaluation set")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--features-only", action="store_true", help="skip the backbone")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole job")
    return parser.parse_args()


def launch(args: argparse.Namespace) -> int:
    """Start this script on ``args.processes`` local processes and check that they agree."""
    from calibrax.parallel import launch_local

    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    print(f"launching {args.processes} local processes on 127.0.0.1", flush=True)
    procs = launch_local(
        Path(__file__), args.processes, sys.argv[1:], timeout=args.timeout, env=env
    )
    results = []
    for proc in procs:
        lines = proc.stdout.splitlines()
        for line in lines:
            if not line.startswith("RESULT "):
                print(line)
        if proc.returncode != 0:
            why = "killed" if proc.killed else f"exit status {proc.returncode}"
            print(f"process {proc.process_id} failed ({why}):\n{proc.stderr[-3000:]}")
            return 1
        results.extend(json.loads(x[len("RESULT ") :]) for x in lines if x.startswith("RESULT "))
    values = {
        json.dumps({k: v for k, v in r.items() if k not in ("process", "local")}) for r in results
    }
    if len(values) != 1:
        print(f"processes disagree: {sorted(values)}")
        return 1
    print(f"all {len(results)} processes report the same values, bit for bit")
    return 0


def evaluation_set(indices, size: int = 96):
    """Real patches and their noisy, blurred copies; image ``i`` is the same on every process."""
    import numpy as np

    from calibrax.learned import distort
    from calibrax.learned import offline_images

    images = offline_images()
    real, fake = [], []
    for i in indices:
        rng = np.random.default_rng([0, i])
        img = images[rng.integers(len(images))]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        patch = img[y : y + size, x : x + size]
        noisy = distort(patch.astype(np.float32) / 255.0, "noise", 3, rng)
        blurred = distort(noisy, "blur", 3, rng)
        real.append(patch)
        fake.append(np.round(blurred * 255.0).astype(np.uint8))
    shape = (0, size, size, 3)
    return (
        np.stack(real) if real else np.zeros(shape, np.uint8),
        np.stack(fake) if fake else np.zeros(shape, np.uint8),
    )


def run_process(args: argparse.Namespace) -> None:
    """One process of the job: evaluate this process's shard, sync, print."""
    import jax

    from calibrax.parallel import initialize

    initialize()  # reads CALIBRAX_* from the environment; before any JAX computation
    jax.config.update("jax_enable_x64", True)  # FID statistics are float64, on every process

    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from calibrax.backbones import load
    from calibrax.metrics import FrechetDistance
    from calibrax.metrics import KernelDistance
    from calibrax.parallel import process_shard
    from calibrax.parallel import sync

    p, n = jax.process_index(), jax.process_count()
    shard = process_shard(args.num_images)
    real, fake = evaluation_set(range(shard.start, shard.stop))
    if args.features_only:
        projection = np.random.default_rng(1).normal(size=(12 * 12 * 3, STAND_IN_DIM)) / 20.0

        def embed(images):
            pooled = images.reshape(len(images), 12, 8, 12, 8, 3).mean(axis=(2, 4)) / 255.0
            return jnp.asarray(pooled.reshape(len(images), -1) @ projection)

        settings = {"backbone": None, "num_features": STAND_IN_DIM}
    else:
        backbone = load("efficientnet-lite0")
        settings = {"backbone": backbone}
    fid = FrechetDistance(**settings)
    kid = KernelDistance(
        **settings,
        max_samples=args.num_images,
        subsets=20,
        subset_size=args.num_images // 2,
    )
    if not args.features_only:
        extract = nnx.jit(lambda m, x: m.features_of(x))

        def embed(images):
            return extract(fid, jnp.asarray(images))

    update = nnx.jit(lambda m, f, real: m.update(features=f, real=real), static_argnums=2)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), args.batch_size):
            features = embed(images[i : i + args.batch_size])
            update(fid, features, is_real)
            update(kid, features, is_real)
    sync(fid)  # every process now holds the statistics of the whole set
    sync(kid)  # buffers hold the shards in process order
    fd = float(fid.compute()["frechet_distance"])
    k = kid.compute()
    print(
        f"process {p}/{n}: {len(real)} of {args.num_images} image pairs here; "
        f"Fréchet distance {fd:.6f}, KID {float(k['kid_mean']):.6f} ± {float(k['kid_std']):.6f}",
        flush=True,
    )
    result = {
        "process": p,
        "local": len(real),
        "frechet_distance": fd.hex(),
        "kid_mean": float(k["kid_mean"]).hex(),
        "kid_std": float(k["kid_std"]).hex(),
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    args = parse_args()
    if args.processes < 1 or args.num_images < 4:
        raise SystemExit("expected --processes >= 1 and --num-images >= 4")
    if PROCESS_ID_ENV in os.environ:
        run_process(args)
        return 0
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
