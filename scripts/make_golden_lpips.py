"""Golden LPIPS outputs from the reference ``lpips`` package, with seeded trunk weights.

Run with the separate torchvision environment (torch 2.14.1 + torchvision 0.29.1 + lpips 0.1.4):

    /work/tvenv/bin/python scripts/make_golden_lpips.py
    /work/golden-venv/bin/python scripts/make_golden_lpips.py --version 0.0

For each trunk (alex, vgg, squeeze), the reference ``lpips.LPIPS`` model is built with its packaged
v0.1 heads and a randomly initialised torchvision trunk (``pnet_rand=True``: nothing is
downloaded); the trunk is then overwritten with the seeded weights of
``tests/fixtures/golden/seeded_weights.py`` (the same seeds as the backbone fixtures, so the tests
rebuild these weights without torch). Stored per trunk, in ``tests/fixtures/golden/lpips_<net>.npz``:
two image pairs in [-1, 1], the distances, the per-layer values, and the spatial maps.

With ``--version 0.0`` the reference's first-release model is used instead (``version="0.0"``: the
packaged v0.0 heads, and no input scaling before the trunk), on the same seeded trunks and images;
stored in ``tests/fixtures/golden/lpips_<net>_v0.0.npz``: the distances and per-layer values (the
images are those of ``lpips_<net>.npz``).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import warnings

import lpips
import numpy as np
import torch
import torchvision

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE.parent / "tests" / "fixtures" / "golden"
_spec = importlib.util.spec_from_file_location("seeded_weights", GOLDEN / "seeded_weights.py")
seeded_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded_weights)

# net -> (torchvision constructor, backbone fixture name, seed used by make_golden_backbones.py)
TRUNKS = {
    "alex": (torchvision.models.alexnet, "alexnet", 2),
    "vgg": (torchvision.models.vgg16, "vgg16", 3),
    "squeeze": (torchvision.models.squeezenet1_1, "squeezenet1_1", 4),
}
SIZE = 64


def seeded_trunk_into(model: lpips.LPIPS, net: str) -> None:
    build, _, seed = TRUNKS[net]
    tv = build(weights=None)
    sd = tv.state_dict()
    values = seeded_weights.seeded_state_dict([(k, tuple(v.shape)) for k, v in sd.items()], seed)
    tv.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()})
    features = tv.features.state_dict()
    # lpips' slices hold torchvision's feature layers under their original indices.
    remapped = {}
    for key in model.net.state_dict():
        _, index, leaf = key.split(".", 2)
        remapped[key] = features[f"{index}.{leaf}"]
    model.net.load_state_dict(remapped, strict=True)


def _images() -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    x = 2.0 * seeded_weights.seeded_images(10, (2, SIZE, SIZE, 3)) - 1.0
    y = 2.0 * seeded_weights.seeded_images(11, (2, SIZE, SIZE, 3)) - 1.0
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    ty = torch.from_numpy(np.ascontiguousarray(y.transpose(0, 3, 1, 2)))
    return x, y, tx, ty


def first_release() -> None:
    """v0.0 distances and per-layer values on the seeded trunks (the same images as v0.1)."""
    for net in TRUNKS:
        _, _, tx, ty = _images()
        model = lpips.LPIPS(net=net, version="0.0", pnet_rand=True, verbose=False)
        seeded_trunk_into(model, net)
        model.eval()
        with torch.no_grad():
            d, layers = model(tx, ty, retPerLayer=True)
        # The images are those of lpips_<net>.npz (same seeds): not stored again.
        out = {
            "distance": d.numpy().reshape(-1),
            "distance_layers": np.stack([v.numpy().reshape(-1) for v in layers]),
        }
        np.savez_compressed(GOLDEN / f"lpips_{net}_v0.0.npz", **out)
        print(net, "v0.0", out["distance"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", choices=("0.0", "0.1"), default="0.1")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(2)
    if args.version == "0.0":
        first_release()
        return
    for net in TRUNKS:
        x, y, tx, ty = _images()
        out = {"x": x.astype(np.float32), "y": y.astype(np.float32)}
        for spatial in (False, True):
            model = lpips.LPIPS(
                net=net, version="0.1", pnet_rand=True, spatial=spatial, verbose=False
            )
            seeded_trunk_into(model, net)
            model.eval()
            with torch.no_grad():
                d, layers = model(tx, ty, retPerLayer=True)
            key = "spatial" if spatial else "distance"
            out[key] = d.numpy()[:, 0] if spatial else d.numpy().reshape(-1)
            out[f"{key}_layers"] = np.stack(
                [v.numpy()[:, 0] if spatial else v.numpy().reshape(-1) for v in layers]
            )
        base = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, lpips=False, verbose=False)
        seeded_trunk_into(base, net)
        with torch.no_grad():
            out["baseline"] = base.eval()(tx, ty).numpy().reshape(-1)
        np.savez_compressed(GOLDEN / f"lpips_{net}.npz", **out)
        print(net, out["distance"], out["baseline"])


if __name__ == "__main__":
    main()
