"""CMMD on buffered embeddings: calibrax against a numpy implementation of the reference code.

Both sides compute CMMD (sigma 10, scale 1000, plain kernel means) of ``n`` real and ``n``
generated unit-norm embeddings of dimension ``d`` (CLIP ViT-L/14's 768 by default):

- ours: :func:`calibrax.functional.cmmd` (jitted; blocked kernel sums, symmetric blocks once),
- numpy: the google-research ``cmmd/distance.py`` ``mmd`` transcribed to numpy (three full
  ``n x n`` kernel matrices), on the same arrays: float32 (CLIP embeddings are float32, and the
  reference runs in JAX's default float32) and float64.

Both sides are matrix-product bound: numpy forms ``n² + m² + nm`` kernel entries, ours forms the
symmetric kernels' blocks once (``n²/2 + m²/2 + nm``), so about 1.5x fewer products is the
structural gain; the rest is XLA's fused exp/sum against numpy's passes over three full matrices.
To show that bound in the same run, the script also times one bare ``n x n`` product ``x yᵀ``
per dtype (XLA's jitted ``jnp.dot`` against numpy's BLAS, rows ``matmul_...``): at equal product
speed, an exact CMMD cannot beat the reference by more than about ``3 / 2`` times its product
speed ratio plus the elementwise passes numpy makes (which count for much more in float64, where
its ``exp`` over three ``n x n`` matrices is slow).

Times are medians of ``--runs`` calls after a warm-up (our compilation is in the warm-up). Prints
a markdown table, then one JSON line per row with ``benchmark``, ``ours_s``, ``reference_s`` and
``ratio`` (reference / ours: above 1 means calibrax is faster). Also prints both values beside the
float64 value: ours (``expm1`` sums) is the closer one. The machine may be shared: treat the ratios
as indicative.

Usage: ``python benchmarks/cmmd.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_time  # noqa: E402

from calibrax.functional import cmmd  # noqa: E402


def numpy_cmmd(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0):
    """google-research cmmd/distance.py ``mmd`` in numpy (same expansion, same dtype as input)."""
    x_sq = np.einsum("ij,ij->i", x, x)
    y_sq = np.einsum("ij,ij->i", y, y)
    gamma = 1.0 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return scale * (k_xx + k_yy - 2 * k_xy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2000 per side")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n, d = (2000, 768) if args.quick else (10_000, 768)
    rng = np.random.default_rng(0)
    real = rng.normal(size=(n, d))
    fake = rng.normal(size=(n, d)) + 0.02
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    fake /= np.linalg.norm(fake, axis=1, keepdims=True)
    rows = []
    for dtype in (np.float32, np.float64):
        x, y = real.astype(dtype), fake.astype(dtype)
        xj, yj = jnp.asarray(x), jnp.asarray(y)
        ours_value = float(cmmd(xj, yj))
        ref_value = float(numpy_cmmd(x, y))
        ours_s = median_time(lambda xj=xj, yj=yj: cmmd(xj, yj).block_until_ready(), args.runs)
        ref_s = median_time(lambda x=x, y=y: numpy_cmmd(x, y), args.runs)
        rows.append(
            (f"cmmd_n{n}_d{d}_{np.dtype(dtype).name}", ours_s, ref_s, ours_value, ref_value)
        )
    products = []
    product = jax.jit(lambda a, b: jnp.dot(a, b.T))
    for dtype in (np.float32, np.float64):
        x, y = real.astype(dtype), fake.astype(dtype)
        xj, yj = jnp.asarray(x), jnp.asarray(y)
        ours_s = median_time(lambda xj=xj, yj=yj: product(xj, yj).block_until_ready(), args.runs)
        ref_s = median_time(lambda x=x, y=y: x @ y.T, args.runs)
        products.append((f"matmul_n{n}_d{d}_{np.dtype(dtype).name}", ours_s, ref_s))
    exact = rows[1][3]

    print(f"CMMD, {n} + {n} embeddings, d = {d}, median of {args.runs} runs")
    print()
    print("| benchmark | ours (s) | numpy (s) | ratio | CMMD ours / numpy (float64 ours) |")
    print("|---|---|---|---|---|")
    for name, ours_s, ref_s, ov, rv in rows:
        print(
            f"| {name} | {ours_s:.4g} | {ref_s:.4g} | {ref_s / ours_s:.3g}x | "
            f"{ov:.7g} / {rv:.7g} ({exact:.7g}) |"
        )
    for name, ours_s, ref_s in products:
        print(
            f"| {name} (one bare product) | {ours_s:.4g} | {ref_s:.4g} | {ref_s / ours_s:.3g}x | |"
        )
    print()
    for name, ours_s, ref_s in [r[:3] for r in rows] + products:
        print(
            json.dumps(
                {"benchmark": name, "ours_s": ours_s, "reference_s": ref_s, "ratio": ref_s / ours_s}
            )
        )


if __name__ == "__main__":
    main()
