"""InceptionV3-FID throughput: calibrax (jit, CPU) against pytorch-fid, with the same seeded weights.

Both sides run the whole FID forward pass (bilinear resize to 299x299, scaling to [-1, 1], the
network, all four pytorch-fid blocks) on the same batch, with the seeded weights of
``tests/fixtures/golden/seeded_weights.py``. The reference needs torch + torchvision + pytorch-fid,
which live in a separate environment: its interpreter is ``$CALIBRAX_TORCHVISION_PYTHON`` or
``/work/tvenv/bin/python``. Without it the benchmark prints why and exits 0. The reference runs in a
subprocess with that interpreter (network built by ``scripts/make_golden_backbones.py``, no
download) and sends back its timings and features, which are compared with ours as a sanity check.

Times are medians of ``--runs`` timed forward passes after one warm-up (our compilation time is
reported separately). Prints a markdown table, then one JSON line per row with ``benchmark``,
``ours_s``, ``reference_s`` and ``ratio`` (reference / ours: above 1 means calibrax is faster).

Usage: ``python benchmarks/inception.py [--quick] [--batch N] [--runs N] [--size S]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEEDED = ROOT / "tests" / "fixtures" / "golden" / "seeded_weights.py"
DEFAULT_REFERENCE_PYTHON = "/work/tvenv/bin/python"

# Run by the torchvision interpreter: argv = repo root, images .npy, output .npy, runs.
REFERENCE = r"""
import importlib.util, json, statistics, sys, time
import numpy as np, torch
root, images_path, out_path, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
spec = importlib.util.spec_from_file_location("golden", root + "/scripts/make_golden_backbones.py")
golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden)
net = golden.build_fid_inception().eval()
golden.fill_seeded(net, golden.SEEDS["inception_fid"])
wrapper = golden.fid_wrapper(net)
x = golden.nchw(np.load(images_path))
times = []
with torch.inference_mode():
    features = wrapper(x)[3]  # warm-up
    for _ in range(runs):
        start = time.perf_counter()
        features = wrapper(x)[3]
        times.append(time.perf_counter() - start)
np.save(out_path, features.numpy()[:, :, 0, 0])
print(json.dumps({"median_s": statistics.median(times), "threads": torch.get_num_threads(),
                  "torch": torch.__version__}))
"""


def reference_python() -> str | None:
    """The torchvision interpreter, or ``None`` when there is none."""
    path = os.environ.get("CALIBRAX_TORCHVISION_PYTHON", DEFAULT_REFERENCE_PYTHON)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def seeded_weights():
    spec = importlib.util.spec_from_file_location("seeded_weights", SEEDED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_reference(python: str, images: np.ndarray, runs: int) -> tuple[dict, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        images_path = os.path.join(tmp, "images.npy")
        out_path = os.path.join(tmp, "features.npy")
        np.save(images_path, images)
        proc = subprocess.run(
            [python, "-c", REFERENCE, str(ROOT), images_path, out_path, str(runs)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"reference failed:\n{proc.stderr[-2000:]}")
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        return info, np.load(out_path)


def run_ours(images: np.ndarray, runs: int) -> tuple[float, float, np.ndarray]:
    import jax
    from flax import nnx

    from calibrax.backbones import InceptionV3FID
    from calibrax.backbones import load_state_dict

    sw = seeded_weights()
    _, state_dict = sw.golden("inception_fid")
    model = InceptionV3FID()
    load_state_dict(model, state_dict)

    @nnx.jit
    def features(model, x):
        return model(x)

    x = jax.device_put(images)
    start = time.perf_counter()
    out = features(model, x).block_until_ready()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = features(model, x).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), compile_s, np.asarray(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch, 3 runs")
    parser.add_argument("--batch", type=int, default=None, help="images per forward pass")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (median reported)")
    parser.add_argument("--size", type=int, default=128, help="input height and width")
    args = parser.parse_args()
    batch = args.batch or (4 if args.quick else 16)
    runs = max(3, args.runs or (3 if args.quick else 5))

    python = reference_python()
    if python is None:
        print(
            "skipped: no torchvision environment (set CALIBRAX_TORCHVISION_PYTHON or create "
            f"{DEFAULT_REFERENCE_PYTHON}); the pytorch-fid reference needs torchvision"
        )
        return 0

    images = seeded_weights().seeded_images(7, (batch, args.size, args.size, 3))
    ours_s, compile_s, ours = run_ours(images, runs)
    info, theirs = run_reference(python, images, runs)
    ref_s = info["median_s"]
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())

    name = f"inception-v3-fid forward, batch {batch}, {args.size}x{args.size} -> 299x299"
    print(f"## InceptionV3-FID ({os.cpu_count()} CPU cores, median of {runs} runs)\n")
    print("| benchmark | calibrax s | pytorch-fid s | calibrax img/s | pytorch-fid img/s | ratio |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {name} | {ours_s:.3f} | {ref_s:.3f} | {batch / ours_s:.1f} | {batch / ref_s:.1f} "
        f"| {ref_s / ours_s:.2f} |"
    )
    print(
        f"\ncalibrax compile: {compile_s:.1f} s; reference: torch {info['torch']}, "
        f"{info['threads']} threads; max |ours - reference| / max |reference| of the 2048-d "
        f"features: {rel:.1e}\n"
    )
    print(
        json.dumps(
            {
                "benchmark": name,
                "ours_s": ours_s,
                "reference_s": ref_s,
                "ratio": ref_s / ours_s,
                "ours_images_per_s": batch / ours_s,
                "reference_images_per_s": batch / ref_s,
                "compile_s": compile_s,
                "max_rel_diff": rel,
            }
        )
    )
    if rel > 1e-4:
        print(f"error: outputs disagree (relative difference {rel:.1e})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
