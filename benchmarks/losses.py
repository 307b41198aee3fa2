"""Metric-learning losses, forward + backward: calibrax against pytorch-metric-learning.

For each loss (PML 2.9 defaults on both sides, all pairs / all triplets), one training-step worth
of work: the loss and its gradient w.r.t. the embeddings, float32, batch ``B`` in {256, 1024},
``d = 128``, 4 samples per class. Ours is ``jax.jit(jax.value_and_grad(loss))`` timed with
``block_until_ready`` after a warm-up (compilation excluded); PML is ``loss(...).backward()``.
Times are medians of ``--runs`` calls. Both sides run single-threaded (``torch.set_num_threads(1)``,
XLA's CPU thread pool off), which is reproducible on a shared machine.

Then the memory of all-triplets ``TripletMarginLoss`` at ``B = 2048`` (1024 with ``--quick``):
ours from XLA's compiled memory analysis (arguments + outputs + temporaries of the jitted
forward + backward), PML's as the growth of the peak resident set of a fresh process over the call
(torch allocates on the CPU heap, which ``tracemalloc`` does not see).

Prints a markdown table, then one JSON line per row with ``benchmark``, ``ours_s``,
``reference_s`` and ``ratio`` (reference / ours: above 1 means calibrax is faster or smaller).
The machine may be shared: treat the ratios as indicative.

Usage: ``python benchmarks/losses.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Single-threaded on both sides: on a shared, oversubscribed machine multi-threaded runtimes spin
# and stall unpredictably, so one thread each gives the reproducible comparison.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax
import jax.numpy as jnp
import numpy as np

import calibrax.learning as C

DIM = 128
PER_CLASS = 4
LOSSES = [
    "ContrastiveLoss",
    "TripletMarginLoss",
    "NTXentLoss",
    "SupConLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "LiftedStructureLoss",
    "GeneralizedLiftedStructureLoss",
    "NPairsLoss",
    "MarginLoss",
]

_PML_MEMORY = """
import sys, torch
from pytorch_metric_learning.losses import TripletMarginLoss
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
b, d, k = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
x = torch.randn(b, d, generator=g, requires_grad=True)
y = torch.arange(b) // k
TripletMarginLoss()(x[:8], y[:8]).backward()
before = rss("VmRSS:")
TripletMarginLoss()(x, y).backward()
print(rss("VmHWM:") - before)
"""


def inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(batch, DIM)).astype(np.float32)
    labels = (np.arange(batch) // PER_CLASS).astype(np.int32)
    return emb, labels


def median_time(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# PML's NTXent and lifted-structure losses build a (positive pairs x negative pairs) matrix:
# 3072 x 1M float32 at B = 1024 (12 GiB). Their PML side is skipped above this many bytes.
PAIR_BY_PAIR = {"NTXentLoss", "LiftedStructureLoss"}
MAX_REFERENCE_BYTES = 2 * 2**30


def reference_bytes(name: str, batch: int) -> int:
    """Rough size of PML's largest intermediate for the pair-by-pair losses (0 for others)."""
    if name not in PAIR_BY_PAIR:
        return 0
    pos_pairs = batch * (PER_CLASS - 1)
    neg_pairs = batch * (batch - PER_CLASS)
    return 4 * pos_pairs * neg_pairs


def time_pair(name: str, batch: int, runs: int) -> tuple[float, float | None]:
    import torch
    from pytorch_metric_learning import losses as pml

    torch.set_num_threads(1)

    emb, labels = inputs(batch)
    ours = getattr(C, name)()
    x, y = jnp.asarray(emb), jnp.asarray(labels)
    step = jax.jit(jax.value_and_grad(lambda e, l: ours(e, l)))

    def run_ours():
        jax.block_until_ready(step(x, y))

    ours_s = median_time(run_ours, runs)
    if reference_bytes(name, batch) > MAX_REFERENCE_BYTES:
        return ours_s, None
    theirs = getattr(pml, name)()
    tl = torch.from_numpy(labels.astype(np.int64))

    def run_theirs():
        te = torch.from_numpy(emb).requires_grad_(True)
        theirs(te, tl).backward()

    return ours_s, median_time(run_theirs, runs)


def memory_pair(batch: int) -> tuple[int, int]:
    emb, labels = inputs(batch)
    loss = C.TripletMarginLoss()
    step = jax.jit(jax.value_and_grad(lambda e, l: loss(e, l)))
    stats = step.lower(jnp.asarray(emb), jnp.asarray(labels)).compile().memory_analysis()
    ours = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    out = subprocess.run(
        [sys.executable, "-c", _PML_MEMORY, str(batch), str(DIM), str(PER_CLASS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return ours, int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 256 only; memory at B = 1024")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    batches = (256,) if args.quick else (256, 1024)
    mem_batch = 1024 if args.quick else 2048

    rows = []
    print("| loss | B | ours (ms) | PML (ms) | ratio (PML / ours) |")
    print("|---|---|---|---|---|")
    for batch in batches:
        for name in LOSSES:
            ours_s, ref_s = time_pair(name, batch, args.runs)
            if ref_s is None:
                gib = reference_bytes(name, batch) / 2**30
                ref_text, ratio = f"skipped (needs ~{gib:.0f} GiB)", None
            else:
                ref_text, ratio = f"{1e3 * ref_s:.2f}", ref_s / ours_s
            ratio_text = "-" if ratio is None else f"{ratio:.2f}"
            print(
                f"| {name} | {batch} | {1e3 * ours_s:.2f} | {ref_text} | {ratio_text} |",
                flush=True,
            )
            rows.append(
                {
                    "benchmark": f"{name} fwd+bwd B={batch} d={DIM}",
                    "ours_s": ours_s,
                    "reference_s": ref_s,
                    "ratio": ratio,
                }
            )
    ours_b, ref_b = memory_pair(mem_batch)
    print()
    print("| all-triplets TripletMarginLoss memory | B | ours (MiB) | PML (MiB) | ratio |")
    print("|---|---|---|---|---|")
    print(
        f"| fwd+bwd peak | {mem_batch} | {ours_b / 2**20:.1f} | {ref_b / 2**20:.1f} "
        f"| {ref_b / ours_b:.1f} |"
    )
    rows.append(
        {
            "benchmark": f"TripletMarginLoss all-triplets peak memory B={mem_batch} d={DIM}",
            "ours_s": None,
            "reference_s": None,
            "ratio": ref_b / ours_b,
            "ours_bytes": ours_b,
            "reference_bytes": ref_b,
        }
    )
    print()
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
