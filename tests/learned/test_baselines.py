"""The LPIPS paper's L2/SSIM baselines against a NumPy/scikit-image transcription of the reference.

The reference (richzhang/PerceptualSimilarity, ``lpips/__init__.py`` and the ``L2``/``DSSIM``
classes of ``lpips/lpips.py``) cannot run here: it imports torchvision, and its ``dssim`` calls
``skimage.measure.compare_ssim``, removed from scikit-image. ``_reference`` below transcribes it
step by step in float64 NumPy with the current name of the same function
(``structural_similarity``, whose defaults are ``compare_ssim``'s: 7x7 uniform window, sample
covariance, K1 = 0.01, K2 = 0.03).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color
from skimage.metrics import structural_similarity

from calibrax.learned import BASELINES
from calibrax.learned import baseline_distance
from calibrax.learned import distort
from calibrax.learned import offline_images
from calibrax.learned import rgb_to_lab


def _tensor2im(x: np.ndarray) -> np.ndarray:
    # Loader: Normalize((0.5,)*3, (0.5,)*3) in float32; then lpips.tensor2im: (t + 1) * 127.5,
    # astype(uint8).
    t = (x.astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
    return ((t + 1.0) * (255.0 / 2.0)).astype(np.uint8)


def _reference(x: np.ndarray, y: np.ndarray, model: str, colorspace: str) -> float:
    """One pair, as ``L2.forward`` / ``DSSIM.forward`` of the reference compute it."""
    if model == "l2" and colorspace == "RGB":
        t0 = (x.astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
        t1 = (y.astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
        return float(np.mean((t0.astype(np.float64) - t1) ** 2))
    if colorspace == "Lab":
        # tensor2tensorlab(to_norm=False): rgb2lab of the uint8 image, unscaled.
        a, b, rng = color.rgb2lab(_tensor2im(x)), color.rgb2lab(_tensor2im(y)), 100.0
    else:
        a, b, rng = 1.0 * _tensor2im(x), 1.0 * _tensor2im(y), 255.0
    if model == "l2":  # lpips.l2
        return float(0.5 * np.mean((a / rng - b / rng) ** 2))
    # lpips.dssim: compare_ssim(p0, p1, data_range=range, multichannel=True)
    return float((1.0 - structural_similarity(a, b, data_range=rng, channel_axis=-1)) / 2.0)


@pytest.fixture(scope="module")
def pairs():
    """Patches of real photographs and distorted versions, plus an exact 8-bit grid pair."""
    rng = np.random.default_rng(0)
    images = offline_images()
    refs, dists = [], []
    for i, kind in enumerate(("noise", "blur", "jpeg", "color", "contrast", "shift")):
        img = images[i % len(images)]
        y0, x0 = rng.integers(0, img.shape[0] - 32), rng.integers(0, img.shape[1] - 32)
        ref = img[y0 : y0 + 32, x0 : x0 + 32].astype(np.float32) / 255.0
        refs.append(ref)
        dists.append(distort(ref, kind, 3, rng))
    return np.stack(refs), np.stack(dists)


@pytest.mark.parametrize(("model", "colorspace"), BASELINES)
def test_matches_reference_on_photos(pairs, model, colorspace):
    x, y = pairs
    ours = np.asarray(baseline_distance(x, y, model=model, colorspace=colorspace))
    ref = np.array([_reference(a, b, model, colorspace) for a, b in zip(x, y, strict=True)])
    # float32 (ours) vs float64 (reference) Lab conversion and SSIM statistics: 2e-5 relative
    # plus an absolute floor for SSIM values near 0; the 8-bit quantisation is bit-identical.
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-7)
    assert np.all(ours > 0)


def test_quantisation_truncates_like_tensor2im():
    # k / 255 in float32 through (x - .5) / .5, + 1, * 127.5 lands just below k for some k: the
    # reference's truncating cast then gives k - 1. We reproduce that, value for value.
    grid = (np.arange(256, dtype=np.float32) / np.float32(255.0)).reshape(1, 16, 16, 1)
    grid = np.repeat(grid, 3, axis=-1)
    from calibrax.learned.baselines import _tensor2im as ours_q
    from calibrax.learned.baselines import _to_reference_input

    ours = np.asarray(ours_q(_to_reference_input(jnp.asarray(grid))))
    np.testing.assert_array_equal(ours, _tensor2im(grid).astype(np.float32))


def test_rgb_to_lab_matches_skimage():
    rgb = np.random.default_rng(1).uniform(0, 1, (500, 3))
    rgb[:5] = [[0, 0, 0], [1, 1, 1], [0.01, 0.02, 0.03], [1, 0, 0], [0.04, 0.5, 0.04045]]
    ours = np.asarray(rgb_to_lab(jnp.asarray(rgb, jnp.float32)))
    # float32 vs float64: Lab values are at most ~100, so 1e-3 absolute is ~1e-5 relative.
    np.testing.assert_allclose(ours, color.rgb2lab(rgb), atol=1e-3)


def test_identical_images_are_at_distance_zero(pairs):
    x = pairs[0]
    for model, cs in BASELINES:
        np.testing.assert_allclose(
            np.asarray(baseline_distance(x, x, model=model, colorspace=cs)), 0.0, atol=1e-6
        )


def test_jit_matches_eager(pairs):
    x, y = (jnp.asarray(a) for a in pairs)
    for model, cs in BASELINES:
        f = jax.jit(lambda a, b, m=model, c=cs: baseline_distance(a, b, model=m, colorspace=c))
        np.testing.assert_allclose(
            np.asarray(f(x, y)),
            np.asarray(baseline_distance(x, y, model=model, colorspace=cs)),
            rtol=1e-6,
        )


def test_nan_under_jit_gives_nan(pairs):
    x, y = (np.array(a) for a in pairs)
    x[0, 0, 0, 0] = np.nan
    for model, cs in BASELINES:
        f = jax.jit(lambda a, b, m=model, c=cs: baseline_distance(a, b, model=m, colorspace=c))
        assert np.isnan(np.asarray(f(x, y))[0])


X = np.full((2, 8, 8, 3), 0.5, np.float32)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"model": "l1"},
            ValueError,
            "expected `model` to be one of 'l2', 'ssim', got 'l1'",
        ),
        (
            {"colorspace": "lab"},
            ValueError,
            "expected `colorspace` to be one of 'Lab', 'RGB', got 'lab'",
        ),
        (
            {"x": X[0]},
            ValueError,
            "expected `x` to have 4 dims (batch, height, width, channels), got shape (8, 8, 3)",
        ),
        (
            {"x": X[..., :1], "y": X[..., :1]},
            ValueError,
            "expected `x` to have 3 channels (last axis), got shape (2, 8, 8, 1)",
        ),
        (
            {"x": X[:0], "y": X[:0]},
            ValueError,
            "expected `x` to be non-empty, got shape (0, 8, 8, 3)",
        ),
        (
            {"x": X[:, :6, :6], "y": X[:, :6, :6], "model": "ssim"},
            ValueError,
            "expected `x` to have height and width at least 7, got shape (2, 6, 6, 3)",
        ),
        (
            {"y": X[:1]},
            ValueError,
            "expected `x` and `y` to have the same shape, got (2, 8, 8, 3) and (1, 8, 8, 3)",
        ),
        (
            {"y": X.astype(np.float64)},
            TypeError,
            "expected `x` and `y` to have the same dtype, got float32 and float64",
        ),
        (
            {"x": (X * 255).astype(np.uint8), "y": (X * 255).astype(np.uint8)},
            TypeError,
            "expected `x` to have a floating dtype, got uint8",
        ),
        (
            {"y": np.where(np.arange(3) == 0, np.nan, X).astype(np.float32)},
            ValueError,
            "expected `y` to be finite, got 128 NaN and 0 Inf values",
        ),
        (
            {"x": X * 255},
            ValueError,
            "expected `x` to be in [0, 1], got values in [127.5, 127.5]",
        ),
    ],
)
def test_bad_input(kwargs, error, message):
    args = {"x": X, "y": X, "model": "l2", "colorspace": "Lab", **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        baseline_distance(**args)
