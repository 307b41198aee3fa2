"""The cost of value checks that survive jit: a jitted update with them against the same update
without them.

Inside a traced update each value check adds one reduction over its array (which rows break the
rule) and the metric adds the count to its ``rejected_rows`` state (see
:mod:`calibrax.core.checks`). The reference is the same compiled update with the traced checks
switched off (``checks.require`` replaced by a no-op while tracing: the library before the
mechanism). Cases: ECE on probabilities (range, finite, row sums, labels), FID on 2048-d features
(finite), PSNR on images (finite, range) and FID on images with ``normalize=True`` (range, plus a
small random backbone).

Prints a markdown table, then one JSON line per row with ``benchmark``, ``ours_s`` (with checks),
``reference_s`` (without) and ``ratio`` (reference / ours; 1 means free).

Usage: ``python benchmarks/jit_checks.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_time
from flax import nnx

from calibrax.core import checks
from calibrax.metrics import FrechetDistance
from calibrax.metrics import StreamingExpectedCalibrationError
from calibrax.metrics import StreamingPSNR
from calibrax.metrics.random_backbone import RandomConvBackbone


@contextlib.contextmanager
def no_traced_checks():
    saved = checks.require
    checks.require = lambda ok, rule: None
    try:
        yield
    finally:
        checks.require = saved


def cases(quick: bool):
    rng = np.random.default_rng(0)
    n = 1024 if quick else 4096
    logits = rng.normal(size=(n, 100)).astype(np.float32)
    probs = jnp.asarray(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    labels = jnp.asarray(rng.integers(0, 100, n).astype(np.int32))
    d = 512 if quick else 2048
    feats = jnp.asarray(rng.normal(size=(256, d)).astype(np.float32))
    size = 64 if quick else 128
    t = jnp.asarray(rng.random((32, size, size, 3)).astype(np.float32))
    p = jnp.clip(t + 0.05 * jnp.asarray(rng.normal(size=t.shape).astype(np.float32)), 0, 1)
    backbone = RandomConvBackbone(input_size=(64, 64), rngs=nnx.Rngs(0))
    return [
        (
            f"ece_update_{n}x100",
            lambda: StreamingExpectedCalibrationError(n_bins=15),
            lambda m, x, y: m.update(predictions=x, targets=y),
            (probs, labels),
        ),
        (
            f"fid_update_features_256x{d}",
            lambda: FrechetDistance(backbone=None, num_features=d),
            lambda m, x: m.update(features=x, real=False),
            (feats,),
        ),
        (
            f"psnr_update_32x{size}x{size}",
            lambda: StreamingPSNR(data_range=1.0),
            lambda m, x, y: m.update(predictions=x, targets=y),
            (p, t),
        ),
        (
            f"fid_update_images_normalize_32x{size}x{size}_random_backbone",
            lambda: FrechetDistance(backbone=backbone, normalize=True),
            lambda m, x: m.update(images=x, real=False),
            (t,),
        ),
    ]


def runner(make, update, args, steps: int):
    """A closure running ``steps`` jitted updates; traced (compiled) on its first call."""
    metric = make()
    step = nnx.jit(update)

    def run():
        for _ in range(steps):
            step(metric, *args)
        jax.block_until_ready(nnx.state(metric))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    steps = 10
    rows = []
    for name, make, update, arrays in cases(args.quick):
        with_checks = runner(make, update, arrays, steps)
        with_checks()  # traced and compiled with the checks
        without = runner(make, lambda m, *a, u=update: u(m, *a), arrays, steps)
        with no_traced_checks():
            without()  # a fresh jitted function, traced and compiled with the checks off
        # Alternate the two so that drift in the machine's load hits both alike.
        ours, reference = [], []
        for _ in range(args.runs):
            ours.append(median_time(with_checks, 1))
            reference.append(median_time(without, 1))
        rows.append((name, statistics.median(ours), statistics.median(reference)))
    print(f"jitted updates with traced value checks vs without ({steps} updates, median of runs)")
    print()
    print("| benchmark | with checks (s) | without (s) | ratio |")
    print("|---|---|---|---|")
    for name, ours, reference in rows:
        print(f"| {name} | {ours:.4g} | {reference:.4g} | {reference / ours:.3g} |")
    print()
    for name, ours, reference in rows:
        print(
            json.dumps(
                {
                    "benchmark": name,
                    "ours_s": ours,
                    "reference_s": reference,
                    "ratio": reference / ours,
                }
            )
        )


if __name__ == "__main__":
    main()
