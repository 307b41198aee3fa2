"""DINOv2 ViT-S/14 and CLIP ViT-B/32 inference: calibrax (jitted JAX) against transformers (torch).

No released weights can be downloaded here, so both sides run the same seeded random weights at
the released shapes: ``transformers`` ``Dinov2Model`` (hidden 384, 12 blocks, 6 heads, patch 14;
its positional grid set to 16x16 so neither side interpolates) and
``CLIPVisionModelWithProjection`` (hidden 768, 12 blocks, patch 32, projection 512, QuickGELU),
their state dicts mapped onto ``calibrax.backbones.DINOv2`` / ``CLIPVision`` by calibrax's own
``transformers``-layout conversion. float32 on CPU, the same batch of 224x224 images; ours under
``jax.jit`` (NHWC, normalisation included), the reference in eval mode under
``torch.inference_mode`` (NCHW, normalised beforehand, i.e. the reference does less work). The
embeddings are checked to agree (1e-4 relative) before timing. Times are medians of ``--runs``
runs after a warm-up (which includes jit compilation).

Prints a markdown table, then one JSON line per row with ``benchmark``, ``ours_s``,
``reference_s`` and ``ratio`` (reference / ours: above 1 means calibrax is faster). The machine may
be shared: treat the ratios as indicative.

Usage: ``python benchmarks/backbones_vit.py [--quick] [--runs N] [--batch B]``.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from _timing import median_time


def _models(torch, transformers):
    from calibrax.backbones import load_state_dict
    from calibrax.backbones.clip import _builder as clip_builder
    from calibrax.backbones.clip import _openai_keys
    from calibrax.backbones.dinov2 import DINOv2
    from calibrax.backbones.dinov2 import _official_keys

    torch.manual_seed(0)
    dino_ref = transformers.Dinov2Model(
        transformers.Dinov2Config(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            image_size=224,
            patch_size=14,
        )
    ).eval()
    dino = DINOv2(embed_dim=384, depth=12, num_heads=6, pos_grid=16)
    sd = {k: v.numpy() for k, v in dino_ref.state_dict().items()}
    load_state_dict(dino, _official_keys(sd))

    clip_ref = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
            projection_dim=512,
            hidden_act="quick_gelu",
        )
    ).eval()
    clip = clip_builder("clip-vit-b32")()
    sd = {k: v.numpy() for k, v in clip_ref.state_dict().items()}
    load_state_dict(clip, _openai_keys(sd))
    return (
        ("dinov2_vits14", dino, dino_ref, lambda out: out.last_hidden_state[:, 0]),
        ("clip_vitb32", clip, clip_ref, lambda out: out.image_embeds),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8 instead of 32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None)
    args = parser.parse_args()
    batch = args.batch or (8 if args.quick else 32)

    import torch
    import transformers

    images = np.random.default_rng(0).uniform(size=(batch, 224, 224, 3)).astype(np.float32)
    x_jax = jax.device_put(images)
    rows = []
    for label, ours, reference, take in _models(torch, transformers):
        normalised = (images - np.float32(ours.mean)) / np.float32(ours.std)
        x_torch = torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))
        ours_fn = jax.jit(lambda x, m=ours: m(x))

        def run_reference(model=reference, x=x_torch, take=take):
            with torch.inference_mode():
                return take(model(pixel_values=x))

        ref = run_reference().numpy()
        gap = float(np.abs(np.asarray(ours_fn(x_jax)) - ref).max() / np.abs(ref).max())
        if gap > 1e-4:
            raise SystemExit(f"{label}: outputs disagree, relative gap {gap:.3g}")
        ours_s = median_time(lambda f=ours_fn: f(x_jax).block_until_ready(), args.runs)
        reference_s = median_time(run_reference, args.runs)
        rows.append((f"{label}_forward_b{batch}_224", ours_s, reference_s, gap))

    print(
        f"ViT backbones forward, batch {batch} at 224x224, float32 CPU (torch threads: "
        f"{torch.get_num_threads()}), median of {args.runs} runs, reference transformers "
        f"{transformers.__version__}"
    )
    print()
    print(
        "| benchmark | ours (s) | reference (s) | ours (img/s) | reference (img/s) | ratio | gap |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, ours_s, reference_s, gap in rows:
        print(
            f"| {name} | {ours_s:.4g} | {reference_s:.4g} | {batch / ours_s:.1f} | "
            f"{batch / reference_s:.1f} | {reference_s / ours_s:.3g}x | {gap:.2g} |"
        )
    print()
    for name, ours_s, reference_s, _ in rows:
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
