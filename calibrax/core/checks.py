"""Shared input checkers used by every public entry point.

Every message states the rule, then the values: "expected `images` to have 4 dims (batch, height,
width, channels), got shape (32, 32, 3)". Arguments are named in backticks.

Shape and dtype checks are static and always run, also under ``jax.jit``. Value checks (NaN/Inf,
ranges, label bounds) need concrete values: they run eagerly and are skipped for tracers, because a
jitted function cannot raise on data. Entry points that must reject bad values inside jit document
their policy (``checkify`` or a NaN-propagating result) in their docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_accumulated",
    "check_choice",
    "check_dim",
    "check_finite",
    "check_floating",
    "check_images",
    "check_integer",
    "check_k",
    "check_labels_in_range",
    "check_mask",
    "check_min_samples",
    "check_ndim_in",
    "check_nonempty",
    "check_positive_int",
    "check_probabilities",
    "check_range",
    "check_rank",
    "check_same_dtype",
    "check_same_length",
    "check_same_shape",
    "check_sample_weight",
    "is_concrete",
]


def is_concrete(x: Any) -> bool:
    """Whether ``x`` holds concrete values (not a tracer inside a jax transformation)."""
    return not isinstance(x, jax.core.Tracer)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _dtype(x: Any) -> np.dtype:
    # Lists and Python scalars have no dtype attribute: numpy infers one (jnp.result_type rejects
    # lists).
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def check_rank(x: Any, ndim: int, name: str, dims: str | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` has exactly ``ndim`` dimensions.

    Args:
        x: The array.
        ndim: Required number of dimensions.
        name: Argument name used in the message.
        dims: Optional description of the axes, e.g. ``"batch, height, width, channels"``.

    Raises:
        ValueError: ``expected `name` to have N dims (dims), got shape S``.
    """
    shape = _shape(x)
    if len(shape) != ndim:
        desc = f" ({dims})" if dims else ""
        raise ValueError(f"expected `{name}` to have {ndim} dims{desc}, got shape {shape}")


def check_ndim_in(x: Any, ndims: Sequence[int], name: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is one of ``ndims``."""
    shape = _shape(x)
    if len(shape) not in ndims:
        allowed = " or ".join(str(n) for n in ndims)
        raise ValueError(f"expected `{name}` to have {allowed} dims, got shape {shape}")


def check_same_shape(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    sa, sb = _shape(a), _shape(b)
    if sa != sb:
        raise ValueError(
            f"expected `{name_a}` and `{name_b}` to have the same shape, got {sa} and {sb}"
        )


def check_same_length(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same leading dimension."""
    la, lb = _shape(a)[:1], _shape(b)[:1]
    if la != lb:
        raise ValueError(
            f"expected `{name_a}` and `{name_b}` to have the same length, "
            f"got {_shape(a)[0] if la else 'a scalar'} and {_shape(b)[0] if lb else 'a scalar'}"
        )


def check_dim(x: Any, axis: int, size: int, name: str, what: str = "size") -> None:
    """Raise ``ValueError`` unless ``x.shape[axis] == size``."""
    shape = _shape(x)
    if not -len(shape) <= axis < len(shape) or shape[axis] != size:
        raise ValueError(
            f"expected `{name}` to have {what} {size} on axis {axis}, got shape {shape}"
        )


def check_floating(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating-point dtype."""
    dtype = _dtype(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"expected `{name}` to have a floating dtype, got {dtype}")


def check_integer(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has an integer (or bool) dtype."""
    dtype = _dtype(x)
    if not (jnp.issubdtype(dtype, jnp.integer) or dtype == np.bool_):
        raise TypeError(f"expected `{name}` to have an integer dtype, got {dtype}")


def check_finite(x: Any, name: str) -> None:
    """Raise ``ValueError`` if concrete ``x`` holds NaN or Inf (skipped under tracing)."""
    if not is_concrete(x) or not jnp.issubdtype(_dtype(x), jnp.inexact):
        return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        raise ValueError(f"expected `{name}` to be finite, got {n_nan} NaN and {n_inf} Inf values")


def check_range(x: Any, low: float, high: float, name: str, *, hint: str | None = None) -> None:
    """Raise ``ValueError`` if concrete ``x`` has values outside ``[low, high]``."""
    if not is_concrete(x):
        return
    arr = np.asarray(x)
    if arr.size == 0:
        return
    lo, hi = arr.min(), arr.max()
    if lo < low or hi > high:
        extra = f" ({hint})" if hint else ""
        raise ValueError(
            f"expected `{name}` to be in [{low:g}, {high:g}]{extra}, "
            f"got values in [{float(lo):g}, {float(hi):g}]"
        )


def check_probabilities(x: Any, name: str, *, axis: int | None = -1, atol: float = 1e-4) -> None:
    """Raise ``ValueError`` unless ``x`` is in ``[0, 1]`` and, with ``axis``, sums to 1 there."""
    check_floating(x, name)
    check_finite(x, name)
    check_range(x, 0.0, 1.0, name)
    if axis is None or not is_concrete(x):
        return
    sums = np.asarray(x, dtype=np.float64).sum(axis=axis)
    if sums.size and np.max(np.abs(sums - 1.0)) > atol:
        worst = float(sums.flat[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(
            f"expected `{name}` to sum to 1 along axis {axis} (atol {atol:g}), "
            f"got a row summing to {worst:.6g}"
        )


def check_nonempty(x: Any, name: str) -> None:
    """Raise ``ValueError`` if ``x`` has no elements."""
    shape = _shape(x)
    if int(np.prod(shape)) == 0:
        raise ValueError(f"expected `{name}` to be non-empty, got shape {shape}")


def check_min_samples(x: Any, minimum: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` has at least ``minimum`` rows."""
    shape = _shape(x)
    n = shape[0] if shape else 0
    if n < minimum:
        raise ValueError(f"expected `{name}` to have at least {minimum} samples, got {n}")


def check_labels_in_range(labels: Any, num_classes: int, name: str = "labels") -> None:
    """Raise ``ValueError`` if concrete integer ``labels`` fall outside ``[0, num_classes)``."""
    if not is_concrete(labels):
        return
    arr = np.asarray(labels)
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"expected `{name}` to be in [0, {num_classes - 1}] (num_classes={num_classes}), "
            f"got values in [{lo}, {hi}]"
        )


def check_positive_int(value: Any, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a Python int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"expected `{name}` to be a positive integer, got {value!r}")


def check_choice(value: Any, choices: Sequence[Any], name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"expected `{name}` to be one of {listed}, got {value!r}")


def check_k(k: int, upper: int, name: str = "k", what: str = "the number of classes") -> None:
    """Raise ``ValueError`` unless ``1 <= k <= upper``."""
    check_positive_int(k, name)
    if k > upper:
        raise ValueError(f"expected `{name}` to be at most {what} ({upper}), got {k}")


def check_same_dtype(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raise ``TypeError`` unless ``a`` and ``b`` have the same dtype."""
    da, db = _dtype(a), _dtype(b)
    if da != db:
        raise TypeError(
            f"expected `{name_a}` and `{name_b}` to have the same dtype, got {da} and {db}"
        )


def check_accumulated(count: Any, minimum: int = 1, name: str = "update") -> None:
    """Raise ``ValueError`` if a concrete sample ``count`` is below ``minimum`` (skipped in jit).

    Streaming metrics call this in ``compute`` so that computing before enough ``update`` calls is
    an error rather than a NaN.
    """
    if not is_concrete(count):
        return
    n = int(np.asarray(count))
    if n < minimum:
        raise ValueError(
            f"expected at least {minimum} samples accumulated by `{name}` before `compute`, got {n}"
        )


def check_images(x: Any, name: str = "images", *, channels: int = 3, min_size: int = 1) -> None:
    """Raise unless ``x`` is a non-empty NHWC float batch with ``channels`` channels.

    Args:
        x: The batch, ``(batch, height, width, channels)``.
        name: Argument name used in the messages.
        channels: Required number of channels (last axis).
        min_size: Smallest allowed height and width (the network's minimum input size).

    Raises:
        ValueError: If the rank, the channel count or the batch size is wrong, or the height or
            width is below ``min_size``.
        TypeError: If the dtype is not floating.
    """
    check_rank(x, 4, name, "batch, height, width, channels")
    shape = _shape(x)
    if shape[3] != channels:
        raise ValueError(
            f"expected `{name}` to have {channels} channels (last axis), got shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(f"expected `{name}` to be non-empty, got shape {shape}")
    if min(shape[1], shape[2]) < min_size:
        raise ValueError(
            f"expected `{name}` to have height and width at least {min_size}, got shape {shape}"
        )
    check_floating(x, name)


def check_mask(mask: Any, batch: int, name: str = "mask") -> jax.Array:
    """Validate a row mask over a batch of ``batch`` rows and return it as a bool array.

    A mask is a vector of shape ``(batch,)`` of dtype bool, or of an integer dtype holding 0/1
    (checked eagerly; under tracing any nonzero integer keeps its row, as numpy's truthiness).
    Float masks are refused: per-row weights go in ``sample_weight``.

    Raises:
        ValueError: If the shape is not ``(batch,)`` or (eagerly) an integer mask holds values
            other than 0 and 1.
        TypeError: If the dtype is neither bool nor integer.
    """
    shape = _shape(mask)
    if shape != (batch,):
        raise ValueError(f"expected `{name}` to have shape ({batch},) (one per row), got {shape}")
    dtype = _dtype(mask)
    if dtype == np.bool_:
        return jnp.asarray(mask)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"expected `{name}` to have dtype bool (or integer 0/1), got {dtype}; "
            "pass per-row weights as `sample_weight`"
        )
    if is_concrete(mask):
        arr = np.asarray(mask)
        bad = arr[(arr != 0) & (arr != 1)]
        if bad.size:
            raise ValueError(f"expected `{name}` to hold only 0 and 1, got {bad.flat[0]}")
    return jnp.asarray(mask) != 0


def check_sample_weight(weight: Any, batch: int, name: str = "sample_weight") -> jax.Array:
    """Validate per-row weights over a batch of ``batch`` rows and return them as an array.

    Weights are a floating ``(batch,)`` vector of finite values >= 0. Eagerly a bad value raises;
    under tracing it cannot, so a negative or non-finite weight becomes NaN, which poisons the
    accumulated total and the computed value (never a plausible number).

    Raises:
        ValueError: If the shape is not ``(batch,)`` or (eagerly) a weight is negative, NaN or Inf.
        TypeError: If the dtype is not floating.
    """
    shape = _shape(weight)
    if shape != (batch,):
        raise ValueError(f"expected `{name}` to have shape ({batch},) (one per row), got {shape}")
    check_floating(weight, name)
    check_finite(weight, name)
    if is_concrete(weight):
        arr = np.asarray(weight)
        if arr.size and arr.min() < 0:
            raise ValueError(f"expected `{name}` to be >= 0, got {float(arr.min()):g}")
        return jnp.asarray(weight)
    w = jnp.asarray(weight)
    return jnp.where((w >= 0) & jnp.isfinite(w), w, jnp.nan)
