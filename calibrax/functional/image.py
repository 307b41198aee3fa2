"""Image quality: PSNR, SSIM and MS-SSIM on NHWC float images.

Each metric is a per-image score averaged over the batch. ``reduction="none"`` returns the
per-image scores; the streaming classes in :mod:`calibrax.metrics.image` accumulate their sum and
count, so that any split of the data into batches gives the same mean.

Conventions, shared by the three metrics:

- Images are ``(batch, height, width, channels)`` floating arrays; ``predictions`` and ``targets``
  have the same shape and dtype, and the work is done in that dtype.
- ``data_range`` is either a positive number ``d`` (images lie in ``[0, d]``) or a pair
  ``(low, high)`` (images lie in ``[low, high]``); the range is ``high - low``. Values outside the
  declared interval are an error (checked eagerly; skipped under ``jax.jit``, where values cannot
  raise), never silently clamped.
- SSIM uses an 11×11 Gaussian window (σ = 1.5, truncated at 3.5σ as in scikit-image and
  torchmetrics), K1 = 0.01, K2 = 0.03 and population (co)variances, as in Wang et al. (2004).
  ``padding="valid"`` (default) averages the SSIM map over the window positions that lie fully
  inside the image (the Wang et al. reference code; identical to scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, whose
  reflect-padded filter is cropped by the window radius). ``padding="reflect"`` reflect-pads by the
  window radius and averages the full-size map, which is what torchmetrics does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register

__all__ = [
    "MS_SSIM_BETAS",
    "SSIM_WINDOW",
    "DataRange",
    "check_ms_ssim_config",
    "check_padding",
    "ms_ssim",
    "ms_ssim_min_size",
    "ms_ssim_per_image",
    "ms_ssim_what",
    "psnr",
    "psnr_per_image",
    "resolve_data_range",
    "ssim",
    "ssim_per_image",
    "validate_images",
]

DataRange = float | tuple[float, float]

SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_K1 = 0.01
_K2 = 0.03
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_DIMS = "batch, height, width, channels"


def _static_range(data_range: DataRange | None) -> tuple[float, float] | None:
    # A hashable normal form, so that the setting can be a static argument of the jitted cores.
    return None if data_range is None else resolve_data_range(data_range)


def resolve_data_range(data_range: DataRange) -> tuple[float, float]:
    """The declared ``(low, high)`` interval of a ``data_range`` argument.

    Raises:
        ValueError: If ``data_range`` is neither a positive number nor a ``(low, high)`` pair
            with ``low < high``.
    """
    if isinstance(data_range, Sequence) and len(data_range) == 2:
        low, high = data_range
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)) and (
            low < high
        ):
            return float(low), float(high)
    elif (
        isinstance(data_range, (int, float))
        and not isinstance(data_range, bool)
        and math.isfinite(data_range)
        and data_range > 0
    ):
        return 0.0, float(data_range)
    raise ValueError(
        "expected `data_range` to be a positive number or a (low, high) pair with low < high, "
        f"got {data_range!r}"
    )


def validate_images(
    predictions: jax.Array,
    targets: jax.Array,
    data_range: DataRange | None,
    *,
    min_size: int = 1,
    what: str = "",
) -> None:
    """Check a pair of image batches (static checks always, value checks eagerly).

    Args:
        predictions: Images, shape ``(batch, height, width, channels)``.
        targets: Images of the same shape and dtype.
        data_range: The declared range (see the module docstring); ``None`` means PSNR's inferred
            range, which needs ``targets`` in ``[-1, 1]``.
        min_size: The least height and width the metric needs.
        what: Why ``min_size`` is needed, for the message.

    Raises:
        ValueError: Wrong rank, different shapes, empty batch, images smaller than ``min_size``,
            NaN/Inf, values outside the declared range, or a malformed ``data_range``.
        TypeError: Non-floating or different dtypes.
    """
    for x, name in ((predictions, "predictions"), (targets, "targets")):
        checks.check_rank(x, 4, name, _DIMS)
    checks.check_same_shape(predictions, targets, "predictions", "targets")
    for x, name in ((predictions, "predictions"), (targets, "targets")):
        checks.check_floating(x, name)
    checks.check_same_dtype(predictions, targets, "predictions", "targets")
    checks.check_nonempty(predictions, "predictions")
    _, height, width, _ = predictions.shape
    if height < min_size or width < min_size:
        raise ValueError(
            f"expected `predictions` to have height and width at least {min_size}{what}, "
            f"got shape {tuple(predictions.shape)}"
        )
    for x, name in ((predictions, "predictions"), (targets, "targets")):
        checks.check_finite(x, name)
    if data_range is None:
        checks.check_range(
            targets,
            -1.0,
            1.0,
            "targets",
            hint="data_range=None infers 1 for images in [0, 1] and 2 for images in [-1, 1]; "
            "pass data_range for other images",
        )
        return
    low, high = resolve_data_range(data_range)
    for x, name in ((predictions, "predictions"), (targets, "targets")):
        checks.check_range(x, low, high, name, hint=f"data_range={data_range!r}")


def _check_reduction(reduction: str) -> None:
    checks.check_choice(reduction, ("mean", "none"), "reduction")


def _reduce(per_image: jax.Array, reduction: str) -> jax.Array:
    return jnp.mean(per_image) if reduction == "mean" else per_image


# --------------------------------------------------------------------------------------------- PSNR


@functools.partial(jax.jit, static_argnames=("data_range",))
def _psnr_core(
    predictions: jax.Array, targets: jax.Array, data_range: DataRange | None
) -> jax.Array:
    """Jitted per-image PSNR (settings static and already in normal form)."""
    dtype = predictions.dtype
    mse = jnp.mean(jnp.square(predictions - targets), axis=(1, 2, 3))
    if data_range is None:
        # scikit-image's rule for float images: range 1 when the target is in [0, 1], 2 when it
        # is in [-1, 1]. Under jit an image outside [-1, 1] cannot raise, so it scores NaN.
        t_min = jnp.min(targets, axis=(1, 2, 3))
        t_max = jnp.max(targets, axis=(1, 2, 3))
        peak = jnp.where(t_min >= 0, 1.0, 2.0).astype(dtype)
        peak = jnp.where((t_min >= -1) & (t_max <= 1), peak, jnp.nan).astype(dtype)
    else:
        low, high = resolve_data_range(data_range)
        peak = jnp.full(mse.shape, high - low, dtype)
    return 10.0 * (2.0 * jnp.log10(peak) - jnp.log10(mse))


def psnr_per_image(
    predictions: jax.Array, targets: jax.Array, data_range: DataRange | None
) -> jax.Array:
    """Per-image PSNR in dB, shape ``(batch,)``, without validation (the shared core)."""
    return _psnr_core(predictions, targets, _static_range(data_range))


def _psnr_example():
    key_p, key_t = jax.random.split(jax.random.key(0))
    t = jax.random.uniform(key_t, (2, 8, 8, 3), jnp.float32)
    p = jnp.clip(t + 0.1 * jax.random.normal(key_p, t.shape, jnp.float32), 0.0, 1.0)
    return (lambda a, b: psnr(a, b, data_range=1.0)), (p, t)


@register(
    "psnr",
    kind="function",
    tier=0,
    domain="image",
    higher_is_better=True,
    differentiable=True,
    example=_psnr_example,
)
def psnr(
    predictions: Float[Array, "batch height width channels"],
    targets: Float[Array, "batch height width channels"],
    *,
    data_range: DataRange | None,
    reduction: Literal["mean", "none"] = "mean",
) -> jax.Array:
    """Peak signal-to-noise ratio in dB, per image, averaged over the batch.

    .. math::
        \\mathrm{PSNR} = 10 \\log_{10} \\frac{R^2}{\\mathrm{MSE}}

    with the MSE taken over each image's pixels and channels. This equals scikit-image's
    ``peak_signal_noise_ratio`` applied to each image, and torchmetrics'
    ``peak_signal_noise_ratio(..., dim=(1, 2, 3))`` (not its default ``dim=None``, which pools the
    squared error of the whole batch). Identical images give ``+inf``, as in both references.

    Args:
        predictions: Images, shape ``(batch, height, width, channels)``, floating.
        targets: Reference images, same shape and dtype.
        data_range: A positive number ``d`` (images in ``[0, d]``, ``R = d``) or a pair
            ``(low, high)`` (``R = high - low``). ``None`` infers ``R`` per image from the target
            the way scikit-image does for float images: 1 if the target is in ``[0, 1]``, 2 if it is
            in ``[-1, 1]``; other targets are an error (NaN under ``jax.jit``). Keyword required,
            so that the choice is always visible.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        The PSNR in dB, in the input dtype.

    Raises:
        ValueError: Bad shapes, empty batch, NaN/Inf, values outside ``data_range``, a malformed
            ``data_range`` or ``reduction``.
        TypeError: Non-floating or different dtypes.

    References:
        Wang and Bovik, 2009, "Mean squared error: love it or leave it?", IEEE Signal Processing
        Magazine.

    Example:
        >>> import jax.numpy as jnp
        >>> t = jnp.zeros((1, 4, 4, 1), jnp.float32)
        >>> p = t + 0.1
        >>> print(f"{psnr(p, t, data_range=1.0):.3f}")
        20.000
    """
    _check_reduction(reduction)
    validate_images(predictions, targets, data_range)
    return _reduce(psnr_per_image(predictions, targets, data_range), reduction)


# --------------------------------------------------------------------------------------------- SSIM


def _gaussian_window(dtype: jnp.dtype) -> jax.Array:
    radius = SSIM_WINDOW // 2
    x = jnp.arange(-radius, radius + 1, dtype=dtype)
    g = jnp.exp(-0.5 * jnp.square(x / _SSIM_SIGMA))
    return g / jnp.sum(g)


def _filter_valid(x: jax.Array, window: jax.Array) -> jax.Array:
    """Separable 'valid' Gaussian filtering of ``(n, h, w, c)``, each channel on its own."""
    k, c = window.shape[0], x.shape[-1]
    numbers = ("NHWC", "HWIO", "NHWC")
    for kernel in (window.reshape(k, 1, 1, 1), window.reshape(1, k, 1, 1)):
        x = jax.lax.conv_general_dilated(
            x,
            jnp.tile(kernel, (1, 1, 1, c)),
            window_strides=(1, 1),
            padding="VALID",
            dimension_numbers=numbers,
            feature_group_count=c,
            precision=jax.lax.Precision.HIGHEST,
        )
    return x


def _ssim_and_cs(
    predictions: jax.Array,
    targets: jax.Array,
    data_range: DataRange,
    padding: str,
) -> tuple[jax.Array, jax.Array]:
    """Per-image mean SSIM and mean contrast-structure term, each shape ``(batch,)``.

    With ``padding="reflect"`` the SSIM map covers the reflect-padded image while the
    contrast-structure mean covers the interior only, as in torchmetrics (MS-SSIM relies on this).
    """
    dtype = predictions.dtype
    low, high = resolve_data_range(data_range)
    c1 = (_K1 * (high - low)) ** 2
    c2 = (_K2 * (high - low)) ** 2
    pad = SSIM_WINDOW // 2
    if padding == "reflect":
        widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
        predictions = jnp.pad(predictions, widths, mode="reflect")
        targets = jnp.pad(targets, widths, mode="reflect")
    stacked = jnp.concatenate(
        [predictions, targets, predictions * predictions, targets * targets, predictions * targets]
    )
    mu_p, mu_t, e_pp, e_tt, e_pt = jnp.split(_filter_valid(stacked, _gaussian_window(dtype)), 5)
    mu_pp, mu_tt, mu_pt = mu_p * mu_p, mu_t * mu_t, mu_p * mu_t
    # Rounding can make E[x^2] - E[x]^2 slightly negative on flat regions; a variance is >= 0.
    var_p = jnp.maximum(e_pp - mu_pp, 0.0)
    var_t = jnp.maximum(e_tt - mu_tt, 0.0)
    cov = e_pt - mu_pt
    cs_map = (2.0 * cov + c2) / (var_p + var_t + c2)
    ssim_map = (2.0 * mu_pt + c1) / (mu_pp + mu_tt + c1) * cs_map
    if padding == "reflect":
        cs_map = cs_map[:, pad:-pad, pad:-pad]
    return jnp.mean(ssim_map, axis=(1, 2, 3)), jnp.mean(cs_map, axis=(1, 2, 3))


def check_padding(padding: str) -> None:
    """Raise ``ValueError`` unless ``padding`` is ``"valid"`` or ``"reflect"``."""
    checks.check_choice(padding, ("valid", "reflect"), "padding")


@functools.partial(jax.jit, static_argnames=("data_range", "padding"))
def _ssim_core(
    predictions: jax.Array, targets: jax.Array, data_range: DataRange, padding: str = "valid"
) -> jax.Array:
    """Jitted per-image SSIM (settings static and already in normal form)."""
    return _ssim_and_cs(predictions, targets, data_range, padding)[0]


def ssim_per_image(
    predictions: jax.Array, targets: jax.Array, data_range: DataRange, padding: str = "valid"
) -> jax.Array:
    """Per-image SSIM, shape ``(batch,)``, without validation (the shared core)."""
    return _ssim_core(predictions, targets, _static_range(data_range), padding)


def _ssim_example():
    key_p, key_t = jax.random.split(jax.random.key(1))
    t = jax.random.uniform(key_t, (2, 16, 16, 3), jnp.float32)
    p = jnp.clip(t + 0.1 * jax.random.normal(key_p, t.shape, jnp.float32), 0.0, 1.0)
    return (lambda a, b: ssim(a, b, data_range=1.0)), (p, t)


@register(
    "ssim",
    kind="function",
    tier=0,
    domain="image",
    higher_is_better=True,
    differentiable=True,
    example=_ssim_example,
)
def ssim(
    predictions: Float[Array, "batch height width channels"],
    targets: Float[Array, "batch height width channels"],
    *,
    data_range: DataRange,
    padding: Literal["valid", "reflect"] = "valid",
    reduction: Literal["mean", "none"] = "mean",
) -> jax.Array:
    """Structural similarity (SSIM), per image, averaged over the batch.

    .. math::
        \\mathrm{SSIM}(x, y) = \\frac{(2 \\mu_x \\mu_y + C_1)(2 \\sigma_{xy} + C_2)}
        {(\\mu_x^2 + \\mu_y^2 + C_1)(\\sigma_x^2 + \\sigma_y^2 + C_2)},
        \\quad C_i = (K_i R)^2

    with local statistics under an 11×11 Gaussian window (σ = 1.5), computed per channel and
    averaged over window positions and channels. Differentiable: ``1 - ssim`` is a common
    training loss.

    Args:
        predictions: Images, shape ``(batch, height, width, channels)``, floating, height and
            width at least 11.
        targets: Reference images, same shape and dtype.
        data_range: A positive number ``d`` (images in ``[0, d]``) or ``(low, high)``.
        padding: ``"valid"`` (Wang et al.; equal to scikit-image) or ``"reflect"`` (equal to
            torchmetrics' ``structural_similarity_index_measure``).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        The SSIM, at most 1, in the input dtype.

    Raises:
        ValueError: Bad shapes, empty batch, images smaller than the window, NaN/Inf, values
            outside ``data_range``, a malformed ``data_range``, ``padding`` or ``reduction``.
        TypeError: Non-floating or different dtypes.

    References:
        Wang et al., 2004, "Image quality assessment: from error visibility to structural
        similarity", IEEE Transactions on Image Processing 13(4).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.linspace(0.0, 1.0, 16 * 16).reshape(1, 16, 16, 1)
        >>> print(f"{ssim(x, x, data_range=1.0):.3f}")
        1.000
    """
    check_padding(padding)
    _check_reduction(reduction)
    validate_images(
        predictions, targets, data_range, min_size=SSIM_WINDOW, what=" (the SSIM window)"
    )
    return _reduce(ssim_per_image(predictions, targets, data_range, padding), reduction)


# ------------------------------------------------------------------------------------------ MS-SSIM


def ms_ssim_min_size(num_scales: int) -> int:
    """Least height and width for MS-SSIM: the coarsest scale must still hold the window."""
    return SSIM_WINDOW * 2 ** (num_scales - 1)


def ms_ssim_what(num_scales: int) -> str:
    """Why MS-SSIM needs its minimum size, for the error message."""
    return f" (the SSIM window at the coarsest of {num_scales} scales)"


def check_ms_ssim_config(
    data_range: DataRange, betas: tuple[float, ...], normalize: str | None, padding: str
) -> None:
    """Check MS-SSIM's static settings.

    Raises:
        ValueError: A malformed ``data_range``, ``betas``, ``normalize`` or ``padding``.
    """
    resolve_data_range(data_range)
    if (
        not isinstance(betas, tuple)
        or not betas
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 for b in betas)
    ):
        raise ValueError(
            f"expected `betas` to be a non-empty tuple of positive numbers, got {betas!r}"
        )
    checks.check_choice(normalize, ("relu", "simple", None), "normalize")
    check_padding(padding)


def _avg_pool2(x: jax.Array) -> jax.Array:
    # 2×2 average pooling with stride 2; an odd last row/column is dropped (torch's avg_pool2d).
    n, h, w, c = x.shape
    x = x[:, : 2 * (h // 2), : 2 * (w // 2)]
    return jnp.mean(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


@functools.partial(jax.jit, static_argnames=("data_range", "betas", "normalize", "padding"))
def _ms_ssim_core(
    predictions: jax.Array,
    targets: jax.Array,
    data_range: DataRange,
    betas: tuple[float, ...] = MS_SSIM_BETAS,
    normalize: str | None = "relu",
    padding: str = "valid",
) -> jax.Array:
    """Jitted per-image MS-SSIM (settings static and already in normal form)."""
    dtype = predictions.dtype
    terms = []
    for scale in range(len(betas)):
        sim, cs = _ssim_and_cs(predictions, targets, data_range, padding)
        if normalize == "relu":
            sim, cs = jax.nn.relu(sim), jax.nn.relu(cs)
        terms.append(sim if scale == len(betas) - 1 else cs)
        if scale < len(betas) - 1:
            predictions, targets = _avg_pool2(predictions), _avg_pool2(targets)
    stacked = jnp.stack(terms)
    if normalize == "simple":
        stacked = (stacked + 1.0) / 2.0
    powers = jnp.asarray(betas, dtype)[:, None]
    return jnp.prod(stacked**powers, axis=0)


def ms_ssim_per_image(
    predictions: jax.Array,
    targets: jax.Array,
    data_range: DataRange,
    betas: tuple[float, ...] = MS_SSIM_BETAS,
    normalize: str | None = "relu",
    padding: str = "valid",
) -> jax.Array:
    """Per-image MS-SSIM, shape ``(batch,)``, without validation (the shared core)."""
    return _ms_ssim_core(
        predictions, targets, _static_range(data_range), tuple(betas), normalize, padding
    )


def _ms_ssim_example():
    key_p, key_t = jax.random.split(jax.random.key(2))
    size = ms_ssim_min_size(len(MS_SSIM_BETAS))
    t = jax.random.uniform(key_t, (1, size, size, 1), jnp.float32)
    p = jnp.clip(t + 0.05 * jax.random.normal(key_p, t.shape, jnp.float32), 0.0, 1.0)
    return (lambda a, b: ms_ssim(a, b, data_range=1.0)), (p, t)


@register(
    "ms_ssim",
    kind="function",
    tier=0,
    domain="image",
    higher_is_better=True,
    differentiable=True,
    example=_ms_ssim_example,
)
def ms_ssim(
    predictions: Float[Array, "batch height width channels"],
    targets: Float[Array, "batch height width channels"],
    *,
    data_range: DataRange,
    betas: tuple[float, ...] = MS_SSIM_BETAS,
    normalize: Literal["relu", "simple"] | None = "relu",
    padding: Literal["valid", "reflect"] = "valid",
    reduction: Literal["mean", "none"] = "mean",
) -> jax.Array:
    """Multi-scale SSIM, per image, averaged over the batch.

    .. math::
        \\mathrm{MS\\text{-}SSIM} = \\mathrm{SSIM}_M^{\\beta_M}
        \\prod_{j=1}^{M-1} \\mathrm{cs}_j^{\\beta_j}

    where scale ``j + 1`` is scale ``j`` average-pooled by 2 (an odd last row/column is dropped),
    ``cs_j`` is the mean contrast-structure term at scale ``j`` and the last scale contributes its
    full SSIM. The conventions are torchmetrics' ``multiscale_structural_similarity_index_measure``:
    with ``normalize="relu"`` (default) each term is clamped at 0 before the power, so that a
    negative ``cs`` cannot give NaN; ``"simple"`` maps each term to ``(t + 1) / 2``; ``None``
    keeps the raw terms (a negative term then gives NaN). With ``padding="reflect"`` the result
    equals torchmetrics' exactly (its ``cs`` terms use the interior of the reflect-padded maps, its
    last-scale SSIM the full map); ``"valid"`` (default) uses the interior everywhere, as Wang et
    al.'s reference code.

    Args:
        predictions: Images, shape ``(batch, height, width, channels)``, floating, height and
            width at least ``11 * 2 ** (len(betas) - 1)`` (176 for 5 scales), so that the
            coarsest scale still holds the window.
        targets: Reference images, same shape and dtype.
        data_range: A positive number ``d`` (images in ``[0, d]``) or ``(low, high)``; the same
            constants serve every scale.
        betas: Exponents per scale, finest first; the default is Wang et al.'s
            ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``.
        normalize: ``"relu"``, ``"simple"`` or ``None`` (see above).
        padding: ``"valid"`` or ``"reflect"`` (see above).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (shape ``(batch,)``).

    Returns:
        The MS-SSIM in the input dtype.

    Raises:
        ValueError: Bad shapes, empty batch, images too small for the scales, NaN/Inf, values
            outside ``data_range``, or a malformed ``data_range``, ``betas``, ``normalize``,
            ``padding`` or ``reduction``.
        TypeError: Non-floating or different dtypes.

    References:
        Wang, Simoncelli and Bovik, 2003, "Multiscale structural similarity for image quality
        assessment", Asilomar Conference on Signals, Systems and Computers.
    """
    check_ms_ssim_config(data_range, betas, normalize, padding)
    _check_reduction(reduction)
    validate_images(
        predictions,
        targets,
        data_range,
        min_size=ms_ssim_min_size(len(betas)),
        what=ms_ssim_what(len(betas)),
    )
    per_image = ms_ssim_per_image(predictions, targets, data_range, betas, normalize, padding)
    return _reduce(per_image, reduction)
