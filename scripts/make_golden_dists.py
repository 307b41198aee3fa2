"""Golden DISTS outputs from the reference ``dists-pytorch`` package, with a seeded VGG16.

Run with the separate torchvision environment (torch 2.14.1, torchvision 0.29.1, scikit-image, and
``pip install --no-deps dists-pytorch==0.1``):

    /work/golden-venv/bin/python scripts/make_golden_dists.py

``DISTS_pytorch.DISTS`` asks torchvision for ImageNet weights (a download); here its
``models.vgg16`` is replaced by a torchvision VGG16 filled with the seeded weights of
``tests/fixtures/golden/seeded_weights.py`` (seed 3, the seed of the vgg16 and lpips_vgg
fixtures, so the tests rebuild the same trunk without torch). The alpha/beta weights are the
package's shipped ``weights.pt`` (its sha256 is stored, so the test knows it reads the same file).

Images are real photos from ``skimage.data`` (astronaut, chelsea, coffee, rocket), downscaled to
48x48, each paired with a distortion of itself (noise, blur, contrast) or another photo. Stored in
``tests/fixtures/golden/dists.npz``: the images ``x``, ``y`` (NHWC, [0, 1]); the float32 scores;
and, from the same model in float64 (``model.double()``: the seeded float32 weights and the
float32 images are exact in float64), the scores and the gradients of the summed score with
respect to ``x``, ``alpha`` and ``beta``. Float64 is what lets a test go below float32's rounding
of ``1 - sum``: a score of 0.01 computed as 1 - 0.99 in float32 is only good to ~1e-5 relative in
either library.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys
import warnings

import numpy as np
import skimage.data
import skimage.filters
import skimage.transform
import torch
import torchvision

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE.parent / "tests" / "fixtures" / "golden"
_spec = importlib.util.spec_from_file_location("seeded_weights", GOLDEN / "seeded_weights.py")
seeded_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded_weights)

SEED = 3  # the vgg16 fixture's seed
SIZE = 48


def seeded_vgg16() -> torchvision.models.VGG:
    tv = torchvision.models.vgg16(weights=None)
    shapes = [(k, tuple(v.shape)) for k, v in tv.state_dict().items()]
    values = seeded_weights.seeded_state_dict(shapes, SEED)
    tv.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()})
    return tv


def photo(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()[..., :3].astype(np.float64) / 255.0
    side = min(image.shape[:2])
    image = image[:side, :side]  # the top-left square
    return skimage.transform.resize(image, (SIZE, SIZE), anti_aliasing=True)


def pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    astronaut, chelsea, coffee, rocket = (
        photo(n) for n in ("astronaut", "chelsea", "coffee", "rocket")
    )
    noisy = np.clip(astronaut + rng.normal(0.0, 0.2, astronaut.shape), 0.0, 1.0)
    blurred = skimage.filters.gaussian(chelsea, sigma=1.5, channel_axis=-1)
    contrast = np.clip(0.5 + 0.6 * (coffee - 0.5), 0.0, 1.0)
    x = np.stack([astronaut, chelsea, coffee, rocket])
    y = np.stack([noisy, blurred, contrast, chelsea])
    return x.astype(np.float32), y.astype(np.float32)


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(2)
    import DISTS_pytorch.DISTS_pt as reference

    trunk = seeded_vgg16()
    reference.models.vgg16 = lambda pretrained=True, **_: trunk  # no download: the seeded VGG16
    weights = os.path.join(sys.prefix, "weights.pt")  # where the package's DISTS() reads it
    model = reference.DISTS(load_weights=True)
    model.eval()
    x, y = pairs()
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    ty = torch.from_numpy(np.ascontiguousarray(y.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        score32 = model(tx, ty).numpy().reshape(-1)
    model.double()
    tx = tx.double().requires_grad_(True)
    score = model(tx, ty.double(), require_grad=True)
    score.sum().backward()
    out = {
        "x": x,
        "y": y,
        "score": score32,
        "score_f64": score.detach().numpy().reshape(-1),
        "grad_x": tx.grad.numpy().transpose(0, 2, 3, 1).copy(),
        "grad_alpha": model.alpha.grad.numpy().reshape(-1),
        "grad_beta": model.beta.grad.numpy().reshape(-1),
        "weights_sha256": np.asarray(hashlib.sha256(open(weights, "rb").read()).hexdigest()),
        "seed": np.asarray(SEED),
    }
    np.savez_compressed(GOLDEN / "dists.npz", **out)
    print(out["score"], out["score_f64"])


if __name__ == "__main__":
    main()
