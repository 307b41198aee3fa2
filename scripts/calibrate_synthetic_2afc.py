"""Recompute ``calibrax.learned.data.DISTORTIONS``: levels equally strong to the trunk.

For each distortion type, the median unweighted LPIPS distance (heads of ones, frozen
EfficientNet-Lite0 trunk) between 96 textured reference patches (64x64, pixel std >= 0.1, drawn
with ``np.random.default_rng(123)`` from :func:`calibrax.learned.offline_images`) and their
distorted versions is measured over a grid of parameters. The targets are the medians of a shift
by 1..5 pixels (the one type whose parameter is an integer number of pixels); every other type's
parameter of level ``l`` is interpolated (log-linearly for noise, blur and colour, linearly for
contrast and JPEG quality, the latter rounded) on its grid to reach target ``l``.

Usage: ``python scripts/calibrate_synthetic_2afc.py`` (a few minutes on a laptop CPU); prints
the table to paste into ``calibrax/learned/data.py``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from calibrax.learned import LPIPS
from calibrax.learned import data as D
from calibrax.learned import offline_images

GRIDS = {
    "noise": np.geomspace(0.005, 0.3, 12),
    "blur": np.geomspace(0.3, 5, 12),
    "jpeg": np.array([95, 90, 80, 70, 55, 45, 35, 28, 20, 16, 12, 8, 5, 3]),
    "color": np.geomspace(0.01, 0.5, 12),
    "contrast": np.linspace(0.95, 0.1, 12),
    "shift": np.arange(1, 9),
}


def textured_patches(n: int, size: int = 64, min_std: float = 0.1) -> np.ndarray:
    images = offline_images()
    rng = np.random.default_rng(123)
    refs = []
    while len(refs) < n:
        im = images[rng.integers(len(images))]
        y, x = rng.integers(im.shape[0] - size + 1), rng.integers(im.shape[1] - size + 1)
        p = im[y : y + size, x : x + size].astype(np.float32) / 255.0
        if p.std() >= min_std:
            refs.append(p)
    return np.stack(refs)


def main() -> None:
    model = LPIPS(net="efficientnet-lite0", pretrained=False, normalize=True)
    dist = nnx.jit(lambda m, a, b: m.distance(a, b))
    refs = textured_patches(96)
    medians = {}
    for kind, grid in GRIDS.items():
        meds = []
        for value in grid:
            D.DISTORTIONS[kind] = (value,) * 5  # every level at this value
            out = np.stack(
                [D.distort(r, kind, 1, np.random.default_rng(i)) for i, r in enumerate(refs)]
            )
            meds.append(float(np.median(np.asarray(dist(model, jnp.asarray(refs), out)))))
        medians[kind] = np.maximum.accumulate(np.array(meds) + np.arange(len(meds)) * 1e-9)
        print(kind, np.round(meds, 3), flush=True)
    targets = medians["shift"][:5]
    table = {}
    for kind, grid in GRIDS.items():
        m = medians[kind]
        if kind == "shift":
            table[kind] = tuple(int(v) for v in grid[:5])
        elif kind == "jpeg":
            table[kind] = tuple(int(v) for v in np.round(np.interp(targets, m, grid)))
        elif kind == "contrast":
            table[kind] = tuple(round(float(v), 3) for v in np.interp(targets, m, grid))
        else:
            v = np.exp(np.interp(targets, m, np.log(grid)))
            table[kind] = tuple(round(float(x), 3) for x in v)
    print("targets", np.round(targets, 3))
    for kind, values in table.items():
        print(f'    "{kind}": {values},')


if __name__ == "__main__":
    main()
