"""2AFC data for perceptual metrics: the BAPPS layout and a seeded synthetic generator.

A 2AFC (two-alternative forced choice) example is a reference patch ``ref``, two distorted versions
``p0`` and ``p1``, and a judgment ``judge`` in [0, 1]: the fraction of observers who found ``p1``
closer to ``ref`` than ``p0`` (Zhang et al. 2018). Patches are float32 NHWC in [0, 1].

The synthetic judgment
----------------------
:class:`SyntheticTwoAFC` has no human observers, so it defines the judgment from distortion
strength. Every distortion type has five graded levels, chosen so that the same level is a
similar, clearly visible change across types (``DISTORTIONS`` lists the parameter of each level).
For an example whose two patches carry levels ``l0`` and ``l1`` (each drawn uniformly from 1..5,
types drawn independently), the judgment is

.. math::

    \\text{judge} = \\sigma\\big((l_0 - l_1) / T\\big), \\qquad T = 0.5,

a soft label: 0.5 for equal levels, 0.88 when ``p1`` is one level milder, 0.98 at two levels. The
generator is a pure function of its seed: example ``i`` is drawn from
``np.random.default_rng([seed, i])``, so any example can be regenerated on its own.

References:
    Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
    arXiv:1801.03924.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibrax.core import checks

__all__ = [
    "DISTORTIONS",
    "JNDFolder",
    "SyntheticTwoAFC",
    "TwoAFCFolder",
    "distort",
    "offline_images",
]

# Parameter of each distortion at levels 1..5.
DISTORTIONS: dict[str, tuple[float, ...]] = {
    "noise": (0.02, 0.04, 0.07, 0.11, 0.16),  # std of additive Gaussian noise
    "blur": (0.6, 1.0, 1.5, 2.1, 2.8),  # Gaussian blur sigma in pixels
    "jpeg": (70, 45, 28, 16, 8),  # JPEG quality
    "color": (0.03, 0.06, 0.10, 0.15, 0.21),  # per-channel offset magnitude
    "contrast": (0.88, 0.76, 0.62, 0.48, 0.35),  # contrast factor around the mean
    "shift": (1, 2, 3, 4, 6),  # translation in pixels (edge padded)
}
TEMPERATURE = 0.5


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k[i] * pad[i : i + x.shape[0], :, :] for i in range(k.size))
    return sum(k[i] * rows[:, i : i + x.shape[1], :] for i in range(k.size))


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - only without the extra
        raise ImportError(
            "the JPEG distortion needs Pillow: pip install 'calibrax[images]'"
        ) from err
    buf = io.BytesIO()
    Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def distort(patch: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply distortion ``kind`` at ``level`` (1..5) to a float patch (H, W, 3) in [0, 1].

    Raises:
        ValueError: If ``kind`` or ``level`` is unknown.
    """
    checks.check_choice(kind, tuple(DISTORTIONS), "kind")
    checks.check_choice(level, (1, 2, 3, 4, 5), "level")
    p = DISTORTIONS[kind][level - 1]
    x = patch.astype(np.float64)
    if kind == "noise":
        out = x + rng.normal(0.0, p, x.shape)
    elif kind == "blur":
        out = _gaussian_blur(x, p)
    elif kind == "jpeg":
        out = _jpeg(x, int(p))
    elif kind == "color":
        out = x + rng.choice([-1.0, 1.0], size=3) * p * rng.uniform(0.5, 1.0, size=3)
    elif kind == "contrast":
        out = (x - x.mean()) * p + x.mean()
    else:  # shift
        dy, dx = (int(p) * s for s in rng.choice([-1, 1], size=2))
        pad = int(p)
        padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        h, w = x.shape[:2]
        out = padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def offline_images() -> list[np.ndarray]:
    """Real RGB photographs that ship with scikit-image and scikit-learn (no download).

    Raises:
        ImportError: If scikit-image or scikit-learn is missing (``pip install 'calibrax[data]'``).
    """
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as err:
        raise ImportError(
            "offline images need scikit-image and scikit-learn: pip install 'calibrax[data]'"
        ) from err
    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel")
    images = [getattr(skimage.data, n)() for n in names]
    images += list(load_sample_images().images)
    return [np.ascontiguousarray(im[..., :3]) for im in images]


class SyntheticTwoAFC:
    """A seeded generator of 2AFC triplets from real images (see the module docstring).

    Implements ``BatchableDatasetProtocol``. Patches are cut at random positions of the source
    images; the two distortions and their levels are drawn independently.

    Args:
        num_examples: Number of examples.
        patch_size: Side of the square patches (LPIPS uses 64).
        seed: Seed of the whole dataset.
        images: Source images (H, W, 3) uint8; defaults to :func:`offline_images`.
        distortions: Distortion types to draw from (keys of ``DISTORTIONS``).

    Raises:
        ValueError: On a non-positive size, an unknown distortion, or images smaller than a patch.
    """

    def __init__(
        self,
        num_examples: int,
        *,
        patch_size: int = 64,
        seed: int = 0,
        images: Sequence[np.ndarray] | None = None,
        distortions: Sequence[str] = tuple(DISTORTIONS),
    ) -> None:
        checks.check_positive_int(num_examples, "num_examples")
        checks.check_positive_int(patch_size, "patch_size")
        for d in distortions:
            checks.check_choice(d, tuple(DISTORTIONS), "distortions")
        self.images = list(offline_images() if images is None else images)
        if not self.images:
            raise ValueError("expected `images` to hold at least one image, got none")
        for i, im in enumerate(self.images):
            if im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"expected `images[{i}]` to have shape (H, W, 3), got {im.shape}")
            if min(im.shape[:2]) < patch_size:
                raise ValueError(
                    f"expected `images[{i}]` to be at least {patch_size}x{patch_size}, "
                    f"got {im.shape[0]}x{im.shape[1]}"
                )
        self.num_examples = num_examples
        self.patch_size = patch_size
        self.seed = seed
        self.distortions = tuple(distortions)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not -self.num_examples <= idx < self.num_examples:
            raise IndexError(f"expected `idx` in [0, {self.num_examples - 1}], got {idx}")
        idx %= self.num_examples
        rng = np.random.default_rng([self.seed, idx])
        src = self.images[rng.integers(len(self.images))]
        s = self.patch_size
        y = rng.integers(src.shape[0] - s + 1)
        x = rng.integers(src.shape[1] - s + 1)
        ref = src[y : y + s, x : x + s].astype(np.float32) / 255.0
        kinds = rng.choice(len(self.distortions), size=2)
        levels = rng.integers(1, 6, size=2)
        p0 = distort(ref, self.distortions[kinds[0]], int(levels[0]), rng)
        p1 = distort(ref, self.distortions[kinds[1]], int(levels[1]), rng)
        judge = 1.0 / (1.0 + np.exp(-(float(levels[0]) - float(levels[1])) / TEMPERATURE))
        return {"ref": ref, "p0": p0, "p1": p1, "judge": np.float32(judge)}

    def get_batch(self, batch_size: int, start_idx: int) -> dict[str, np.ndarray]:
        """Examples ``start_idx .. start_idx + batch_size - 1`` stacked into arrays."""
        return _stack([self[i] for i in _batch_range(self, batch_size, start_idx)])


def _batch_range(ds: Any, batch_size: int, start_idx: int) -> range:
    checks.check_positive_int(batch_size, "batch_size")
    stop = min(start_idx + batch_size, len(ds))
    if not 0 <= start_idx < stop:
        raise IndexError(f"expected `start_idx` in [0, {len(ds) - 1}], got {start_idx}")
    return range(start_idx, stop)


def _stack(examples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def _read_png(path: Path) -> np.ndarray:
    from calibrax.io.images import load_image

    return load_image(path).astype(np.float32) / 255.0


def _ids(root: Path, sub: str) -> list[str]:
    folder = root / sub
    if not folder.is_dir():
        raise FileNotFoundError(
            f"expected a BAPPS folder with a `{sub}/` subfolder, got {str(root)!r}"
        )
    return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() == ".png")


class TwoAFCFolder:
    """A BAPPS 2AFC folder: ``ref/``, ``p0/``, ``p1/`` PNGs and ``judge/`` ``.npy`` files.

    File ``judge/<id>.npy`` holds the fraction of observers who preferred ``p1``. Implements
    ``BatchableDatasetProtocol``; examples are dicts like :class:`SyntheticTwoAFC`'s.

    Raises:
        FileNotFoundError: If a subfolder or a file of an example is missing.
        ValueError: If the folder is empty.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        ids = _ids(self.root, "ref")
        if not ids:
            raise ValueError(f"expected PNG files in {str(self.root / 'ref')!r}, got none")
        for sub in ("p0", "p1"):
            missing = sorted(set(ids) - set(_ids(self.root, sub)))
            if missing:
                raise FileNotFoundError(
                    f"expected `{sub}/{missing[0]}.png` for every reference, got it missing"
                )
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        i = self.ids[idx]
        judge_path = self.root / "judge" / f"{i}.npy"
        if not judge_path.is_file():
            raise FileNotFoundError(f"expected the judgment file {str(judge_path)!r}, got none")
        return {
            "ref": _read_png(self.root / "ref" / f"{i}.png"),
            "p0": _read_png(self.root / "p0" / f"{i}.png"),
            "p1": _read_png(self.root / "p1" / f"{i}.png"),
            "judge": np.float32(np.load(judge_path).reshape(())),
        }

    def get_batch(self, batch_size: int, start_idx: int) -> dict[str, np.ndarray]:
        """Examples ``start_idx .. start_idx + batch_size - 1`` stacked into arrays."""
        return _stack([self[i] for i in _batch_range(self, batch_size, start_idx)])


class JNDFolder:
    """A BAPPS JND folder: ``p0/``, ``p1/`` PNGs and ``same/<id>.npy`` (fraction judged same).

    Implements ``BatchableDatasetProtocol``; examples are dicts with ``p0``, ``p1``, ``same``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        ids = _ids(self.root, "p0")
        if not ids:
            raise ValueError(f"expected PNG files in {str(self.root / 'p0')!r}, got none")
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        i = self.ids[idx]
        same_path = self.root / "same" / f"{i}.npy"
        if not same_path.is_file():
            raise FileNotFoundError(f"expected the judgment file {str(same_path)!r}, got none")
        return {
            "p0": _read_png(self.root / "p0" / f"{i}.png"),
            "p1": _read_png(self.root / "p1" / f"{i}.png"),
            "same": np.float32(np.load(same_path).reshape(())),
        }

    def get_batch(self, batch_size: int, start_idx: int) -> dict[str, np.ndarray]:
        """Examples ``start_idx .. start_idx + batch_size - 1`` stacked into arrays."""
        return _stack([self[i] for i in _batch_range(self, batch_size, start_idx)])
