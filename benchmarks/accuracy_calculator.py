"""AccuracyCalculator at 20k x 128: calibrax (blocked exact kNN in JAX) against
pytorch-metric-learning's (faiss ``IndexFlatL2``), in the same run.

20,000 float32 embeddings of 100 classes (200 each: class centres plus noise), leave-one-out,
``k="max_bin_count"`` (PML's setting for MAP@R), the five retrieval metrics. The two results are
checked to agree to 1e-4 (float32 on both sides). Times are medians of ``--runs`` runs after a
warm-up (which compiles ours). Prints a table, then one JSON line per row (``benchmark``,
``ours_s``, ``reference_s``, ``ratio`` = reference / ours: above 1 means calibrax is faster). The
machine may be shared: treat the ratios as indicative.

Usage: ``python benchmarks/accuracy_calculator.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from _timing import median_time
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PMLCalculator

from calibrax.metric_learning import AccuracyCalculator

METRICS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4k x 128 instead of 20k x 128")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n, d, classes = (4000, 128, 20) if args.quick else (20_000, 128, 100)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), n // classes)
    x = (rng.normal(size=(classes, d))[labels] + 1.5 * rng.normal(size=(n, d))).astype(np.float32)
    ours = AccuracyCalculator(include=METRICS, k="max_bin_count")
    theirs = PMLCalculator(include=METRICS, k="max_bin_count", device=torch.device("cpu"))
    a, b = ours.get_accuracy(x, labels), theirs.get_accuracy(x, labels)
    worst = max(abs(a[m] - b[m]) for m in METRICS)
    assert worst < 1e-4, (a, b)
    ours_s = median_time(lambda: ours.get_accuracy(x, labels), args.runs)
    pml_s = median_time(lambda: theirs.get_accuracy(x, labels), args.runs)
    name = f"accuracy_calculator_5_retrieval_metrics_{n}x{d}_max_bin_count_vs_pml_faiss"
    print(f"AccuracyCalculator, {n} x {d} float32, {classes} classes, median of {args.runs} runs")
    print(f"largest metric difference: {worst:.2e}")
    print()
    print("| benchmark | ours (s) | PML + faiss (s) | ratio |")
    print("|---|---|---|---|")
    print(f"| {name} | {ours_s:.4g} | {pml_s:.4g} | {pml_s / ours_s:.3g}x |")
    print()
    print(
        json.dumps(
            {"benchmark": name, "ours_s": ours_s, "reference_s": pml_s, "ratio": pml_s / ours_s}
        )
    )


if __name__ == "__main__":
    main()
