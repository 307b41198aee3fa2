"""LPIPS (AlexNet trunk, official heads): distance throughput and one training step, ours vs `lpips`.

The reference needs torchvision, which lives in a separate environment: its interpreter is
``$CALIBRAX_TORCHVISION_PYTHON`` or ``/work/tvenv/bin/python``; without it this script prints a
skip message and exits 0. Both sides use the same seeded trunk weights
(``tests/fixtures/golden/seeded_weights.py``) and the packaged v0.1 heads, batch 16 of 64x64 pairs.
"Training step" is forward of two distances, the ranking head, BCE, backward and an Adam update of
heads + ranking head. Times are medians; ratio = reference / ours (above 1: calibrax is faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones._zoo import get_spec
from calibrax.backbones.alexnet import AlexNet
from calibrax.learned import LPIPS
from calibrax.learned.training import LPIPSTrainer
from calibrax.learned.training import _lpips_loss

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
TV_PYTHON = os.environ.get("CALIBRAX_TORCHVISION_PYTHON", "/work/tvenv/bin/python")
BATCH, SIZE = 16, 64

REFERENCE = r"""
import importlib.util, json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch, lpips
sys.path.insert(0, sys.argv[1])
spec = importlib.util.spec_from_file_location("mk", sys.argv[1] + "/make_golden_lpips.py")
mk = importlib.util.module_from_spec(spec); spec.loader.exec_module(mk)
torch.set_num_threads(2)
reps = int(sys.argv[2])
model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
mk.seeded_trunk_into(model, "alex"); model.eval()
for p in model.net.parameters(): p.requires_grad_(False)
rank = lpips.BCERankingLoss()
opt = torch.optim.Adam(list(model.lins.parameters()) + list(rank.parameters()), lr=1e-4, betas=(0.5, 0.999))
g = torch.Generator().manual_seed(0)
x, y, z = (torch.rand(16, 3, 64, 64, generator=g) * 2 - 1 for _ in range(3))
judge = torch.rand(16, 1, 1, 1, generator=g)
def dist():
    with torch.no_grad(): model(x, y)
def step():
    d0 = model(x, y); d1 = model(x, z)
    loss = rank(d0, d1, judge * 2 - 1).mean()
    opt.zero_grad(); loss.backward(); opt.step()
out = {}
for name, fn in (("distance", dist), ("train_step", step)):
    fn(); times = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    out[name] = statistics.median(times)
print(json.dumps(out))
"""


def ours(reps: int) -> dict[str, float]:
    spec = importlib.util.spec_from_file_location("seeded_weights", GOLDEN / "seeded_weights.py")
    sw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sw)
    _, sd = sw.golden("alexnet", zeros_for=("classifier.",))
    trunk = AlexNet()
    load_state_dict(trunk, get_spec("alexnet").convert(sd))
    model = LPIPS(net="alex", trunk=trunk, normalize=True)
    keys = jax.random.split(jax.random.key(0), 4)
    x, y, z = (jax.random.uniform(k, (BATCH, SIZE, SIZE, 3), jnp.float32) for k in keys[:3])
    judge = jax.random.uniform(keys[3], (BATCH,), jnp.float32)
    dist = nnx.jit(lambda m, a, b: m(a, b))
    trainer = LPIPSTrainer(model, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(trainer, optax.adam(1e-4, b1=0.5), wrt=nnx.Param)

    @nnx.jit
    def step(t, o, batch):
        (loss, _), grads = nnx.value_and_grad(_lpips_loss, has_aux=True)(t, batch)
        with jax.numpy_dtype_promotion("standard"):
            o.update(t, grads)
        t.project()
        return loss

    batch = {"ref": x, "p0": y, "p1": z, "judge": judge}
    fns = {
        "distance": lambda: dist(model, x, y).block_until_ready(),
        "train_step": lambda: step(trainer, opt, batch).block_until_ready(),
    }
    out = {}
    for name, fn in fns.items():
        fn()  # compile
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 3 if args.quick else 10
    if not pathlib.Path(TV_PYTHON).exists():
        print(f"skipped: the torchvision environment ({TV_PYTHON}) is absent")
        return 0
    mine = ours(reps)
    proc = subprocess.run(
        [TV_PYTHON, "-c", REFERENCE, str(ROOT / "scripts"), str(reps)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        print(f"skipped: the reference failed: {proc.stderr.strip()[-300:]}")
        return 0
    ref = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"| benchmark (batch {BATCH}, {SIZE}x{SIZE}) | ours (s) | lpips (s) | ratio |\n|---|---|---|---|"
    )
    for name in ("distance", "train_step"):
        ratio = ref[name] / mine[name]
        print(f"| {name} | {mine[name]:.4f} | {ref[name]:.4f} | {ratio:.2f} |")
    for name in ("distance", "train_step"):
        print(
            json.dumps(
                {
                    "benchmark": f"lpips_alex_{name}",
                    "ours_s": mine[name],
                    "reference_s": ref[name],
                    "ratio": ref[name] / mine[name],
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
