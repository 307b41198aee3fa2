"""Frozen vision-transformer pieces shared by the DINOv2 and CLIP backbones.

Like :mod:`calibrax.backbones._layers`, weights are :class:`~calibrax.core.FrozenWeight` in torch
layout under torch's attribute names, read through :func:`~calibrax.backbones._layers.frozen`
(stop-gradient, cast to the input's dtype). Tokens are ``(batch, tokens, dim)``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calibrax.backbones._layers import _constant
from calibrax.backbones._layers import _init
from calibrax.backbones._layers import _per_channel
from calibrax.backbones._layers import frozen
from calibrax.core.state import FrozenWeight

__all__ = [
    "LayerNorm",
    "attention",
    "bicubic_matrix",
    "channels_last",
    "grid_side",
    "parameter",
    "quick_gelu",
    "resample_grid",
]


def parameter(shape: tuple[int, ...], rngs: nnx.Rngs | None) -> FrozenWeight:
    """A raw tensor parameter (``nn.Parameter``): zeros, or uniform in ``[-1, 1]`` with ``rngs``."""
    if rngs is None:
        return _constant(shape, 0.0)
    return _init(shape, 1, rngs)


class LayerNorm(nnx.Module):
    """A frozen ``torch.nn.LayerNorm`` over the last axis (biased variance, ``eps`` inside).

    Args:
        dim: Normalised size.
        eps: Added to the variance (DINOv2: ``1e-6``; CLIP: torch's default ``1e-5``).
        rngs: Random affine weights for tests; ``None`` gives torch's ones and zeros.
    """

    def __init__(self, dim: int, *, eps: float, rngs: nnx.Rngs | None = None):
        self.eps = eps
        if rngs is None:
            self.weight = _constant((dim,), 1.0)
            self.bias = _constant((dim,), 0.0)
        else:
            self.weight = _init((dim,), 1, rngs)
            self.bias = _init((dim,), 1, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        var = jnp.mean(centred * centred, axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(var + jnp.asarray(self.eps, x.dtype))
        weight = _per_channel(frozen(self.weight, x.dtype), x.ndim)
        return y * weight + _per_channel(frozen(self.bias, x.dtype), x.ndim)


def channels_last(v: jax.Array, ndim: int) -> jax.Array:
    """A ``(dim,)`` vector shaped to broadcast over the last axis of an ``ndim`` array."""
    return _per_channel(v, ndim)


def attention(qkv: jax.Array, num_heads: int) -> jax.Array:
    """Softmax attention of packed ``(batch, tokens, 3 * dim)`` queries, keys and values.

    The packing is torch's: ``[q | k | v]`` along the last axis, each split into ``num_heads``
    heads of ``dim // num_heads`` (``nn.MultiheadAttention``'s ``in_proj`` and DINOv2's ``qkv``).
    Queries are scaled by ``head_dim ** -0.5``. Returns ``(batch, tokens, dim)``, heads concatenated.
    """
    batch, tokens, three_dim = qkv.shape
    head_dim = three_dim // (3 * num_heads)
    qkv = qkv.reshape(batch, tokens, 3, num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q = q * jnp.asarray(head_dim**-0.5, qkv.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return out.reshape(batch, tokens, num_heads * head_dim)


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's ``QuickGELU``: ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(jnp.asarray(1.702, x.dtype) * x)


def _cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel with torch's ``A = -0.75``, at distances ``|t| < 2``."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int, scale_factor: float | None) -> np.ndarray:
    """The ``(out_size, in_size)`` weights of torch's ``interpolate(mode="bicubic")`` on one axis.

    ``align_corners=False``, no antialiasing: output ``o`` samples the input at
    ``(o + 0.5) / s - 0.5`` with ``s = scale_factor`` when one is given (torch then uses the
    factor, not ``out / in``, for the coordinates) and ``s = out / in`` otherwise; four taps at
    ``floor - 1 .. floor + 2`` with the cubic kernel ``A = -0.75``, indices clamped to the edge.

    Args:
        in_size: Input length.
        out_size: Output length.
        scale_factor: The factor passed to torch, or ``None`` (``size=`` was passed).

    Returns:
        A read-only float64 array.
    """
    scale = 1.0 / scale_factor if scale_factor is not None else in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    base = np.floor(src)
    frac = src - base
    out = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    for tap in (-1, 0, 1, 2):
        idx = np.clip(base.astype(np.int64) + tap, 0, in_size - 1)
        np.add.at(out, (rows, idx), _cubic(frac - tap))
    out.setflags(write=False)
    return out


def resample_grid(
    grid: jax.Array, out_hw: tuple[int, int], scale_factors: tuple[float | None, float | None]
) -> jax.Array:
    """Bicubic resampling of a ``(h, w, dim)`` grid of embeddings to ``out_hw`` (float32 math)."""
    rows = bicubic_matrix(grid.shape[0], out_hw[0], scale_factors[0])
    cols = bicubic_matrix(grid.shape[1], out_hw[1], scale_factors[1])
    x = grid.astype(jnp.promote_types(grid.dtype, jnp.float32))
    x = jnp.einsum("oh,hwd->owd", jnp.asarray(rows, x.dtype), x)
    return jnp.einsum("pw,owd->opd", jnp.asarray(cols, x.dtype), x)


def grid_side(num_positions: int, what: str) -> int:
    """The side of a square grid of ``num_positions`` patches; refuses non-squares."""
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise ValueError(
            f"expected {what} to hold 1 + a square number of positions, got {num_positions + 1}"
        )
    return side
