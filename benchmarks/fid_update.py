"""Streaming FID update on precomputed features: calibrax against torchmetrics.

Both sides fold the same float32 feature batches (d = 2048, batches of 256) into the real-side
statistics:

- ours: ``FrechetDistance.update(features=..., real=True)`` under ``nnx.jit`` with the metric
  donated (batch-centred float32 Gram matrix, each off-diagonal block once; float64 Chan
  accumulation in place),
- torchmetrics: ``FrechetInceptionDistance.update`` with an identity feature module (features cast to
  float64, ``Σx`` and ``XᵀX`` accumulated in float64).

The resulting covariances are checked to agree. Times are the medians over ``--runs`` passes over
all batches (after a warm-up pass). Prints a markdown table, then one JSON line per row with
``benchmark``, ``ours_s``, ``reference_s`` and ``ratio`` (reference / ours: above 1 means calibrax is
faster). The machine may be shared: treat the ratios as indicative.

Usage: ``python benchmarks/fid_update.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_time  # noqa: E402
from flax import nnx  # noqa: E402

from calibrax.metrics import FrechetDistance  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 512, 8 batches")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    d, batches, batch = (512, 8, 256) if args.quick else (2048, 20, 256)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(batches * batch, d)) + 0.5).astype(np.float32)
    jax_batches = [jnp.asarray(data[i * batch : (i + 1) * batch]) for i in range(batches)]

    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = d

        def forward(self, x):
            return x

    torch_batches = [torch.tensor(data[i * batch : (i + 1) * batch]) for i in range(batches)]
    # Donating the metric lets XLA update the float64 state in place, as torchmetrics' `+=` does.
    update = nnx.jit(lambda m, x: m.update(features=x, real=True), donate_argnums=0)

    def ours():
        metric = FrechetDistance(backbone=None, num_features=d)
        for x in jax_batches:
            update(metric, x)
        metric.real_scatter[...].block_until_ready()
        return metric

    def reference():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = FrechetInceptionDistance(feature=Identity())
        for x in torch_batches:
            metric.update(x, real=True)
        return metric

    mine, theirs = ours(), reference()
    n = batches * batch
    mean = theirs.real_features_sum / n
    cov_ref = (theirs.real_features_cov_sum - n * torch.outer(mean, mean)) / (n - 1)
    cov_ours = np.asarray(mine.real_scatter[...]) / (n - 1)
    rel = float(np.abs(cov_ours - cov_ref.numpy()).max() / np.abs(cov_ref.numpy()).max())

    ours_s = median_time(ours, args.runs)
    ref_s = median_time(reference, args.runs)
    name = f"fid_update_d{d}_{batches}x{batch}"
    print(
        f"FID streaming update, {batches} batches of {batch} float32 features, d = {d}, "
        f"median of {args.runs} runs; max covariance difference {rel:.1e} (relative)"
    )
    print()
    print("| benchmark | ours (s) | reference (s) | ratio |")
    print("|---|---|---|---|")
    print(f"| {name} | {ours_s:.4g} | {ref_s:.4g} | {ref_s / ours_s:.3g}x |")
    print()
    print(
        json.dumps(
            {"benchmark": name, "ours_s": ours_s, "reference_s": ref_s, "ratio": ref_s / ours_s}
        )
    )


if __name__ == "__main__":
    main()
