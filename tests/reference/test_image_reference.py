"""PSNR, SSIM and MS-SSIM against scikit-image and torchmetrics.

Which reference each setting matches exactly:

- ``ssim(padding="valid")`` (default) == scikit-image ``structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=..., channel_axis=-1)``: scikit-image filters
  with reflect padding and then crops the window radius, which is a 'valid' filter.
- ``ssim(padding="reflect")`` == torchmetrics ``structural_similarity_index_measure``, which
  averages the full reflect-padded map (no crop). The two settings differ on the border ring; on
  the random images below the gap is ~1e-2, so one is never compared with the other's reference.
- ``ms_ssim(padding="reflect")`` == torchmetrics ``multiscale_structural_similarity_index_measure``
  (all three ``normalize`` settings); ``ms_ssim(padding="valid")`` is compared with a numpy
  reimplementation of Wang et al.'s 'valid' MS-SSIM built on scipy's Gaussian filter.
- ``psnr`` == scikit-image ``peak_signal_noise_ratio`` per image, and torchmetrics
  ``peak_signal_noise_ratio(dim=(1, 2, 3))``.

Tolerances: float64 inputs agree to 1e-10 relative (the float rounding of different summation
orders), except torchmetrics MS-SSIM whose ``betas`` are a float32 tensor (1e-7 relative: float32
exponents). float32 inputs agree to 1e-5 (SSIM sums ~11^2 products per pixel in float32; values
near 0 use an absolute 1e-5).
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
from torchmetrics.functional.image import structural_similarity_index_measure

from calibrax.functional import ms_ssim
from calibrax.functional import psnr
from calibrax.functional import ssim

BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair(shape, seed, noise=0.2):
    rng = np.random.default_rng(seed)
    t = rng.uniform(size=shape)
    p = np.clip(t + noise * rng.normal(size=shape), 0.0, 1.0)
    return p, t


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _skimage_ssim(p, t, data_range):
    return np.array(
        [
            structural_similarity(
                t[i],
                p[i],
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=data_range,
                channel_axis=-1,
            )
            for i in range(p.shape[0])
        ]
    )


CASES = [
    # (shape, seed, noise): random, small (just the window), one channel, identical, constant.
    ((3, 20, 24, 3), 0, 0.2),
    ((2, 11, 11, 1), 1, 0.3),
    ((2, 32, 17, 2), 2, 0.05),
]


@pytest.mark.parametrize(("shape", "seed", "noise"), CASES)
def test_ssim_valid_matches_skimage(shape, seed, noise):
    p, t = _pair(shape, seed, noise)
    want = _skimage_ssim(p, t, 1.0)
    got = ssim(jnp.asarray(p), jnp.asarray(t), data_range=1.0, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-10)
    got32 = ssim(jnp.asarray(p, jnp.float32), jnp.asarray(t, jnp.float32), data_range=1.0)
    np.testing.assert_allclose(got32, want.mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("shape", "seed", "noise"), CASES)
def test_ssim_reflect_matches_torchmetrics(shape, seed, noise):
    p, t = _pair(shape, seed, noise)
    want = structural_similarity_index_measure(
        _nchw(p), _nchw(t), data_range=1.0, reduction="none"
    ).numpy()
    got = ssim(jnp.asarray(p), jnp.asarray(t), data_range=1.0, padding="reflect", reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_ssim_edge_cases_match_references():
    rng = np.random.default_rng(3)
    base = rng.uniform(size=(1, 16, 16, 1))
    constant_a = np.full((1, 16, 16, 1), 0.3)
    constant_b = np.full((1, 16, 16, 1), 0.6)
    for p, t in [(base, base), (constant_a, constant_b), (constant_a, base)]:
        np.testing.assert_allclose(
            ssim(jnp.asarray(p), jnp.asarray(t), data_range=1.0),
            _skimage_ssim(p, t, 1.0),
            rtol=1e-10,
        )
        want = structural_similarity_index_measure(_nchw(p), _nchw(t), data_range=1.0)
        np.testing.assert_allclose(
            ssim(jnp.asarray(p), jnp.asarray(t), data_range=1.0, padding="reflect"),
            want.numpy(),
            rtol=1e-10,
        )


def test_ssim_data_range_255_matches_skimage():
    p, t = _pair((2, 14, 14, 3), 4)
    p, t = p * 255.0, t * 255.0
    got = ssim(jnp.asarray(p), jnp.asarray(t), data_range=255.0, reduction="none")
    np.testing.assert_allclose(got, _skimage_ssim(p, t, 255.0), rtol=1e-10)


@pytest.mark.parametrize("normalize", ["relu", "simple", None])
def test_ms_ssim_reflect_matches_torchmetrics(normalize):
    # 180 x 177: odd sizes exercise the dropped row/column of the 2x2 pooling.
    p, t = _pair((1, 180, 177, 1), 5, noise=0.3)
    want = multiscale_structural_similarity_index_measure(
        _nchw(p), _nchw(t), data_range=1.0, normalize=normalize, reduction="none"
    ).numpy()
    got = ms_ssim(
        jnp.asarray(p),
        jnp.asarray(t),
        data_range=1.0,
        padding="reflect",
        normalize=normalize,
        reduction="none",
    )
    # torchmetrics raises the terms to float32 exponents (torch.tensor(betas)).
    np.testing.assert_allclose(got, want, rtol=1e-7)


def test_ms_ssim_reflect_matches_torchmetrics_float32():
    p, t = _pair((1, 176, 176, 2), 6, noise=0.1)
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    want = multiscale_structural_similarity_index_measure(_nchw(p32), _nchw(t32), data_range=1.0)
    got = ms_ssim(jnp.asarray(p32), jnp.asarray(t32), data_range=1.0, padding="reflect")
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)


def _numpy_ms_ssim_valid(p, t, data_range):
    """Wang et al.'s MS-SSIM with 'valid' windows, per image, from scipy's Gaussian filter."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = 5
    out = []
    for x, y in zip(p, t, strict=True):
        terms = []
        for scale in range(5):
            # truncate=3.5 with sigma=1.5 gives the 11-pixel window; crop the radius -> 'valid'.
            def f(a):
                filtered = ndimage.gaussian_filter(
                    a, sigma=(1.5, 1.5, 0), truncate=3.5, mode="reflect"
                )
                return filtered[pad:-pad, pad:-pad]

            mx, my = f(x), f(y)
            vx = f(x * x) - mx * mx
            vy = f(y * y) - my * my
            cov = f(x * y) - mx * my
            cs = (2 * cov + c2) / (vx + vy + c2)
            sim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
            terms.append(max(sim.mean(), 0.0) if scale == 4 else max(cs.mean(), 0.0))
            h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
            x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
            y = y[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
        out.append(np.prod(np.array(terms) ** np.array(BETAS)))
    return np.array(out)


def test_ms_ssim_valid_matches_numpy_reference():
    p, t = _pair((2, 181, 176, 2), 7, noise=0.1)
    got = ms_ssim(jnp.asarray(p), jnp.asarray(t), data_range=1.0, reduction="none")
    np.testing.assert_allclose(got, _numpy_ms_ssim_valid(p, t, 1.0), rtol=1e-10)


@pytest.mark.parametrize(("shape", "seed", "noise"), CASES)
def test_psnr_matches_skimage_and_torchmetrics(shape, seed, noise):
    p, t = _pair(shape, seed, noise)
    sk = np.array([peak_signal_noise_ratio(t[i], p[i], data_range=1.0) for i in range(len(p))])
    got = psnr(jnp.asarray(p), jnp.asarray(t), data_range=1.0, reduction="none")
    np.testing.assert_allclose(got, sk, rtol=1e-10)
    tm = tm_psnr(_nchw(p), _nchw(t), data_range=1.0, dim=(1, 2, 3)).numpy()
    # torchmetrics takes log(data_range) and log(10) of float32 tensors: 1e-6 relative.
    np.testing.assert_allclose(psnr(jnp.asarray(p), jnp.asarray(t), data_range=1.0), tm, rtol=1e-6)
    # Inferred range: scikit-image's dtype rule for float images.
    sk_inferred = np.array([peak_signal_noise_ratio(t[i], p[i]) for i in range(len(p))])
    np.testing.assert_allclose(
        psnr(jnp.asarray(p), jnp.asarray(t), data_range=None, reduction="none"),
        sk_inferred,
        rtol=1e-10,
    )
    # float32: log10 of a float32 MSE, 1e-5 relative.
    got32 = psnr(jnp.asarray(p, jnp.float32), jnp.asarray(t, jnp.float32), data_range=1.0)
    np.testing.assert_allclose(got32, sk.mean(), rtol=1e-5)


def test_psnr_signed_images_match_skimage_inferred_range():
    p, t = _pair((2, 8, 8, 1), 8)
    p, t = p * 2.0 - 1.0, t * 2.0 - 1.0
    sk = np.array([peak_signal_noise_ratio(t[i], p[i]) for i in range(len(p))])
    got = psnr(jnp.asarray(p), jnp.asarray(t), data_range=None, reduction="none")
    np.testing.assert_allclose(got, sk, rtol=1e-10)
    got = psnr(jnp.asarray(p), jnp.asarray(t), data_range=(-1.0, 1.0), reduction="none")
    np.testing.assert_allclose(got, sk, rtol=1e-10)
