"""Generate the golden outputs of the torchvision / pytorch-fid backbones from seeded weights.

Run with the torchvision environment (never the project venv), from the repository root::

    /work/tvenv/bin/python scripts/make_golden_backbones.py

It needs torch 2.14.1, torchvision 0.29.1, pytorch-fid 0.3.0, lpips 0.1.4 and scikit-image, and
downloads nothing: pytorch-fid's ``fid_inception_v3`` would fetch the FID weights, so the script builds the
same network from torchvision's ``Inception3`` and pytorch-fid's FID blocks itself, exactly as that
function does, but without its ``load_state_dict`` call. Every parameter and buffer is then filled
by ``tests/fixtures/golden/seeded_weights.py`` (numpy only), which the tests use to rebuild the same
weights without torch.

For each backbone it writes ``tests/fixtures/golden/<name>.npz`` with:

* ``param_shapes``: JSON list of ``[name, shape]`` of the torch state dict (every key, including
  ``num_batches_tracked``), and ``seed``;
* ``images``: the NHWC float32 inputs;
* the outputs, NHWC: for small maps the whole map, for big ones the per-channel spatial mean
  (``<tap>_mean``) and the top-left / bottom-right 4x4 corners (``<tap>_first`` / ``<tap>_last``);
* ``min_size``: the smallest square input the torch network accepts (``min_size - 1`` fails).

The LPIPS taps are also checked here against lpips' own trunk classes given the same weights, and
the InceptionV3 logits against ``fc`` applied to the 2048-d features. The output is bit-for-bit
reproducible (the weights and images come from raw PCG64 bits, see ``seeded_weights.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings

import numpy as np
import pytorch_fid.inception as fid_inception
import skimage.data
import skimage.transform
import torch
import torch.nn.functional as F
import torchvision
from lpips import pretrained_networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden")

_spec = importlib.util.spec_from_file_location(
    "seeded_weights", os.path.join(GOLDEN, "seeded_weights.py")
)
seeded_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded_weights)

SEEDS = {"inception_fid": 1, "alexnet": 2, "vgg16": 3, "squeezenet1_1": 4}


def build_fid_inception() -> torch.nn.Module:
    """pytorch-fid's ``fid_inception_v3()`` network, without downloading its weights."""
    inception = torchvision.models.inception_v3(
        weights=None, num_classes=1008, aux_logits=False, init_weights=False
    )
    inception.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    inception.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    return inception


def fid_wrapper(net: torch.nn.Module) -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3`` wrapper for all four blocks, around ``net`` (no download).

    ``InceptionV3.__init__`` would call ``fid_inception_v3()``, which downloads the weights, so the
    wrapper is created without it and given the same block lists its ``__init__`` builds
    (``resize_input=True, normalize_input=True, output_blocks=[0, 1, 2, 3]``); its ``forward`` is
    pytorch-fid's own.
    """
    wrapper = fid_inception.InceptionV3.__new__(fid_inception.InceptionV3)
    torch.nn.Module.__init__(wrapper)
    wrapper.resize_input = True
    wrapper.normalize_input = True
    wrapper.output_blocks = [0, 1, 2, 3]
    wrapper.last_needed_block = 3
    pool = torch.nn.MaxPool2d
    wrapper.blocks = torch.nn.ModuleList(
        [
            torch.nn.Sequential(
                net.Conv2d_1a_3x3,
                net.Conv2d_2a_3x3,
                net.Conv2d_2b_3x3,
                pool(kernel_size=3, stride=2),
            ),
            torch.nn.Sequential(
                net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, pool(kernel_size=3, stride=2)
            ),
            torch.nn.Sequential(
                net.Mixed_5b,
                net.Mixed_5c,
                net.Mixed_5d,
                net.Mixed_6a,
                net.Mixed_6b,
                net.Mixed_6c,
                net.Mixed_6d,
                net.Mixed_6e,
            ),
            torch.nn.Sequential(
                net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, torch.nn.AdaptiveAvgPool2d((1, 1))
            ),
        ]
    )
    return wrapper.eval()


def fill_seeded(model: torch.nn.Module, seed: int) -> list[list]:
    """Overwrite every parameter and buffer of ``model``; return the ``[name, shape]`` list."""
    sd = model.state_dict()
    shapes = [[name, list(t.shape)] for name, t in sd.items()]
    values = seeded_weights.seeded_state_dict([(n, tuple(s)) for n, s in shapes], seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()}, strict=True)
    return shapes


def nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1)).astype(np.float32)


def chelsea(height: int, width: int) -> np.ndarray:
    """skimage's chelsea (a real photo), resized with skimage, as float32 in [0, 1]."""
    img = skimage.transform.resize(skimage.data.chelsea(), (height, width), anti_aliasing=True)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def images_01(seed: int, height: int, width: int) -> np.ndarray:
    """Two images in [0, 1]: a seeded synthetic one and a real photo."""
    synthetic = seeded_weights.seeded_images(seed, (1, height, width, 3))[0]
    return np.stack([synthetic, chelsea(height, width)])


def store_tap(out: dict, name: str, tap: np.ndarray, full_limit: int = 20_000) -> None:
    """The whole tap when small, else its channel means and two 4x4 corners."""
    if tap[0].size <= full_limit:
        out[name] = tap
    else:
        out[name + "_mean"] = tap.mean(axis=(1, 2))
        out[name + "_first"] = tap[:, :4, :4, :]
        out[name + "_last"] = tap[:, -4:, -4:, :]


def min_size(forward, lo: int = 1, hi: int = 300) -> int:
    """The smallest square size the torch network accepts (checked: one less fails)."""
    for size in range(lo, hi):
        try:
            with torch.no_grad():
                forward(torch.zeros(1, 3, size, size))
        except RuntimeError:
            continue
        return size
    raise RuntimeError("no size accepted")


def save(name: str, arrays: dict) -> None:
    path = os.path.join(GOLDEN, name + ".npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")
    for key, value in arrays.items():
        if isinstance(value, np.ndarray) and value.dtype == np.float32:
            print(f"  {key:28s} {value.shape!s:22s} |x| mean {np.abs(value).mean():.4g}")


def make_inception() -> None:
    seed = SEEDS["inception_fid"]
    net = build_fid_inception().eval()
    shapes = fill_seeded(net, seed)
    wrapper = fid_wrapper(net)
    # Non-square inputs below 299, so the network input goes through the bilinear upsampling.
    images = images_01(seed, 48, 64)
    with torch.no_grad():
        blocks = wrapper(nchw(images))
        # The full torchvision forward on the same resized, scaled input gives the 1008 logits.
        x = 2 * F.interpolate(nchw(images), size=(299, 299), mode="bilinear", align_corners=False)
        logits = net(x - 1)
    maps = [nhwc(b) for b in blocks]
    pools = [m.mean(axis=(1, 2)) for m in maps]
    np.testing.assert_allclose(pools[3], nhwc(blocks[3])[:, 0, 0, :])
    np.testing.assert_allclose(
        logits.numpy(),
        pools[3] @ net.fc.weight.detach().numpy().T + net.fc.bias.detach().numpy(),
        rtol=1e-4,
        atol=1e-4,
    )
    arrays = {
        "param_shapes": np.array(json.dumps(shapes)),
        "seed": np.array(seed),
        "images": images,
        "pool_64": pools[0],
        "pool_192": pools[1],
        "pool_768": pools[2],
        "pool_2048": pools[3],
        "logits": logits.numpy().astype(np.float32),
        "block0_first": maps[0][:, :4, :4, :],
        "block0_last": maps[0][:, -4:, -4:, :],
        "block2_first": maps[2][:, :4, :4, :],
    }
    # Bilinear resizing alone (F.interpolate, align_corners=False, no antialias), up and down.
    rng_images = seeded_weights.seeded_images(seed + 100, (2, 13, 17, 3))
    for tag, size in (("up", (29, 23)), ("down", (7, 11)), ("same", (13, 17))):
        with torch.no_grad():
            resized = F.interpolate(
                nchw(rng_images), size=size, mode="bilinear", align_corners=False
            )
        arrays[f"resize_{tag}"] = nhwc(resized)
    arrays["resize_input"] = rng_images
    save("inception_fid", arrays)


def check_against_lpips(lpips_net: torch.nn.Module, net: torch.nn.Module, x, outputs, taps) -> None:
    """lpips' own trunk, given the same weights, must give the same taps (checks the slicing)."""
    features = net.features.state_dict()
    remapped = {}
    for key in lpips_net.state_dict():
        _, index, leaf = key.split(".", 2)
        remapped[key] = features[f"{index}.{leaf}"]
    lpips_net.load_state_dict(remapped, strict=True)
    with torch.no_grad():
        theirs = lpips_net.eval()(x)
    assert list(theirs._fields) == [tap for tap, _ in taps], theirs._fields
    for (tap, idx), value in zip(taps, theirs, strict=True):
        torch.testing.assert_close(value, outputs[idx], rtol=0, atol=0, msg=tap)


def lpips_backbone(
    name: str,
    net: torch.nn.Module,
    lpips_net: torch.nn.Module,
    taps: list[tuple[str, int]],
    size: int,
) -> None:
    """Run ``net.features`` layer by layer and store the output after each tap index."""
    seed = SEEDS[name]
    net = net.eval()
    shapes = fill_seeded(net, seed)
    # Trunk inputs in [-1, 1]: the order of what LPIPS' scaling layer feeds the trunks.
    images = 2.0 * images_01(seed, size, size + 8) - 1.0
    arrays = {"param_shapes": np.array(json.dumps(shapes)), "seed": np.array(seed)}
    arrays["images"] = images.astype(np.float32)
    last = max(i for _, i in taps)
    with torch.no_grad():
        h = nchw(arrays["images"])
        outputs = {}
        for idx, layer in enumerate(net.features):
            h = layer(h)
            outputs[idx] = h
            if idx == last:
                break
    check_against_lpips(lpips_net, net, nchw(arrays["images"]), outputs, taps)
    for tap, idx in taps:
        store_tap(arrays, tap, nhwc(outputs[idx]))
    features = torch.nn.Sequential(*list(net.features)[: last + 1])
    arrays["min_size"] = np.array(min_size(features))
    save(name, arrays)


def main() -> None:
    # lpips builds its trunks with torchvision's deprecated ``pretrained=False``: harmless here.
    warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    make_inception()
    lpips_backbone(
        "alexnet",
        torchvision.models.alexnet(weights=None),
        pretrained_networks.alexnet(pretrained=False),
        [("relu1", 1), ("relu2", 4), ("relu3", 7), ("relu4", 9), ("relu5", 11)],
        64,
    )
    lpips_backbone(
        "vgg16",
        torchvision.models.vgg16(weights=None),
        pretrained_networks.vgg16(pretrained=False),
        [("relu1_2", 3), ("relu2_2", 8), ("relu3_3", 15), ("relu4_3", 22), ("relu5_3", 29)],
        32,
    )
    lpips_backbone(
        "squeezenet1_1",
        torchvision.models.squeezenet1_1(weights=None),
        pretrained_networks.squeezenet(pretrained=False),
        [
            ("relu1", 1),
            ("relu2", 4),
            ("relu3", 7),
            ("relu4", 9),
            ("relu5", 10),
            ("relu6", 11),
            ("relu7", 12),
        ],
        48,
    )


if __name__ == "__main__":
    sys.exit(main())
