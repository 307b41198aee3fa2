"""The LPIPS paper's low-level baselines: L2 and SSIM distances, in Lab or RGB.

Zhang et al. (2018) score every learned metric against L2 and SSIM on the same 2AFC and JND data
(their Table 4, Fig. 4). :func:`baseline_distance` computes those distances as the authors'
``test_dataset_model.py --model l2|ssim --colorspace Lab|RGB`` does (the ``L2`` and ``DSSIM``
networks and the helpers ``l2``, ``dssim``, ``tensor2im`` and ``tensor2tensorlab`` of the
reference ``lpips`` package), vectorised over the batch and jit-compatible:

- The reference's data loader hands the networks images in [-1, 1], ``t = (x - 0.5) / 0.5``; we
  take calibrax's [0, 1] images and apply the same float32 step first.
- ``l2``/``RGB``: :math:`\\operatorname{mean}_{c,h,w}(t_0 - t_1)^2` in that [-1, 1] space (no 1/2
  factor: the RGB branch of ``L2.forward`` does not call ``lpips.l2``).
- Everything else first quantises as ``tensor2im`` does: ``uint8((t + 1) * 127.5)``, the cast
  truncating (not rounding), in float32. ``Lab`` then converts those 8-bit values with
  scikit-image's ``rgb2lab`` (sRGB, D65, 2° observer), unscaled (``to_norm=False``: L in [0, 100]).
- ``l2``/``Lab``: ``lpips.l2(..., range=100)``, :math:`\\tfrac12 \\operatorname{mean}((\\text{Lab}_0
  - \\text{Lab}_1) / 100)^2`.
- ``ssim``: ``lpips.dssim``, :math:`(1 - \\mathrm{SSIM}) / 2` with scikit-image's ``compare_ssim``
  at the reference's options: ``multichannel=True`` (per-channel SSIM, averaged), a 7x7 uniform
  window (``gaussian_weights=False``), sample covariances (``use_sample_covariance=True``,
  :math:`N/(N-1)` with :math:`N = 49`), K1 = 0.01, K2 = 0.03, the SSIM map averaged over the
  window positions fully inside the image, and ``data_range`` 255 for RGB (the 8-bit values) or
  100 for Lab (the raw Lab values).

Where we differ: the reference computes Lab and SSIM in float64 with NumPy; here they run in the
input's dtype (float32 unless x64 is on). The local variances are taken about a per-image
constant to keep float32 cancellation small; the tests bound the difference against a float64
NumPy/scikit-image transcription of the reference on real photographs. The reference processes
one pair at a time (``assert in0.size()[0]==1``); here a batch is processed at once.

References:
    Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
    arXiv:1801.03924; code: github.com/richzhang/PerceptualSimilarity.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register

__all__ = ["BASELINES", "SSIM_WINDOW", "baseline_distance", "rgb_to_lab"]

# (model, colorspace) pairs in the order the paper's tables list them.
BASELINES: tuple[tuple[str, str], ...] = (
    ("l2", "Lab"),
    ("l2", "RGB"),
    ("ssim", "Lab"),
    ("ssim", "RGB"),
)
SSIM_WINDOW = 7  # compare_ssim's default window (uniform weights)
_K1, _K2 = 0.01, 0.03
# scikit-image's sRGB (D65) -> XYZ matrix and the D65 / 2° reference white.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)


def rgb_to_lab(rgb: Float[Array, "... 3"]) -> Float[Array, "... 3"]:
    """CIE Lab of sRGB values in [0, 1], as scikit-image's ``color.rgb2lab`` (D65, 2° observer).

    sRGB is linearised (:math:`((v + 0.055) / 1.055)^{2.4}` above 0.04045, :math:`v / 12.92`
    below), mapped to XYZ, divided by the white point, and mapped to Lab with the cube root above
    0.008856 and :math:`7.787 t + 16/116` below. Computed in the input dtype; no input checks (the
    public entry point is :func:`baseline_distance`).
    """
    dtype = rgb.dtype
    linear = jnp.where(rgb > 0.04045, jnp.power((rgb + 0.055) / 1.055, 2.4), rgb / 12.92)
    matrix = jnp.asarray(_XYZ_FROM_RGB, dtype)
    xyz = jnp.einsum("...c,kc->...k", linear, matrix, precision=jax.lax.Precision.HIGHEST)
    t = xyz / jnp.asarray(_D65_WHITE, dtype).reshape((1,) * (rgb.ndim - 1) + (3,))
    f = jnp.where(t > 0.008856, jnp.cbrt(t), 7.787 * t + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def _to_reference_input(x: jax.Array) -> jax.Array:
    # The reference loader's transforms.Normalize((0.5,) * 3, (0.5,) * 3), in float32.
    return (x - 0.5) / 0.5


def _tensor2im(t: jax.Array) -> jax.Array:
    # lpips.tensor2im: ((t + 1) * 255 / 2).astype(uint8); the cast truncates (values are >= 0).
    return jnp.floor((t + 1.0) * (255.0 / 2.0))


def _box_valid(x: jax.Array) -> jax.Array:
    """Mean over every 7x7 window lying fully inside the image, per channel: (n, h-6, w-6, c)."""
    k, c = SSIM_WINDOW, x.shape[-1]
    window = jnp.full((k,), 1.0 / k, x.dtype)
    for kernel in (window.reshape(k, 1, 1, 1), window.reshape(1, k, 1, 1)):
        x = jax.lax.conv_general_dilated(
            x,
            jnp.tile(kernel, (1, 1, 1, c)),
            window_strides=(1, 1),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c,
            precision=jax.lax.Precision.HIGHEST,
        )
    return x


def _ssim_uniform(a: jax.Array, b: jax.Array, data_range: float) -> jax.Array:
    """compare_ssim(a, b, data_range, multichannel=True) per image, shape (n,)."""
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    n_window = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = n_window / (n_window - 1.0)
    # Variances are shift-invariant: take them about a per-image, per-channel constant so that
    # E[x^2] - E[x]^2 does not cancel catastrophically in float32.
    centre = jax.lax.stop_gradient(
        0.5 * (jnp.mean(a, (1, 2), keepdims=True) + jnp.mean(b, (1, 2), keepdims=True))
    )
    ac, bc = a - centre, b - centre
    stacked = jnp.concatenate([ac, bc, ac * ac, bc * bc, ac * bc])
    mu_a, mu_b, e_aa, e_bb, e_ab = jnp.split(_box_valid(stacked), 5)
    var_a = cov_norm * (e_aa - mu_a * mu_a)
    var_b = cov_norm * (e_bb - mu_b * mu_b)
    cov = cov_norm * (e_ab - mu_a * mu_b)
    ux, uy = mu_a + centre, mu_b + centre
    num = (2.0 * ux * uy + c1) * (2.0 * cov + c2)
    den = (ux * ux + uy * uy + c1) * (var_a + var_b + c2)
    return jnp.mean(num / den, axis=(1, 2, 3))


@functools.partial(jax.jit, static_argnames=("model", "colorspace"))
def _baseline_core(x: jax.Array, y: jax.Array, model: str, colorspace: str) -> jax.Array:
    tx, ty = _to_reference_input(x), _to_reference_input(y)
    if model == "l2" and colorspace == "RGB":
        return jnp.mean((tx - ty) ** 2, axis=(1, 2, 3))
    qx, qy = _tensor2im(tx), _tensor2im(ty)
    if colorspace == "Lab":
        qx, qy = rgb_to_lab(qx / 255.0), rgb_to_lab(qy / 255.0)
        data_range = 100.0
    else:
        data_range = 255.0
    if model == "l2":
        return 0.5 * jnp.mean((qx / data_range - qy / data_range) ** 2, axis=(1, 2, 3))
    return (1.0 - _ssim_uniform(qx, qy, data_range)) / 2.0


def _example():
    k0, k1 = jax.random.split(jax.random.key(3))
    x = jax.random.uniform(k0, (2, 16, 16, 3), jnp.float32)
    y = jnp.clip(x + 0.1 * jax.random.normal(k1, x.shape, jnp.float32), 0.0, 1.0)
    return (lambda a, b: baseline_distance(a, b, model="ssim", colorspace="Lab")), (x, y)


@register(
    "baseline_distance",
    kind="function",
    tier=2,
    domain="perceptual",
    higher_is_better=False,
    example=_example,
)
def baseline_distance(
    x: Float[Array, "batch height width 3"],
    y: Float[Array, "batch height width 3"],
    *,
    model: str = "l2",
    colorspace: str = "Lab",
) -> Float[Array, " batch"]:
    """The LPIPS paper's L2 or SSIM distance between each pair of images (see the module doc).

    Args:
        x: Images (batch, height, width, 3), floating, in [0, 1].
        y: Images of the same shape and dtype.
        model: ``"l2"`` or ``"ssim"`` (the reference's ``DSSIM``: :math:`(1 - \\mathrm{SSIM})/2`).
        colorspace: ``"Lab"`` or ``"RGB"``.

    Returns:
        Distances of shape (batch,), in the input dtype; 0 for identical images.

    Raises:
        ValueError: On an unknown ``model`` or ``colorspace``, shapes that differ or are not NHWC
            RGB, an empty batch, images smaller than 7x7 (the SSIM window; any size for L2), or
            (eagerly) NaN/Inf or values outside [0, 1].
        TypeError: On non-floating or different dtypes.

    Under ``jax.jit`` the value checks cannot run; NaN in an image gives a NaN distance.
    """
    checks.check_choice(model, ("l2", "ssim"), "model")
    checks.check_choice(colorspace, ("Lab", "RGB"), "colorspace")
    checks.check_images(x, "x", min_size=SSIM_WINDOW if model == "ssim" else 1)
    checks.check_same_shape(x, y, "x", "y")
    checks.check_same_dtype(x, y, "x", "y")
    for arr, name in ((x, "x"), (y, "y")):
        checks.check_finite(arr, name)
        checks.check_range(arr, 0.0, 1.0, name)
    return _baseline_core(jnp.asarray(x), jnp.asarray(y), model, colorspace)
