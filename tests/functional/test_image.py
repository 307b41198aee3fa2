"""PSNR, SSIM and MS-SSIM: closed forms, validation messages, jit and gradients.

Parity with scikit-image and torchmetrics is in ``tests/reference/test_image_reference.py``.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from calibrax.functional import ms_ssim
from calibrax.functional import psnr
from calibrax.functional import ssim

MS = 176  # the least size for 5 MS-SSIM scales with an 11-pixel window: 11 * 2**4


def _pair(shape, seed=0, noise=0.1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    t = rng.uniform(size=shape)
    p = np.clip(t + noise * rng.normal(size=shape), 0.0, 1.0)
    return jnp.asarray(p, dtype), jnp.asarray(t, dtype)


# ------------------------------------------------------------------------------------- closed forms


def test_psnr_closed_form_constant_offset():
    # MSE = 0.1^2 with R = 1 gives exactly 20 dB; with R = 2 (tuple range) 20 + 20 log10(2).
    t = jnp.full((2, 5, 6, 3), 0.5, jnp.float64)
    np.testing.assert_allclose(psnr(t + 0.1, t, data_range=1.0), 20.0, rtol=1e-12)
    np.testing.assert_allclose(
        psnr(t + 0.1, t, data_range=(-1.0, 1.0)), 20.0 + 20.0 * np.log10(2.0), rtol=1e-12
    )


def test_psnr_is_mean_of_per_image_values():
    p, t = _pair((3, 6, 5, 2), dtype=np.float64)
    per_image = psnr(p, t, data_range=1.0, reduction="none")
    assert per_image.shape == (3,)
    mse = np.mean((np.asarray(p) - np.asarray(t)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(per_image, 10 * np.log10(1.0 / mse), rtol=1e-12)
    np.testing.assert_allclose(psnr(p, t, data_range=1.0), per_image.mean(), rtol=1e-12)


def test_psnr_inferred_range_follows_scikit_image_rule():
    # Targets in [0, 1] -> R = 1; targets with negatives in [-1, 1] -> R = 2, image by image.
    t = jnp.stack([jnp.full((4, 4, 1), 0.5), jnp.full((4, 4, 1), -0.5)]).astype(jnp.float64)
    got = psnr(t + 0.1, t, data_range=None, reduction="none")
    np.testing.assert_allclose(got, [20.0, 20.0 + 20.0 * np.log10(2.0)], rtol=1e-12)


def test_psnr_inferred_range_is_nan_under_jit_outside_unit_interval():
    t = jnp.full((1, 4, 4, 1), 3.0, jnp.float32)
    got = jax.jit(lambda a, b: psnr(a, b, data_range=None))(t + 0.1, t)
    assert np.isnan(got)


def test_psnr_identical_images_is_infinite():
    t = jnp.full((1, 4, 4, 1), 0.25, jnp.float32)
    assert np.isposinf(psnr(t, t, data_range=1.0))


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_ssim_identical_and_constant_images(padding):
    p, _ = _pair((2, 16, 16, 3))
    np.testing.assert_allclose(ssim(p, p, data_range=1.0, padding=padding), 1.0, rtol=1e-6)
    # Two constant images a, b: sigma terms vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.2, 0.7, 0.01**2
    x = jnp.full((1, 12, 12, 1), a, jnp.float64)
    y = jnp.full((1, 12, 12, 1), b, jnp.float64)
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    np.testing.assert_allclose(ssim(x, y, data_range=1.0, padding=padding), want, rtol=1e-10)


def test_ssim_valid_map_size_and_reduction():
    p, t = _pair((3, 11, 13, 2))
    assert ssim(p, t, data_range=1.0, reduction="none").shape == (3,)
    assert ssim(p, t, data_range=1.0).dtype == jnp.float32


def test_ms_ssim_identical_is_one_and_odd_sizes_pool():
    p, _ = _pair((1, MS + 3, MS + 1, 1))
    np.testing.assert_allclose(ms_ssim(p, p, data_range=1.0), 1.0, rtol=1e-6)


def test_ms_ssim_normalize_on_anticorrelated_images():
    # Inverted images have negative contrast-structure terms: a fractional power of a negative
    # number is NaN without normalisation; "relu" clamps the terms to 0 (MS-SSIM 0), "simple"
    # maps them into [0, 1] first (torchmetrics' conventions).
    p, _ = _pair((1, 44, 44, 1), dtype=np.float64)
    betas = (0.3, 0.3, 0.4)
    assert np.isnan(ms_ssim(p, 1.0 - p, data_range=1.0, betas=betas, normalize=None))
    assert ms_ssim(p, 1.0 - p, data_range=1.0, betas=betas, normalize="relu") == 0.0
    simple = ms_ssim(p, 1.0 - p, data_range=1.0, betas=betas, normalize="simple")
    assert 0.0 < simple < 0.5


def test_data_range_scales_constants():
    # SSIM is invariant to scaling data and range together; a (low, high) pair only sets R.
    p, t = _pair((1, 12, 12, 1), dtype=np.float64)
    np.testing.assert_allclose(
        ssim(p * 255.0, t * 255.0, data_range=255.0), ssim(p, t, data_range=1.0), rtol=1e-10
    )
    np.testing.assert_allclose(
        ssim(p, t, data_range=(-1.0, 1.0)), ssim(p, t, data_range=2.0), rtol=1e-12
    )


# ----------------------------------------------------------------------------------- jit and grads


def test_jit_matches_eager():
    p, t = _pair((2, 16, 16, 3))
    for fn in (
        lambda a, b: psnr(a, b, data_range=1.0),
        lambda a, b: ssim(a, b, data_range=1.0, padding="reflect"),
    ):
        np.testing.assert_allclose(jax.jit(fn)(p, t), fn(p, t), rtol=1e-6)


# check_grads perturbs the inputs eagerly, so its range must leave room around [0, 1].
WIDE = (-0.5, 1.5)


def test_gradients_psnr_ssim():
    # float64 and central differences: check_grads' default tolerances apply.
    p, t = _pair((1, 12, 12, 2), dtype=np.float64, noise=0.2)
    check_grads(lambda a: psnr(a, t, data_range=WIDE), (p,), order=1, modes=("rev",))
    for padding in ("valid", "reflect"):
        check_grads(
            lambda a, pad=padding: ssim(a, t, data_range=WIDE, padding=pad),
            (p,),
            order=1,
            modes=("rev",),
        )


def test_gradient_ms_ssim():
    # Three scales at 44 pixels run the same code as five at 176, at a fraction of the cost (the
    # registry test differentiates the five-scale default too).
    p, t = _pair((1, 44, 44, 1), dtype=np.float64, noise=0.05)
    betas = (0.3, 0.3, 0.4)
    check_grads(
        lambda a: ms_ssim(a, t, data_range=WIDE, betas=betas), (p,), order=1, modes=("rev",)
    )


def test_ssim_loss_gradient_points_towards_target():
    # One gradient step on 1 - SSIM must raise SSIM: the use as a training loss.
    p, t = _pair((1, 16, 16, 1), noise=0.3)
    loss = lambda a: 1.0 - ssim(a, t, data_range=1.0)  # noqa: E731
    g = jax.grad(loss)(p)
    assert np.all(np.isfinite(g))
    assert loss(jnp.clip(p - 20.0 * g, 0, 1)) < loss(p)


# ------------------------------------------------------------------------------------- validation

GOOD = _pair((2, 16, 16, 3))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"predictions": GOOD[0][0]},
            ValueError,
            "expected `predictions` to have 4 dims (batch, height, width, channels), "
            "got shape (16, 16, 3)",
        ),
        (
            {"targets": GOOD[1][:, :8]},
            ValueError,
            "expected `predictions` and `targets` to have the same shape, "
            "got (2, 16, 16, 3) and (2, 8, 16, 3)",
        ),
        (
            {"predictions": (GOOD[0] * 255).astype(jnp.uint8)},
            TypeError,
            "expected `predictions` to have a floating dtype, got uint8",
        ),
        (
            {"targets": GOOD[1].astype(jnp.float64)},
            TypeError,
            "expected `predictions` and `targets` to have the same dtype, got float32 and float64",
        ),
        (
            {"predictions": GOOD[0][:0], "targets": GOOD[1][:0]},
            ValueError,
            "expected `predictions` to be non-empty, got shape (0, 16, 16, 3)",
        ),
        (
            {"predictions": GOOD[0].at[0, 0, 0, 0].set(jnp.nan)},
            ValueError,
            "expected `predictions` to be finite, got 1 NaN and 0 Inf values",
        ),
        (
            {"targets": GOOD[1].at[1, 2, 3, 0].set(jnp.inf)},
            ValueError,
            "expected `targets` to be finite, got 0 NaN and 1 Inf values",
        ),
        (
            {"predictions": GOOD[0].at[0, 0, 0, 0].set(1.5)},
            ValueError,
            "expected `predictions` to be in [0, 1] (data_range=1.0), got values in [0, 1.5]",
        ),
        (
            {"data_range": (1.0, 0.0)},
            ValueError,
            "expected `data_range` to be a positive number or a (low, high) pair with "
            "low < high, got (1.0, 0.0)",
        ),
        (
            {"data_range": -2.0},
            ValueError,
            "expected `data_range` to be a positive number or a (low, high) pair with "
            "low < high, got -2.0",
        ),
        (
            {"reduction": "sum"},
            ValueError,
            "expected `reduction` to be one of 'mean', 'none', got 'sum'",
        ),
    ],
)
@pytest.mark.parametrize("fn", [psnr, ssim], ids=["psnr", "ssim"])
def test_validation_messages(fn, kwargs, error, message):
    args = {"predictions": GOOD[0], "targets": GOOD[1], "data_range": 1.0, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        fn(**args)


def test_psnr_inferred_range_rejects_targets_outside_unit_interval():
    p, t = GOOD
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `targets` to be in [-1, 1] (data_range=None infers 1 for images in [0, 1] "
            "and 2 for images in [-1, 1]; pass data_range for other images), got values in "
        ),
    ):
        psnr(p, t * 2.0 + 0.5, data_range=None)


def test_ssim_rejects_images_smaller_than_window():
    p, t = _pair((1, 10, 16, 1))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` to have height and width at least 11 (the SSIM window), "
            "got shape (1, 10, 16, 1)"
        ),
    ):
        ssim(p, t, data_range=1.0)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `padding` to be one of 'valid', 'reflect', got 'same'"),
    ):
        ssim(*_pair((1, 12, 12, 1)), data_range=1.0, padding="same")


def test_ms_ssim_rejects_images_too_small_for_scales():
    p, t = _pair((1, MS - 1, MS, 1))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` to have height and width at least 176 (the SSIM window at "
            "the coarsest of 5 scales), got shape (1, 175, 176, 1)"
        ),
    ):
        ms_ssim(p, t, data_range=1.0)
    # Three scales need 11 * 2**2 = 44 pixels.
    small = _pair((1, 44, 44, 1))
    assert np.isfinite(ms_ssim(*small, data_range=1.0, betas=(0.3, 0.3, 0.4)))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `betas` to be a non-empty tuple of positive numbers, got (0.5, -0.5)"
        ),
    ):
        ms_ssim(*small, data_range=1.0, betas=(0.5, -0.5))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `normalize` to be one of 'relu', 'simple', None, got 'clip'"),
    ):
        ms_ssim(*small, data_range=1.0, betas=(0.3, 0.3, 0.4), normalize="clip")


def test_validation_is_static_under_jit():
    # Shape checks still raise under jit; value checks are skipped (no NaN check on tracers).
    p, t = GOOD
    with pytest.raises(ValueError, match=re.escape("expected `predictions` and `targets`")):
        jax.jit(lambda a, b: ssim(a, b, data_range=1.0))(p, t[:, :12])
