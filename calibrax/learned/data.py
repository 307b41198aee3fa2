"""2AFC data for perceptual metrics: the BAPPS layout and a seeded synthetic generator.

A 2AFC (two-alternative forced choice) example is a reference patch ``ref``, two distorted versions
``p0`` and ``p1``, and a judgment ``judge`` in [0, 1]: the fraction of observers who found ``p1``
closer to ``ref`` than ``p0`` (Zhang et al. 2018). Patches are float32 NHWC in [0, 1].

The synthetic judgment
----------------------
:class:`SyntheticTwoAFC` has no human observers, so it defines the judgment from distortion
strength. Every distortion type has five graded levels (``DISTORTIONS`` lists the parameter of
each level). Reference patches are cut where the image is textured (pixel standard deviation at
least ``MIN_PATCH_STD`` = 0.1; up to ``PATCH_TRIES`` positions are drawn), since on a flat patch a
blur or a shift changes nothing. The two patches of an example carry levels ``l0`` and ``l1``
(each drawn uniformly from 1..5, types drawn independently).

``judge="levels"`` (the default) judges by the levels:

.. math::

    \\text{judge} = \\sigma\\big((l_0 - l_1) / T\\big), \\qquad T = 0.5,

a soft label: 0.5 for equal levels, 0.88 when ``p1`` is one level milder, 0.98 at two levels.
The levels are calibrated so that equal levels look equally strong to the frozen EfficientNet-Lite0
trunk: each type's parameters were chosen so that the median unweighted LPIPS distance of level
``l`` over textured patches is the same for every type (that of a shift by ``l`` pixels; the
measurement is ``scripts/calibrate_synthetic_2afc.py``). Earlier versions used hand-picked
parameters under which, for instance, level 1 of noise was 13 times as strong to the trunk as
level 1 of contrast. Even so, how strong a level looks depends on the patch's content, and no
per-channel weighting of the trunk can predict the level of a pair from its pixels: with these
judgments the best non-negative heads (fitted by L-BFGS on 1536 pairs) reach held-out 2AFC 0.77,
against 0.75 for heads of ones and 0.87 for the oracle that knows the levels.

``judge="observer"`` judges by what a synthetic observer sees, so that the judgment is a
function of the pixels that trained heads can learn: the observer's severity of a pair
``(ref, p)`` is an LPIPS distance on the same frozen trunk with per-tap weights
``OBSERVER_TAP_WEIGHTS`` (see :func:`synthetic_observer`), and

.. math::

    \\text{judge} = \\sigma\\big((s_0 - s_1) / T_o\\big), \\qquad T_o = \\text{OBSERVER\\_TEMPERATURE},

with :math:`T_o` = 0.1, half the median :math:`|s_0 - s_1|` of the generator's 64-pixel pairs.
The observer attends to the trunk's first tap only (fine detail); heads of ones weigh every tap
alike and disagree with it on many pairs, and trained heads can recover its weighting. The demo
and ``calibrax train-lpips`` use this judge; its oracle orders pairs by the observer's severities
(:meth:`SyntheticTwoAFC.severities`). In the demo's setting (384 training pairs, 256 held out,
four epochs) held-out 2AFC goes from 0.695 (heads of ones) to 0.807 (trained), 80% of the way to
the oracle's 0.834, above the LPIPS paper's L2 and SSIM baselines (0.697 to 0.755).

The generator is a pure function of its seed: example ``i`` is drawn from
``np.random.default_rng([seed, i])``, so any example can be regenerated on its own.

References:
    Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
    arXiv:1801.03924.
"""

from __future__ import annotations

import io
from collections.abc import Callable
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
    "synthetic_observer",
]

# Parameter of each distortion at levels 1..5.
DISTORTIONS: dict[str, tuple[float, ...]] = {
    "noise": (0.023, 0.039, 0.057, 0.072, 0.095),  # std of additive Gaussian noise
    "blur": (0.89, 1.272, 1.671, 2.025, 2.624),  # Gaussian blur sigma in pixels
    "jpeg": (64, 31, 19, 13, 9),  # JPEG quality
    "color": (0.125, 0.213, 0.294, 0.354, 0.454),  # per-channel offset magnitude
    "contrast": (0.54, 0.393, 0.292, 0.235, 0.178),  # contrast factor around the mean
    "shift": (1, 2, 3, 4, 5),  # translation in pixels (edge padded)
}
TEMPERATURE = 0.5
JUDGES = ("levels", "observer")
# The synthetic observer's weight of each EfficientNet-Lite0 tap (every channel of a tap alike),
# and the temperature of its judgment.
OBSERVER_TAP_WEIGHTS = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
OBSERVER_TEMPERATURE = 0.1
# Patches are redrawn (up to PATCH_TRIES positions) until their pixel std reaches MIN_PATCH_STD.
MIN_PATCH_STD = 0.1
PATCH_TRIES = 10


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


def synthetic_observer() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The synthetic observer: LPIPS on the frozen EfficientNet-Lite0 trunk, ``OBSERVER_TAP_WEIGHTS``.

    Every channel of tap ``l`` weighs ``OBSERVER_TAP_WEIGHTS[l]``; images are in [0, 1]. Returns a
    jitted function of two NHWC batches giving one severity per pair.
    """
    import jax.numpy as jnp
    from flax import nnx

    from calibrax.learned.lpips import LPIPS

    model = LPIPS(net="efficientnet-lite0", pretrained=False, normalize=True)
    model.set_heads(
        [
            np.full(c, w, np.float32)
            for c, w in zip(model.tap_channels, OBSERVER_TAP_WEIGHTS, strict=True)
        ]
    )
    dist = nnx.jit(lambda m, a, b: m.distance(a, b))
    return lambda a, b: np.asarray(dist(model, jnp.asarray(a), jnp.asarray(b)))


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
        judge: ``"levels"`` (the judgment follows the distortion levels) or ``"observer"`` (it
            follows the synthetic observer's severities; see the module docstring).
        observer: For ``judge="observer"``: a function of two NHWC batches in [0, 1] returning
            one severity per pair; by default :func:`synthetic_observer`.
        observer_temperature: :math:`T_o` of the observer judge (suited to the default observer).

    Raises:
        ValueError: On a non-positive size or temperature, an unknown distortion or judge, or
            images smaller than a patch.
    """

    def __init__(
        self,
        num_examples: int,
        *,
        patch_size: int = 64,
        seed: int = 0,
        images: Sequence[np.ndarray] | None = None,
        distortions: Sequence[str] = tuple(DISTORTIONS),
        judge: str = "levels",
        observer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        observer_temperature: float = OBSERVER_TEMPERATURE,
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
        checks.check_choice(judge, JUDGES, "judge")
        self.judge = judge
        self.observer = observer
        if not observer_temperature > 0.0:
            raise ValueError(
                f"expected `observer_temperature` to be positive, got {observer_temperature}"
            )
        self.observer_temperature = float(observer_temperature)
        self._severities: np.ndarray | None = None

    def __len__(self) -> int:
        return self.num_examples

    def _draw(self, idx: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray]:
        """The example's generator, reference patch, distortion type indices and levels."""
        if not -self.num_examples <= idx < self.num_examples:
            raise IndexError(f"expected `idx` in [0, {self.num_examples - 1}], got {idx}")
        idx %= self.num_examples
        rng = np.random.default_rng([self.seed, idx])
        src = self.images[rng.integers(len(self.images))]
        s = self.patch_size
        for _ in range(PATCH_TRIES):
            y = rng.integers(src.shape[0] - s + 1)
            x = rng.integers(src.shape[1] - s + 1)
            ref = src[y : y + s, x : x + s].astype(np.float32) / 255.0
            if ref.std() >= MIN_PATCH_STD:
                break
        kinds = rng.choice(len(self.distortions), size=2)
        levels = rng.integers(1, 6, size=2)
        return rng, ref, kinds, levels

    def _render(self, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng, ref, kinds, levels = self._draw(idx)
        p0 = distort(ref, self.distortions[kinds[0]], int(levels[0]), rng)
        p1 = distort(ref, self.distortions[kinds[1]], int(levels[1]), rng)
        return ref, p0, p1, levels

    def __getitem__(self, idx: int) -> dict[str, Any]:
        ref, p0, p1, levels = self._render(idx)
        if self.judge == "levels":
            z = (float(levels[0]) - float(levels[1])) / TEMPERATURE
        else:
            s0, s1 = self.severities()[idx % self.num_examples]
            z = (float(s0) - float(s1)) / self.observer_temperature
        judge = 1.0 / (1.0 + np.exp(-z))
        return {"ref": ref, "p0": p0, "p1": p1, "judge": np.float32(judge)}

    def severities(self) -> np.ndarray:
        """The true severity of ``p0`` and ``p1`` of every example, shape (n, 2), float64.

        The judgment is the sigmoid of their difference: the levels with ``judge="levels"``, the
        observer's severities with ``judge="observer"`` (computed once, in batches of 64, on first
        use). Ordering pairs by these is the oracle of :func:`calibrax.learned.payoff_table`.
        """
        if self.judge == "levels":
            return self.levels().astype(np.float64)
        if self._severities is None:
            observer = self.observer if self.observer is not None else synthetic_observer()
            out = []
            for start in range(0, self.num_examples, 64):
                ex = [self._render(i) for i in range(start, min(start + 64, self.num_examples))]
                ref = np.stack([e[0] for e in ex])
                s0 = np.asarray(observer(ref, np.stack([e[1] for e in ex])), np.float64)
                s1 = np.asarray(observer(ref, np.stack([e[2] for e in ex])), np.float64)
                out.append(np.stack([s0, s1], axis=1))
            self._severities = np.concatenate(out)
        return self._severities

    def levels(self) -> np.ndarray:
        """The distortion levels of ``p0`` and ``p1`` of every example, shape (n, 2), int.

        With ``judge="levels"`` these are the true severities (:meth:`severities`).
        """
        return np.stack([self._draw(i)[3] for i in range(self.num_examples)]).astype(np.int64)

    def kinds(self) -> np.ndarray:
        """The distortion types of ``p0`` and ``p1`` of every example, shape (n, 2), str."""
        names = np.asarray(self.distortions)
        return np.stack([names[self._draw(i)[2]] for i in range(self.num_examples)])

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
