"""Fit time of post-hoc calibration heads: calibrax against netcal 1.4, same data, same run.

Data: ``N`` held-out logits of ``K`` classes (seeded, over-confident: true logits times 2.5) and
their labels, float32. Each fit starts from a fresh head.

- Temperature scaling: ``calibrax.learned.TemperatureScaling().fit(logits, labels)`` (optax
  L-BFGS in one jitted ``while_loop``) against ``netcal.scaling.TemperatureScaling(method="mle")
  .fit(softmax(logits), labels)`` (netcal's MLE: scipy ``minimize`` on its torch NLL, which takes
  probabilities and works on their logits). Same objective, same optimum.
- Dirichlet calibration: netcal 1.4 has no Dirichlet calibration. The nearest model it ships is
  ``LogisticCalibration(method="mle")`` on the probabilities, which is vector scaling of
  ``log p`` (the diagonal of Dirichlet calibration's matrix, ``2K`` parameters instead of
  ``K^2 + K``). The row times our full ``DirichletCalibration(K)`` (ODIR defaults) against that
  smaller netcal model: the reference solves the easier problem, so the ratio understates ours.

Both sides get the same arrays already in memory. Ours is timed after one untimed fit (the jit
compilation, which a later fit of a head of the same shape reuses); times are medians of
``--runs`` fits. The machine is shared by other jobs: numbers are noisy.

Prints a markdown table, then one JSON line per row (``benchmark``, ``ours_s``, ``reference_s``,
``ratio`` = reference / ours).

Usage: ``python benchmarks/calibration_fit.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_time
from scipy.special import softmax

from calibrax.learned import DirichletCalibration
from calibrax.learned import TemperatureScaling


def data(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    true = rng.normal(size=(n, k)) * 1.5
    labels = np.array([rng.choice(k, p=p) for p in softmax(true, axis=1)])
    return (2.5 * true).astype(np.float32), labels.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from netcal.scaling import LogisticCalibration
    from netcal.scaling import TemperatureScaling as NetcalTemperature

    n, k = (2000, 10) if args.quick else (5000, 10)
    logits, labels = data(n, k)
    probs = softmax(logits.astype(np.float64), axis=1)
    x, y = jnp.asarray(logits), jnp.asarray(labels)

    def ours_temperature():
        head = TemperatureScaling()
        head.fit(x, y)
        return jax.block_until_ready(head.temperature)

    def ours_dirichlet():
        head = DirichletCalibration(k)
        head.fit(x, y)
        return jax.block_until_ready(head(x))

    def netcal_fit(cls):
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls(method="mle").fit(probs, labels, tensorboard=False)

        return run

    rows = [
        (
            f"temperature_fit_n{n}_k{k}_vs_netcal_TemperatureScaling",
            ours_temperature,
            netcal_fit(NetcalTemperature),
        ),
        (
            f"dirichlet_fit_n{n}_k{k}_vs_netcal_LogisticCalibration(diagonal)",
            ours_dirichlet,
            netcal_fit(LogisticCalibration),
        ),
    ]
    results = []
    for name, ours, ref in rows:
        t_ours = median_time(ours, args.runs)
        t_ref = median_time(ref, args.runs)
        results.append((name, t_ours, t_ref))
    print(f"Calibration head fit time, N = {n}, K = {k}, median of {args.runs} fits\n")
    print("| benchmark | calibrax (s) | netcal 1.4 (s) | ratio |")
    print("|---|---|---|---|")
    for name, t_ours, t_ref in results:
        print(f"| {name} | {t_ours:.4g} | {t_ref:.4g} | {t_ref / t_ours:.3g}x |")
    print()
    for name, t_ours, t_ref in results:
        print(
            json.dumps(
                {"benchmark": name, "ours_s": t_ours, "reference_s": t_ref, "ratio": t_ref / t_ours}
            )
        )


if __name__ == "__main__":
    main()
