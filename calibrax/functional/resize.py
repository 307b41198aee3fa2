"""Image resizing that reproduces the resize of each reference FID tool.

FID depends on how images reach the network's input size, so numbers are only comparable between
tools that resize the same way. Every named mode is a separable linear map: its (output, input)
weights are computed on the host with numpy, once per (input length, output length), following the
reference's own arithmetic, and applied as two float32 contractions (one per spatial axis), so
:func:`resize_images` jits and runs on any device. :func:`resize_images_numpy` applies the same
weights on the host, for loaders that resize each image from its own size without compiling once
per size.

Modes (:data:`RESIZE_MODES`):

- ``"pytorch-fid"``: bilinear with half-pixel centres and no antialiasing, as pytorch-fid's
  ``F.interpolate(x, size, mode="bilinear", align_corners=False)``: source ``(dst + 0.5) * in/out
  - 0.5`` clamped at 0, two taps, the upper one clamped at the last pixel, with torch's float32
  arithmetic. ``jax.image.resize(method="bilinear", antialias=False)`` is the same kernel with
  source positions rounded differently (~1e-6 apart).
- ``"tf1"``: TensorFlow 1.x ``resize_bilinear(align_corners=False)``, as torch-fidelity's
  ``interpolate_bilinear_2d_like_tensorflow1x`` (used by torch-fidelity and torchmetrics in front
  of InceptionV3): source ``dst * in/out`` with no half-pixel offset, two taps.
- ``"clean"``: clean-fid's "clean" resize: Pillow's antialiased bicubic filter (``a = -0.5``, its
  support widened by the downscale factor, weights normalised to sum to 1) applied to each channel
  as a float32 (mode ``"F"``) image, never quantised, then clipped to the input range ([0, 1] here,
  clean-fid's [0, 255] images divided by 255).
- ``"antialias"``: Pillow's antialiased bilinear filter (the triangle, its support widened by the
  downscale factor). This is what the EfficientNet-Lite reference's preprocessing does
  (torchvision's ``Resize`` on a PIL image), and a downscale from a large photo keeps its detail
  instead of aliasing as a two-tap bilinear does; its weights are non-negative, so values stay in
  the input range (up to rounding) without clipping. When upscaling it is the ``"pytorch-fid"`` bilinear (up to
  torch's float32 rounding of the source positions).

The ``jax.image.resize`` method names (:data:`JAX_RESIZE_METHODS`) are accepted too, applied with
``antialias=False`` (the resize calibrax used before the named modes).

Accuracy: against the references' own code on real photos the modes agree to float32 rounding
(at most ~1e-4 in [0, 255] units); the weights agree with theirs to float32 rounding, and what is
left is the order of the float32 sums.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks

__all__ = [
    "JAX_RESIZE_METHODS",
    "RESIZE_MODES",
    "resize_images",
    "resize_images_numpy",
    "resize_matrix",
]

#: The named modes, each reproducing one reference tool's resize.
RESIZE_MODES = ("pytorch-fid", "tf1", "clean", "antialias")
#: ``jax.image.resize`` methods, also accepted (applied with ``antialias=False``).
JAX_RESIZE_METHODS = ("nearest", "bilinear", "linear", "bicubic", "cubic", "lanczos3", "lanczos5")
_ALL_MODES = RESIZE_MODES + JAX_RESIZE_METHODS


# A mode's weights along one axis are "taps": output pixel o is sum_k w[o, k] * x[idx[o, k]], with
# a few consecutive input pixels per output. The dense (out, in) matrix is built from them for the
# JAX contraction; the host path gathers the taps directly (a large downscale is mostly zeros).
Taps = tuple[np.ndarray, np.ndarray]


def _torch_bilinear(in_size: int, out_size: int) -> Taps:
    # torch's CPU kernel works in float32 for float32 images and computes the source position
    # scale * (dst + 0.5) - 0.5 as one fused multiply-add: the float32 product is exact in float64,
    # so doing it there and rounding once to float32 gives torch's positions and lambdas bit for bit.
    f32 = np.float32
    scale = np.float64(f32(in_size) / f32(out_size))
    centre = (np.arange(out_size, dtype=f32) + f32(0.5)).astype(np.float64)
    src = np.maximum((scale * centre - 0.5).astype(f32), f32(0))
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - lo.astype(f32), f32(0), f32(1))
    hi = np.minimum(lo + 1, in_size - 1)
    return np.stack([lo, hi], 1), np.stack([f32(1) - lam, lam], 1).astype(np.float64)


def _tf1_bilinear(in_size: int, out_size: int) -> Taps:
    # torch-fidelity turns the Python-float scale into a float32 tensor and multiplies a float32
    # grid by it; the source positions are those float32 products, truncated for the lower tap.
    f32 = np.float32
    src = np.arange(out_size, dtype=f32) * f32(in_size / out_size)
    lo = src.astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo.astype(f32)
    return np.stack([lo, hi], 1), np.stack([f32(1) - frac, frac], 1).astype(np.float64)


def _pil_bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _pil_triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.abs(x), 0.0)


def _pil_filter(
    in_size: int, out_size: int, kernel: Callable[[np.ndarray], np.ndarray], support: float
) -> Taps:
    # Pillow's precompute_coeffs (libImaging/Resample.c), in double precision as there: pixel
    # centres at i + 0.5, the kernel stretched by the downscale factor, a window of input pixels
    # rounded from centre +- support and cut at the image edges, weights normalised to sum to 1.
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    center = (np.arange(out_size) + 0.5) * scale
    # C's (int) cast truncates towards zero; xmin is clamped at 0 right after, so trunc is safe.
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    idx = xmin[:, None] + np.arange(int(np.ceil(support)) * 2 + 1)[None, :]
    valid = idx < xmax[:, None]
    w = np.where(valid, kernel((idx - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=w, where=total != 0.0)
    # Taps past the window carry weight 0; point them at a valid pixel for the gather.
    return np.where(valid, idx, xmin[:, None]), w


@functools.lru_cache(maxsize=1024)
def _cached_taps(in_size: int, out_size: int, mode: str) -> Taps:
    if mode == "pytorch-fid":
        idx, w = _torch_bilinear(in_size, out_size)
    elif mode == "tf1":
        idx, w = _tf1_bilinear(in_size, out_size)
    elif mode == "clean":
        idx, w = _pil_filter(in_size, out_size, _pil_bicubic, 2.0)
    else:
        idx, w = _pil_filter(in_size, out_size, _pil_triangle, 1.0)
    idx.setflags(write=False)
    w.setflags(write=False)
    return idx, w


# Dense matrices can be large (out x in): keep fewer of them.
@functools.lru_cache(maxsize=32)
def _cached_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
    idx, w = _cached_taps(in_size, out_size, mode)
    weights = np.zeros((out_size, in_size), np.float64)
    # Repeated taps (both bilinear taps on the border pixel) add up.
    np.add.at(weights, (np.broadcast_to(np.arange(out_size)[:, None], idx.shape), idx), w)
    weights.setflags(write=False)
    return weights


def _check_length(value: Any, name: str) -> int:
    checks.check_positive_int(value, name)
    return int(value)


def resize_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """The (out_size, in_size) float64 weights of one axis of a named resize mode.

    Row ``o`` holds the weight of every input pixel in output pixel ``o``; resizing an image is
    this matrix applied along its height, and the matrix for the width along its width. Results
    are cached per arguments and read-only.

    Args:
        in_size: Input length along the axis (pixels).
        out_size: Output length along the axis (pixels).
        mode: One of :data:`RESIZE_MODES`.

    Returns:
        A read-only float64 array of shape ``(out_size, in_size)``.

    Raises:
        ValueError: If a length is not a positive integer or ``mode`` is not a named mode.
    """
    in_size = _check_length(in_size, "in_size")
    out_size = _check_length(out_size, "out_size")
    checks.check_choice(mode, RESIZE_MODES, "mode")
    return _cached_matrix(in_size, out_size, mode)


def _check_size(size: Any) -> tuple[int, int]:
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size
        )
    )
    if not ok:
        raise ValueError(
            f"expected `size` to be (height, width), two positive integers, got {size!r}"
        )
    return int(size[0]), int(size[1])


def _check_images(images: Any) -> None:
    checks.check_rank(images, 4, "images", "batch, height, width, channels")
    checks.check_floating(images, "images")
    shape = tuple(np.shape(images))
    if min(shape[1], shape[2]) < 1:
        raise ValueError(
            f"expected `images` to have height and width at least 1, got shape {shape}"
        )


def resize_images(
    images: Float[Array, "batch height width channels"],
    size: tuple[int, int],
    mode: str = "pytorch-fid",
) -> Float[Array, "batch out_height out_width channels"]:
    """Resize a batch of NHWC float images as the reference tool named by ``mode`` does.

    Jit-able: the weights depend only on the static shapes and are built on the host at trace
    time. The contractions run at full float32 precision (``Precision.HIGHEST``, so no TF32 on
    GPUs); float64 images (with x64 on) are resized in float64, other floats in float32, and the
    result has the input's dtype.

    Args:
        images: Float images, shape ``(batch, height, width, channels)``; [0, 1] for ``"clean"``,
            which clips to that range as clean-fid clips to its [0, 255].
        size: ``(height, width)`` of the output.
        mode: One of :data:`RESIZE_MODES` (see the module docstring) or a ``jax.image.resize``
            method from :data:`JAX_RESIZE_METHODS` (applied with ``antialias=False``).

    Returns:
        The resized images, shape ``(batch, size[0], size[1], channels)``.

    Raises:
        ValueError: If ``images`` is not 4-D with a non-empty height and width, ``size`` is not
            two positive integers, or ``mode`` is unknown.
        TypeError: If ``images`` is not floating point.

    Example:
        >>> import jax.numpy as jnp
        >>> from calibrax.functional import resize_images
        >>> x = jnp.linspace(0.0, 1.0, 16, dtype=jnp.float32).reshape(1, 4, 4, 1)
        >>> resize_images(x, (2, 2), "tf1")[0, :, :, 0]
        Array([[0.        , 0.13333334],
               [0.53333336, 0.6666667 ]], dtype=float32)
    """
    _check_images(images)
    out_h, out_w = _check_size(size)
    checks.check_choice(mode, _ALL_MODES, "mode")
    x = jnp.asarray(images)
    batch, in_h, in_w, channels = x.shape
    if mode in JAX_RESIZE_METHODS:
        return jax.image.resize(x, (batch, out_h, out_w, channels), method=mode, antialias=False)
    work = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    wh = jnp.asarray(_cached_matrix(in_h, out_h, mode), work)
    ww = jnp.asarray(_cached_matrix(in_w, out_w, mode), work)
    hp = jax.lax.Precision.HIGHEST
    # Width first, as Pillow's horizontal pass; the order only changes float rounding.
    y = jnp.einsum("pw,nhwc->nhpc", ww, x.astype(work), precision=hp)
    y = jnp.einsum("oh,nhpc->nopc", wh, y, precision=hp)
    if mode == "clean":
        y = jnp.clip(y, 0.0, 1.0)
    return y.astype(x.dtype)


def _host_pass(x: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    front = np.ascontiguousarray(np.moveaxis(x, axis, 0))
    w = w.astype(np.float32).reshape(*w.shape, *([1] * (front.ndim - 1)))
    out = front[idx[:, 0]] * w[:, 0]
    for k in range(1, idx.shape[1]):
        out += front[idx[:, k]] * w[:, k]
    return np.moveaxis(out, 0, axis)


def resize_images_numpy(images: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """:func:`resize_images` on the host with numpy, for the named modes.

    For loaders that resize each image from its own size (as pytorch-fid and clean-fid do on
    folders of mixed sizes) without compiling once per input size. Same weights, float32 sums.

    Args:
        images: Float images, shape ``(height, width, channels)`` or ``(batch, height, width,
            channels)``; [0, 1] for ``"clean"``.
        size: ``(height, width)`` of the output.
        mode: One of :data:`RESIZE_MODES`.

    Returns:
        float32 images of shape ``(..., size[0], size[1], channels)``.

    Raises:
        ValueError: On a bad rank, ``size`` or ``mode``.
        TypeError: If ``images`` is not floating point.
    """
    x = np.asarray(images)
    checks.check_ndim_in(x, (3, 4), "images")
    _check_images(x[None] if x.ndim == 3 else x)
    out_h, out_w = _check_size(size)
    checks.check_choice(mode, RESIZE_MODES, "mode")
    in_h, in_w = x.shape[-3], x.shape[-2]
    # Width first, as Pillow's horizontal pass. Each pass moves its axis to the front so that
    # gathering a tap copies whole contiguous slices.
    out = _host_pass(x.astype(np.float32, copy=False), -2, *_cached_taps(in_w, out_w, mode))
    out = _host_pass(out, -3, *_cached_taps(in_h, out_h, mode))
    if mode == "clean":
        np.clip(out, 0.0, 1.0, out=out)
    return np.ascontiguousarray(out)
