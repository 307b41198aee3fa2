"""DISTS forward (VGG16 with L2 pooling, official alpha/beta): ours vs ``dists-pytorch``.

The reference (``DISTS_pytorch.DISTS``) imports torchvision, which lives in a separate environment:
its interpreter is ``$CALIBRAX_TORCHVISION_PYTHON`` or the first of ``/work/golden-venv/bin/python``
and ``/work/tvenv/bin/python`` that exists, with ``dists-pytorch`` installed; without it this
script prints a skip message and exits 0. The reference runs there, in a subprocess, as the
package's own ``DISTS`` module (not a re-implementation), with its VGG16 replaced by the seeded
weights of ``tests/fixtures/golden/seeded_weights.py`` (``scripts/make_golden_dists.py``'s
trunk) instead of a download; ours uses the same weights. Batch 4 of 96x96 pairs in [0, 1], the
reference under ``torch.no_grad()`` on 2 threads, ours jitted. Times are medians; ratio =
reference / ours (above 1: calibrax is faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
from _timing import median_time
from flax import nnx

from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones._zoo import get_spec
from calibrax.backbones.vgg import VGG16
from calibrax.learned import DISTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
CANDIDATES = ("/work/golden-venv/bin/python", "/work/tvenv/bin/python")
BATCH, SIZE = 4, 96

REFERENCE = r"""
import importlib.util, json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
spec = importlib.util.spec_from_file_location("mk", sys.argv[1] + "/make_golden_dists.py")
mk = importlib.util.module_from_spec(spec); spec.loader.exec_module(mk)
import DISTS_pytorch.DISTS_pt as reference
torch.set_num_threads(2)
reps, batch, size = (int(a) for a in sys.argv[2:5])
trunk = mk.seeded_vgg16()
reference.models.vgg16 = lambda pretrained=True, **_: trunk
model = reference.DISTS(load_weights=True).eval()
g = torch.Generator().manual_seed(0)
x, y = (torch.rand(batch, 3, size, size, generator=g) for _ in range(2))
def run():
    with torch.no_grad():
        model(x, y)
run(); times = []
for _ in range(reps):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps({"forward": statistics.median(times)}))
"""


def reference_python() -> str | None:
    env = os.environ.get("CALIBRAX_TORCHVISION_PYTHON")
    if env:
        return env if pathlib.Path(env).exists() else None
    return next((p for p in CANDIDATES if pathlib.Path(p).exists()), None)


def ours(reps: int) -> float:
    spec = importlib.util.spec_from_file_location("seeded_weights", GOLDEN / "seeded_weights.py")
    sw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sw)
    _, sd = sw.golden("vgg16", zeros_for=("classifier.",))
    trunk = VGG16()
    load_state_dict(trunk, get_spec("vgg16").convert(sd))
    model = DISTS(trunk=trunk)
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(kx, (BATCH, SIZE, SIZE, 3), jnp.float32)
    y = jax.random.uniform(ky, (BATCH, SIZE, SIZE, 3), jnp.float32)
    forward = nnx.jit(lambda m, a, b: m(a, b))
    return median_time(lambda: forward(model, x, y).block_until_ready(), reps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 3 if args.quick else 7
    python = reference_python()
    if python is None:
        print("skipped: no torchvision environment with dists-pytorch (see the docstring)")
        return 0
    mine = ours(reps)
    proc = subprocess.run(
        [python, "-c", REFERENCE, str(ROOT / "scripts"), str(reps), str(BATCH), str(SIZE)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        print(f"skipped: the reference failed: {proc.stderr.strip()[-300:]}")
        return 0
    ref = json.loads(proc.stdout.strip().splitlines()[-1])["forward"]
    print("| benchmark | ours (s) | dists-pytorch (s) | ratio |\n|---|---|---|---|")
    print(f"| forward, batch {BATCH}, {SIZE}x{SIZE} | {mine:.4f} | {ref:.4f} | {ref / mine:.2f} |")
    print(
        json.dumps(
            {
                "benchmark": f"dists_forward_b{BATCH}_{SIZE}px",
                "ours_s": mine,
                "reference_s": ref,
                "ratio": ref / mine,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
