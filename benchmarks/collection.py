"""One backbone pass for four metrics: GenerativeMetrics against one FID update and four metrics.

On the embedded EfficientNet-Lite0 (real ImageNet weights) with uint8 images, time one jitted
update step, in the same run:

- one ``FrechetDistance`` update (the unit of cost: one backbone pass + FID statistics),
- ``GenerativeMetrics`` with FID, KID, IS and PRDC (one backbone pass feeding all four),
- the four metrics updated separately, one jitted step each (four backbone passes);
- the four metrics updated in ONE jitted step: XLA's common-subexpression elimination may merge
  the four identical backbone passes itself (it does on CPU here); the collection does not depend
  on it (eager calls, separate steps, different input conventions).

Each step is ``nnx.jit``-compiled once with donated state and timed as the median of ``--runs``
calls after a warm-up. Prints a markdown table, then one JSON line per row with ``benchmark``,
``ours_s``, ``reference_s`` and ``ratio`` (reference / ours). The rows: the collection against one
FID update (target: ratio >= 1/1.15, i.e. the collection costs at most 1.15x one FID update), and
the collection against the four separate steps (about 4x) and against the four in one jit. Runs without ``jax_enable_x64``, as
a training script would.

Usage: ``python benchmarks/collection.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_time
from flax import nnx

from calibrax.backbones import load
from calibrax.metrics import FrechetDistance
from calibrax.metrics import GenerativeMetrics
from calibrax.metrics import InceptionScore
from calibrax.metrics import KernelDistance
from calibrax.metrics import PrecisionRecall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8 at 128x128")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    batch, size = (8, 128) if args.quick else (32, 224)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    keep = jnp.ones((batch,), bool)
    backbone = load("efficientnet-lite0")
    cap = 4096
    collection = GenerativeMetrics(backbone=backbone, max_samples=cap)
    fid = FrechetDistance(backbone=backbone)
    separate = nnx.List(
        [
            FrechetDistance(backbone=backbone),
            KernelDistance(backbone=backbone, max_samples=cap),
            InceptionScore(backbone=backbone, max_samples=cap),
            PrecisionRecall(backbone=backbone, max_samples=cap),
        ]
    )

    @nnx.jit(donate_argnums=0)
    def step_one(metric, x, k):
        metric.update(images=x, mask=k, real=False)

    @nnx.jit(donate_argnums=0)
    def step_four(metrics, x, k):
        for metric in metrics:
            metric.update(images=x, mask=k, real=False)

    def timed(step, metric):
        def call():
            step(metric, images, keep)
            jax.block_until_ready(nnx.state(metric))

        return median_time(call, args.runs)

    def four_steps():
        for metric in separate:
            step_one(metric, images, keep)
        jax.block_until_ready(nnx.state(separate))

    t_fid = timed(step_one, fid)
    t_collection = timed(step_one, collection)
    t_separate = median_time(four_steps, args.runs)
    t_fused = timed(step_four, separate)
    rows = [
        (f"collection_fid_kid_is_prdc_vs_one_fid_b{batch}_{size}px", t_collection, t_fid),
        (f"collection_vs_four_separate_steps_b{batch}_{size}px", t_collection, t_separate),
        (f"collection_vs_four_metrics_in_one_jit_b{batch}_{size}px", t_collection, t_fused),
    ]
    print(
        f"One update step on efficientnet-lite0, batch {batch} at {size}x{size} (uint8), "
        f"x64 {'on' if jax.config.jax_enable_x64 else 'off'}, median of {args.runs} runs"
    )
    print()
    print("| benchmark | collection (s) | reference (s) | collection / reference |")
    print("|---|---|---|---|")
    for name, ours, ref in rows:
        print(f"| {name} | {ours:.4g} | {ref:.4g} | {ours / ref:.3g}x |")
    print()
    for name, ours, ref in rows:
        print(
            json.dumps({"benchmark": name, "ours_s": ours, "reference_s": ref, "ratio": ref / ours})
        )


if __name__ == "__main__":
    main()
