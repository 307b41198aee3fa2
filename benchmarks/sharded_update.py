"""Metric updates and a training step on 8 simulated devices against the same work on 1 device.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set here, before jax is imported) splits
the host CPU into 8 XLA devices. They share the machine's cores, so on a small machine this
measures the *overhead* of sharding (splitting the batch, per-device programs, collectives), not a
speed-up: a ratio below 1 is expected there. On a host with real accelerators the same code
splits the work over them.

Rows (each: "ours" = 8 devices, "reference" = the same work on 1 device with ``nnx.jit``):

- ``fid_sharded_update``: ``sharded_update`` (jit + ``NamedSharding``) of ``FrechetDistance`` on
  float32 features, d = 2048, batches of 256;
- ``fid_shard_map_update``: the same with ``shard_map_update`` (per-device update + Chan
  ``reduce``);
- ``kid_sharded_update``: ``KernelDistance`` feature buffers (d = 2048);
- ``lpips_sharded_update``: ``LPIPSMetric`` with the small ``ToyTrunk`` on 64x64 images;
- ``lpips_train_step``: ``data_parallel_train_step`` of the LPIPS heads (Adam), reference = the
  same step on a 1-device mesh.

Each row checks that the 8-device result agrees with the 1-device one. Times are medians over
``--runs`` passes over all batches (after a warm-up pass that compiles). Prints a markdown table,
then one JSON line per row with ``benchmark``, ``ours_s``, ``reference_s`` and ``ratio``
(reference / ours: above 1 means 8 devices are faster).

Usage: ``python benchmarks/sharded_update.py [--quick] [--runs N]``.
"""

from __future__ import annotations

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _timing import median_time  # noqa: E402
from flax import nnx  # noqa: E402

from calibrax.learned import LPIPS  # noqa: E402
from calibrax.learned import LPIPSTrainer  # noqa: E402
from calibrax.learned import ranking_loss  # noqa: E402
from calibrax.learned._toy import ToyTrunk  # noqa: E402
from calibrax.metrics import FrechetDistance  # noqa: E402
from calibrax.metrics import KernelDistance  # noqa: E402
from calibrax.parallel import data_mesh  # noqa: E402
from calibrax.parallel import data_parallel_train_step  # noqa: E402
from calibrax.parallel import shard_batch  # noqa: E402
from calibrax.parallel import shard_map_update  # noqa: E402
from calibrax.parallel import sharded_update  # noqa: E402


def block(tree):
    jax.tree.map(lambda x: x.block_until_ready(), tree)
    return tree


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def metric_rows(args, mesh8):
    d, n_batches, batch = (512, 4, 256) if args.quick else (2048, 10, 256)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(n_batches * batch, d)) + 0.5).astype(np.float32)
    batches = [data[i * batch : (i + 1) * batch] for i in range(n_batches)]
    # Both sides start from batches already on their devices: the timings are of the updates.
    on_one = [jnp.asarray(x) for x in batches]
    on_eight = [shard_batch(x, mesh8) for x in batches]
    one_update = nnx.jit(lambda m, x: m.update(features=x, real=True))

    def make_fid():
        return FrechetDistance(backbone=None, num_features=d)

    def make_kid():
        return KernelDistance(
            backbone=None,
            num_features=d,
            max_samples=n_batches * batch,
            subsets=10,
            subset_size=100,
        )

    def one_device(make, state):
        def run():
            metric = make()
            for x in on_one:
                one_update(metric, x)
            return block(getattr(metric, state)[...])

        return run

    def eight_devices(make, update, state):
        def run():
            metric = make()
            for x in on_eight:
                update(metric, mesh8, features=x, real=True)
            return block(getattr(metric, state)[...])

        return run

    rows = []
    for name, make, update, state in (
        ("fid_sharded_update", make_fid, sharded_update, "real_scatter"),
        ("fid_shard_map_update", make_fid, shard_map_update, "real_scatter"),
        ("kid_sharded_update", make_kid, sharded_update, "real_features"),
    ):
        ours, ref = eight_devices(make, update, state), one_device(make, state)
        diff = rel_diff(ours(), ref())
        rows.append(
            (
                f"{name}_d{d}_{n_batches}x{batch}",
                median_time(ours, args.runs),
                median_time(ref, args.runs),
                diff,
            )
        )
    return rows


def lpips_rows(args, mesh8, mesh1):
    size, n_batches, batch = (32, 2, 32) if args.quick else (64, 4, 64)
    rng = np.random.default_rng(1)

    def images():
        return rng.uniform(size=(n_batches, batch, size, size, 3)).astype(np.float32)

    ref_imgs, p0, p1 = images(), images(), images()
    judge = rng.uniform(size=(n_batches, batch)).astype(np.float32)
    sharded = [
        (shard_batch(ref_imgs[i], mesh8), shard_batch(p0[i], mesh8)) for i in range(n_batches)
    ]
    single = [(jnp.asarray(ref_imgs[i]), jnp.asarray(p0[i])) for i in range(n_batches)]

    def make_lpips():
        return LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False, normalize=True)

    one_update = nnx.jit(lambda m, x, y: m.update(predictions=x, targets=y))

    def ours_update():
        metric = make_lpips()
        for x, y in sharded:
            sharded_update(metric, mesh8, predictions=x, targets=y)
        return block(metric.total[...])

    def ref_update():
        metric = make_lpips()
        for x, y in single:
            one_update(metric, x, y)
        return block(metric.total[...])

    def loss_fn(trainer, b):
        d0 = trainer.model.distance(b["ref"], b["p0"])
        d1 = trainer.model.distance(b["ref"], b["p1"])
        return ranking_loss(trainer.ranker, d0, d1, b["judge"]), {}

    train_batches = [
        {"ref": ref_imgs[i], "p0": p0[i], "p1": p1[i], "judge": judge[i]} for i in range(n_batches)
    ]

    # One optax transformation for every run: it is part of the compiled step's static structure,
    # and a new one would compile the step again.
    tx = optax.adam(1e-2, b1=0.5)

    def trainer_run(mesh):
        step = data_parallel_train_step(loss_fn, mesh)
        placed = [shard_batch(b, mesh) for b in train_batches]

        def run():
            trainer = LPIPSTrainer(make_lpips(), rngs=nnx.Rngs(1))
            optimizer = nnx.Optimizer(trainer, tx, wrt=nnx.Param)
            for b in placed:
                step(trainer, optimizer, b)
            return block(trainer.model.heads[0].weight[...])

        return run

    rows = []
    diff = rel_diff(ours_update(), ref_update())
    name = f"lpips_sharded_update_toy_{n_batches}x{batch}_{size}px"
    rows.append(
        (name, median_time(ours_update, args.runs), median_time(ref_update, args.runs), diff)
    )
    ours_train, ref_train = trainer_run(mesh8), trainer_run(mesh1)
    diff = rel_diff(ours_train(), ref_train())
    name = f"lpips_train_step_toy_{n_batches}x{batch}_{size}px"
    rows.append((name, median_time(ours_train, args.runs), median_time(ref_train, args.runs), diff))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller features, images, batches")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    devices = jax.devices()
    if len(devices) < 8:
        raise SystemExit(
            f"expected 8 devices (XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}), got {len(devices)}"
        )
    mesh8, mesh1 = data_mesh(devices[:8]), data_mesh(devices[:1])
    rows = metric_rows(args, mesh8) + lpips_rows(args, mesh8, mesh1)
    print(
        f"8 simulated {devices[0].platform} devices vs 1 ({os.cpu_count()} cores shared by all "
        f"devices: this measures sharding overhead, not a speed-up), median of {args.runs} runs"
    )
    print()
    print("| benchmark | 8 devices (s) | 1 device (s) | ratio | max relative difference |")
    print("|---|---|---|---|---|")
    for name, ours_s, ref_s, diff in rows:
        print(f"| {name} | {ours_s:.4g} | {ref_s:.4g} | {ref_s / ours_s:.3g}x | {diff:.1e} |")
    print()
    for name, ours_s, ref_s, _ in rows:
        print(
            json.dumps(
                {"benchmark": name, "ours_s": ours_s, "reference_s": ref_s, "ratio": ref_s / ours_s}
            )
        )


if __name__ == "__main__":
    main()
