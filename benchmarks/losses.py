"""Metric-learning losses, forward + backward: calibrax against pytorch-metric-learning.

For each loss (PML 2.9 defaults on both sides, all pairs / all triplets; the few that need
arguments or another call are listed in ``CONSTRUCT`` / ``our_step`` / ``reference_call``), one
training-step worth of work: the loss and its gradient w.r.t. the embeddings, float32, batch ``B`` in {256, 1024},
``d = 128``, 4 samples per class. Ours is ``jax.jit(jax.value_and_grad(loss))`` timed with
``block_until_ready`` after a warm-up (compilation excluded); PML is ``loss(...).backward()``.
Both get the same float32 inputs already in memory (a JAX array / a torch tensor) and both return
the loss and the gradient w.r.t. the embeddings.

Fairness on a shared machine: the process is pinned to one CPU core (``--cpu``) before JAX or torch
start, so both sides run on one core whatever their thread pools do (``torch.set_num_threads(1)``,
XLA's Eigen pool off); the two sides take turns in short rounds (ours, PML, ours, PML, ...) so
that load changes hit both alike. In each round a side gets one untimed call, then 5 timed ones:
calling the other library right before evicts a side's code and buffers from the cache, which
at B = 256 (about a millisecond) doubled the time of whichever side ran second, and a training
loop calls the same step over and over. Each call is timed both by the wall clock and by the
process's CPU time (``time.process_time``, which counts every thread and excludes the time spent
waiting for the core while other programs run). Times are medians of the ``5 x --runs`` timed
calls (1 per round for a call over 0.1 s).

Then the memory of all-triplets ``TripletMarginLoss`` at ``B = 2048`` (1024 with ``--quick``):
ours from XLA's compiled memory analysis (arguments + outputs + temporaries of the jitted
forward + backward), PML's as the growth of the peak resident set of a fresh process over the call
(torch allocates on the CPU heap, which ``tracemalloc`` does not see).

Prints a markdown table, then one JSON line per row with ``benchmark``, ``ours_s``,
``reference_s`` and ``ratio`` (wall clock, reference / ours: above 1 means calibrax is faster or
smaller), and ``ours_cpu_s``, ``reference_cpu_s``, ``cpu_ratio`` (CPU time). On a loaded machine
the CPU-time ratio is the steadier of the two.

``--cbm`` adds CrossBatchMemory rows: one training step of ``CrossBatchMemory(loss,
memory_size=8192)`` (enqueue the batch, the loss of the batch against the whole filled memory, its
gradient w.r.t. the batch), after 40 warm-up steps that fill the memory, for the losses whose PML
side fits in memory at this size (pair- and mask-based ones: Contrastive, SupCon,
MultiSimilarity; PML's triplet and NTXent conversions build (pairs x pairs) arrays of tens of
GiB). Ours is the functional form a training loop jits: ``nnx.split`` once, then a
``jax.jit``-compiled ``(state, x, y) -> (loss, grad, new state)``.

Usage: ``python benchmarks/losses.py [--quick] [--runs N] [--cpu K] [--losses NAME ...]
[--cbm] [--cbm-only]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Eigen's intra-op pool off: the process is pinned to one core (see ``pin_to_one_core``), where a
# thread pool only adds hand-offs between threads.
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"

import jax
import jax.numpy as jnp
import numpy as np

import calibrax.metric_learning as C

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
# Issue 16 (PML 2.9's other losses). The class-weight ones are built with B / 4 classes, and
# their step differentiates the class weights too (a training step needs both; PML's backward
# computes them anyway).
ISSUE16_LOSSES = [
    "AngularLoss",
    "FastAPLoss",
    "HistogramLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "LargeMarginSoftmaxLoss",
    "SphereFaceLoss",
    "NCALoss",
    "P2SGradLoss",
    "SoftTripleLoss",
]
CLASS_WEIGHT_LOSSES = {"LargeMarginSoftmaxLoss", "SphereFaceLoss", "P2SGradLoss", "SoftTripleLoss"}
# Issue 16, the second batch (once benchmarks/losses_b.py).
ISSUE16_LOSSES_B = [
    "SignalToNoiseRatioContrastiveLoss",
    "TupletMarginLoss",
    "VICRegLoss",
    "SmoothAPLoss",
    "RankedListLoss",
    "ThresholdConsistentMarginLoss",
    "DynamicSoftMarginLoss",
    "PNPLoss",
    "ManifoldLoss",
]
# Losses built or called otherwise than ``Loss()(embeddings, labels)``: PML 2.9 defaults, plus the
# required arguments (RankedListLoss: margin 0.4, Tn 1). VICReg compares the batch with a second
# view (the embeddings rolled by one row); ManifoldLoss gets the same fixed meta-classes on both
# sides (each proxy in turn) and both differentiate its proxies too; DynamicSoftMarginLoss and
# ManifoldLoss hold state, so ours runs under ``nnx.jit``.
CONSTRUCT = {
    "RankedListLoss": {"margin": 0.4, "Tn": 1.0},
    "ManifoldLoss": {"l": DIM},
}
STATEFUL = {"DynamicSoftMarginLoss", "ManifoldLoss"}

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


def pin_to_one_core(cpu: int) -> None:
    """Pin every thread of this process to ``cpu``; threads started later inherit it."""
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {cpu})


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved_medians(fns: list, runs: int, chunk: int = 5) -> list[tuple[float, float]]:
    """Median (wall, CPU) seconds of each function over ``runs`` rounds; in each round every
    function in turn gets one untimed call (to bring its code and buffers back into the cache the
    other side just used) and then ``chunk`` timed calls (1 for calls over 0.1 s)."""
    samples = [[] for _ in fns]
    # A side whose call takes over 0.1 s (PML's pair-by-pair losses: seconds) is not helped by
    # the cache: one timed call per round.
    chunks = [chunk if timed(fn)[0] < 0.1 else 1 for fn in fns]
    for _ in range(runs):
        for fn, out, n in zip(fns, samples, chunks, strict=True):
            fn()
            out.extend(timed(fn) for _ in range(n))
    return [
        (statistics.median(w for w, _ in out), statistics.median(c for _, c in out))
        for out in samples
    ]


# PML's NTXent, lifted-structure and tuplet-margin losses build a (positive pairs x negative
# pairs) matrix: 3072 x 1M float32 at B = 1024 (12 GiB). Their PML side is skipped above this
# many bytes.
PAIR_BY_PAIR = {"NTXentLoss", "LiftedStructureLoss", "TupletMarginLoss"}
# PML's Smooth-AP and PNP hold about five (B, B, B) float32 arrays: 20 GiB at B = 1024.
CUBIC = {"SmoothAPLoss": 5, "PNPLoss": 5}
MAX_REFERENCE_BYTES = 2 * 2**30


def reference_bytes(name: str, batch: int) -> int:
    """Rough size of PML's largest intermediates for the pair-by-pair and the (B, B, B) losses
    (0 for others)."""
    if name in CUBIC:
        return 4 * CUBIC[name] * batch**3
    if name not in PAIR_BY_PAIR:
        return 0
    pos_pairs = batch * (PER_CLASS - 1)
    neg_pairs = batch * (batch - PER_CLASS)
    return 4 * pos_pairs * neg_pairs


def our_step(name: str, x: jax.Array, y: jax.Array):
    """A function running one jitted forward + backward of our loss: the gradient w.r.t. the
    embeddings, and the class weights of a class-weight loss or ManifoldLoss's proxies (see
    ``CONSTRUCT``)."""
    from flax import nnx

    batch = x.shape[0]
    if name in CLASS_WEIGHT_LOSSES:
        classes = batch // PER_CLASS
        if name == "P2SGradLoss":
            loss = C.P2SGradLoss(DIM, classes, rngs=nnx.Rngs(0))
        else:
            loss = getattr(C, name)(classes, DIM, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(loss)
        step = jax.jit(
            jax.value_and_grad(lambda s, e, l: nnx.merge(graphdef, s)(e, l), argnums=(0, 1))
        )
        return lambda: jax.block_until_ready(step(state, x, y))
    kwargs = dict(CONSTRUCT.get(name, {}))
    if name == "ManifoldLoss":
        ours = C.ManifoldLoss(kwargs.pop("l"), rngs=nnx.Rngs(0), **kwargs)
    else:
        ours = getattr(C, name)(**kwargs)
    if name == "VICRegLoss":
        ref = jnp.roll(x, 1, axis=0)
        step = jax.jit(jax.value_and_grad(lambda e: ours(e, ref_emb=ref)))
        return lambda: jax.block_until_ready(step(x))
    if name in STATEFUL:
        meta = jnp.arange(batch, dtype=jnp.int32) % 50

        def f(e, model, l):
            if name == "ManifoldLoss":
                return model(e, indices_tuple=meta)
            return model(e, l)

        argnums = (0, 1) if name == "ManifoldLoss" else 0
        stateful = nnx.jit(nnx.value_and_grad(f, argnums=argnums))
        return lambda: jax.block_until_ready(stateful(x, ours, y))
    step = jax.jit(jax.value_and_grad(lambda e, l: ours(e, l)))
    return lambda: jax.block_until_ready(step(x, y))


def their_loss(name: str, batch: int):
    """PML's loss with its defaults (class-weight losses: ``batch / 4`` classes, ``d`` dims; see
    ``CONSTRUCT``)."""
    from pytorch_metric_learning import losses as pml

    if name not in CLASS_WEIGHT_LOSSES:
        return getattr(pml, name)(**CONSTRUCT.get(name, {}))
    classes = batch // PER_CLASS
    if name == "P2SGradLoss":
        return pml.P2SGradLoss(descriptors_dim=DIM, num_classes=classes)
    return getattr(pml, name)(num_classes=classes, embedding_size=DIM)


def reference_call(name: str, theirs, emb: np.ndarray, labels):
    """PML's ``embeddings -> loss`` for ``name`` (see ``CONSTRUCT``)."""
    import torch

    if name == "VICRegLoss":
        ref = torch.from_numpy(np.roll(emb, 1, axis=0))
        return lambda e: theirs(e, ref_emb=ref)
    if name == "ManifoldLoss":
        meta = torch.arange(emb.shape[0]) % 50
        return lambda e: theirs(e, indices_tuple=meta)
    if name == "DynamicSoftMarginLoss":
        # PML keeps the autograd graph in its histogram: a second backward fails unless the
        # histogram is detached between steps.
        def call(e):
            theirs.hist_ = theirs.hist_.detach()
            return theirs(e, labels)

        return call
    return lambda e: theirs(e, labels)


def time_pair(name: str, batch: int, runs: int) -> dict[str, float | None]:
    """Median wall and CPU seconds of one forward + backward, ours and PML's (None if skipped)."""
    import torch

    torch.set_num_threads(1)

    emb, labels = inputs(batch)
    run_ours = our_step(name, jnp.asarray(emb), jnp.asarray(labels))

    fns = [run_ours]
    if reference_bytes(name, batch) <= MAX_REFERENCE_BYTES:
        tl = torch.from_numpy(labels.astype(np.int64))
        call = reference_call(name, their_loss(name, batch), emb, tl)

        def run_theirs():
            te = torch.from_numpy(emb).requires_grad_(True)
            call(te).backward()
            return te.grad

        fns.append(run_theirs)
    medians = interleaved_medians(fns, runs)
    (ours_s, ours_cpu), (ref_s, ref_cpu) = medians[0], (medians[1:] or [(None, None)])[0]
    return {
        "ours_s": ours_s,
        "ours_cpu_s": ours_cpu,
        "reference_s": ref_s,
        "reference_cpu_s": ref_cpu,
    }


CBM_LOSSES = ["ContrastiveLoss", "SupConLoss", "MultiSimilarityLoss"]
CBM_MEMORY = 8192


def cbm_batches(batch: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches, 4 samples per class, the classes moving on by B / 4 each step (out of
    2048), so the memory holds several batches' worth of each label."""
    out = []
    for step in range(steps):
        emb, _ = inputs(batch, seed=step)
        labels = ((np.arange(batch) // PER_CLASS + step * (batch // PER_CLASS)) % 2048).astype(
            np.int32
        )
        out.append((emb, labels))
    return out


def time_cbm(name: str, batch: int, runs: int) -> dict[str, float | None]:
    """Median wall and CPU seconds of one CrossBatchMemory training step, ours and PML's, with a
    filled memory of CBM_MEMORY slots."""
    import torch
    from flax import nnx
    from pytorch_metric_learning import losses as pml

    torch.set_num_threads(1)
    warm = cbm_batches(batch, CBM_MEMORY // batch + 8)
    memory = C.CrossBatchMemory(getattr(C, name)(), DIM, CBM_MEMORY)
    graphdef, state = nnx.split(memory)

    @jax.jit
    def step(state, x, y):
        module = nnx.merge(graphdef, state)
        loss, grad = nnx.value_and_grad(lambda x, m: m(x, y))(x, module)
        return loss, grad, nnx.state(module)

    theirs = pml.CrossBatchMemory(getattr(pml, name)(), DIM, memory_size=CBM_MEMORY)
    for emb, labels in warm:
        _, _, state = step(state, jnp.asarray(emb), jnp.asarray(labels))
        theirs(torch.from_numpy(emb), torch.from_numpy(labels.astype(np.int64)))
    emb, labels = warm[-1]
    x, y = jnp.asarray(emb), jnp.asarray(labels)
    tl = torch.from_numpy(labels.astype(np.int64))
    holder = {"state": state}

    def run_ours():
        loss, grad, holder["state"] = step(holder["state"], x, y)
        jax.block_until_ready((loss, grad))

    def run_theirs():
        te = torch.from_numpy(emb).requires_grad_(True)
        theirs(te, tl).backward()
        return te.grad

    (ours_s, ours_cpu), (ref_s, ref_cpu) = interleaved_medians([run_ours, run_theirs], runs)
    return {
        "ours_s": ours_s,
        "ours_cpu_s": ours_cpu,
        "reference_s": ref_s,
        "reference_cpu_s": ref_cpu,
    }


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


def ratio(ref: float | None, ours: float) -> float | None:
    return None if ref is None else ref / ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 256 only; memory at B = 1024")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--cpu",
        type=int,
        default=min(os.sched_getaffinity(0)),
        help="the core to pin to (default: the lowest allowed)",
    )
    all_losses = LOSSES + ISSUE16_LOSSES + ISSUE16_LOSSES_B
    parser.add_argument(
        "--losses", nargs="+", default=all_losses, choices=all_losses, metavar="NAME"
    )
    parser.add_argument("--batches", nargs="+", type=int, default=None, help="default 256 1024")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory comparison")
    parser.add_argument("--cbm", action="store_true", help="add the CrossBatchMemory rows")
    parser.add_argument("--cbm-only", action="store_true", help="only the CrossBatchMemory rows")
    args = parser.parse_args()
    if args.cbm_only:
        args.cbm, args.losses, args.no_memory = True, [], True
    pin_to_one_core(args.cpu)
    batches = args.batches or ((256,) if args.quick else (256, 1024))
    mem_batch = 1024 if args.quick else 2048

    rows = []
    print(f"pinned to CPU {args.cpu}; medians of {args.runs} rounds of 5 calls per side")
    print("| loss | B | ours (ms) | PML (ms) | ratio | ours CPU (ms) | PML CPU (ms) | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in batches:
        for name in args.losses:
            t = time_pair(name, batch, args.runs)
            row = {
                "benchmark": f"{name} fwd+bwd B={batch} d={DIM}",
                **t,
                "ratio": ratio(t["reference_s"], t["ours_s"]),
                "cpu_ratio": ratio(t["reference_cpu_s"], t["ours_cpu_s"]),
            }
            rows.append(row)
            ours_cols = [f"{1e3 * t['ours_s']:.2f}", f"{1e3 * t['ours_cpu_s']:.2f}"]
            if t["reference_s"] is None:
                gib = reference_bytes(name, batch) / 2**30
                ref_cols = [f"skipped (needs ~{gib:.0f} GiB)", "-", "-", "-"]
            else:
                ref_cols = [
                    f"{1e3 * t['reference_s']:.2f}",
                    f"{row['ratio']:.2f}",
                    f"{1e3 * t['reference_cpu_s']:.2f}",
                    f"{row['cpu_ratio']:.2f}",
                ]
            cols = [name, str(batch), ours_cols[0], *ref_cols[:2], ours_cols[1], *ref_cols[2:]]
            print("| " + " | ".join(cols) + " |", flush=True)
    if args.cbm:
        for batch in batches:
            for name in CBM_LOSSES:
                t = time_cbm(name, batch, args.runs)
                row = {
                    "benchmark": f"CrossBatchMemory({name}) memory={CBM_MEMORY} fwd+bwd "
                    f"B={batch} d={DIM}",
                    **t,
                    "ratio": ratio(t["reference_s"], t["ours_s"]),
                    "cpu_ratio": ratio(t["reference_cpu_s"], t["ours_cpu_s"]),
                }
                rows.append(row)
                cols = [
                    f"CrossBatchMemory({name}, {CBM_MEMORY})",
                    str(batch),
                    f"{1e3 * t['ours_s']:.2f}",
                    f"{1e3 * t['reference_s']:.2f}",
                    f"{row['ratio']:.2f}",
                    f"{1e3 * t['ours_cpu_s']:.2f}",
                    f"{1e3 * t['reference_cpu_s']:.2f}",
                    f"{row['cpu_ratio']:.2f}",
                ]
                print("| " + " | ".join(cols) + " |", flush=True)
    if not args.no_memory:
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
