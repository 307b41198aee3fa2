"""KID compute on buffered features: calibrax against torchmetrics.

Both sides hold the same real and generated features and compute KID over ``subsets`` subsets of
``subset_size`` rows (polynomial kernel, degree 3):

- ours: ``KernelDistance.compute()`` under ``nnx.jit``,
- torchmetrics: ``KernelInceptionDistance.compute()`` with an identity feature module.

Rows are given for float32 (torchmetrics' dtype for float32 features; ours with
``dtype=jnp.float32``) and float64 (both sides). The subset draws differ between the libraries, so
the two KID values agree only statistically (printed for reference). Times are medians of ``--runs``
calls after a warm-up (our compilation is in the warm-up). Prints a markdown table, then one JSON
line per row with ``benchmark``, ``ours_s``, ``reference_s`` and ``ratio`` (reference / ours: above
1 means calibrax is faster). The machine may be shared: treat the ratios as indicative.

Usage: ``python benchmarks/kid.py [--quick] [--runs N]``.
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

from calibrax.metrics import KernelDistance  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1000, d = 512, 10 subsets of 200")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    # Full size: 5000 + 5000 features and KID's default 100 subsets of 1000 (ours and
    # torchmetrics'); ours then computes the kernel over the buffers once (see kid_from_buffers).
    n, d, subsets, size = (1000, 512, 10, 200) if args.quick else (5000, 2048, 100, 1000)
    rng = np.random.default_rng(0)
    real = rng.normal(size=(n, d))
    fake = rng.normal(size=(n, d)) * 1.05 + 0.02

    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    rows = []
    for dtype, np_dtype, torch_dtype in (
        ("float32", np.float32, torch.float32),
        ("float64", np.float64, torch.float64),
    ):
        ours = KernelDistance(
            backbone=None,
            num_features=d,
            max_samples=n,
            subsets=subsets,
            subset_size=size,
            dtype=np_dtype,
        )
        ours.update(features=jnp.asarray(real.astype(np_dtype)), real=True)
        ours.update(features=jnp.asarray(fake.astype(np_dtype)), real=False)
        compute = nnx.jit(lambda m: m.compute())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = KernelInceptionDistance(
                feature=Identity(), subsets=subsets, subset_size=size, compute_with_cache=False
            )
        ref.update(torch.tensor(real, dtype=torch_dtype), real=True)
        ref.update(torch.tensor(fake, dtype=torch_dtype), real=False)
        ours_value = float(compute(ours)["kid_mean"])
        ref_value = float(ref.compute()[0])
        ours_s = median_time(
            lambda m=ours, c=compute: c(m)["kid_mean"].block_until_ready(), args.runs
        )
        ref_s = median_time(ref.compute, args.runs)
        rows.append(
            (f"kid_n{n}_d{d}_{subsets}x{size}_{dtype}", ours_s, ref_s, ours_value, ref_value)
        )

    print(
        f"KID compute, {n} + {n} features, d = {d}, {subsets} subsets of {size}, "
        f"median of {args.runs} runs"
    )
    print()
    print("| benchmark | ours (s) | reference (s) | ratio | KID ours / torchmetrics |")
    print("|---|---|---|---|---|")
    for name, ours_s, ref_s, ov, rv in rows:
        print(
            f"| {name} | {ours_s:.4g} | {ref_s:.4g} | {ref_s / ours_s:.3g}x | {ov:.4g} / {rv:.4g} |"
        )
    print()
    for name, ours_s, ref_s, _, _ in rows:
        print(
            json.dumps(
                {"benchmark": name, "ours_s": ours_s, "reference_s": ref_s, "ratio": ref_s / ours_s}
            )
        )


if __name__ == "__main__":
    main()
