"""Shared input checkers used by every public entry point, and the one rule for bad values in jit.

Every message states the rule, then the values: "expected `images` to have 4 dims (batch, height,
width, channels), got shape (32, 32, 3)". Arguments are named in backticks.

Shape and dtype checks are static and always run, also under ``jax.jit``.

Value checks (NaN/Inf, ranges, probabilities, label bounds) raise eagerly. Under a jax
transformation (``jax.jit``, ``nnx.jit``, ``grad``, ``vmap``) the values are tracers and a check
cannot raise, so it records instead: each check computes, with the same predicate, which rows of
its array break the rule and hands that to the innermost active :func:`collect` scope. The two
kinds of entry point turn the record into a loud result:

- **Pure functions** (every registered ``calibrax.functional`` function and statistic, and
  functions decorated with :func:`nan_if_invalid`) return NaN in every floating output when any
  row broke a rule (only in the bad rows of a per-row output), and -1 in every signed integer
  output (a confusion matrix, which cannot hold NaN).
- **Stateful metrics** (every :class:`~calibrax.core.StatefulMetric`) count the rejected rows in
  their state (``rejected_rows``, next to the code of the first broken rule, ``rejected_rule``),
  which ``merge``, ``reduce``, ``reset`` and checkpoints carry like any other state. ``compute()``
  then raises eagerly, naming the first rule and the number of rows (``expected `images` to be in
  [0, 1] (normalize=True expects floats in [0, 1]), got 64 rejected rows in updates traced under
  jit (their values are not visible there)``), or returns NaN (-1 for integer outputs) when
  ``compute`` itself is traced. Masked rows are never counted.

The cost is one reduction per checked array inside the traced update (see
``benchmarks/jit_checks.py``). Custom rules use :func:`require`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import zlib
from collections.abc import Callable
from collections.abc import Iterator
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
    "check_not_probabilities",
    "check_positive_int",
    "check_probabilities",
    "check_range",
    "check_rank",
    "check_same_dtype",
    "check_same_length",
    "check_same_shape",
    "check_sample_weight",
    "collect",
    "is_concrete",
    "jit_message",
    "nan_if_invalid",
    "nan_unless",
    "note_rows",
    "require",
    "rule_code",
    "rule_of",
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


class Collected:
    """The traced rule checks of one :func:`collect` scope.

    Attributes:
        problems: ``(rule, ok)`` pairs in the order the checks ran; ``ok`` is a bool array, per
            row (shape ``(rows,)``) or a scalar for the whole input.
        keep: The update's row mask (``None``: every row counts), set by ``StatefulMetric._rows``.
    """

    def __init__(self) -> None:
        self.problems: list[tuple[str, jax.Array]] = []
        self.keep: jax.Array | None = None

    def split_ok(self) -> tuple[jax.Array, jax.Array | None]:
        """``(ok, rows_ok)``: rules checked on the whole input, and per row of the first
        per-row rule's length (``None`` when no rule was per row)."""
        ok = jnp.asarray(True)
        rows_ok = None
        for _, flags in self.problems:
            if flags.ndim == 1 and (rows_ok is None or flags.shape == rows_ok.shape):
                rows_ok = flags if rows_ok is None else rows_ok & flags
            else:
                ok = ok & jnp.all(flags)
        return ok, rows_ok

    def rejected(self) -> tuple[jax.Array, jax.Array]:
        """``(rows, code)``: the number of kept rows that broke a rule, and the first rule's code.

        A rule checked on the whole input (or on an array of another length) rejects every kept
        row when it fails. ``code`` is 0 when no row broke a rule.
        """
        if self.keep is not None:
            keep = self.keep
        else:
            n = next((int(ok.shape[0]) for _, ok in self.problems if ok.ndim == 1), 1)
            keep = jnp.ones((n,), bool)
        bad = jnp.zeros(keep.shape, bool)
        code = jnp.zeros((), jnp.int32)
        for rule, ok in reversed(self.problems):
            ok_rows = ok if ok.shape == keep.shape else jnp.broadcast_to(jnp.all(ok), keep.shape)
            broken = ~ok_rows & keep
            bad = bad | broken
            code = jnp.where(jnp.any(broken), jnp.int32(rule_code(rule)), code)
        return jnp.sum(bad, dtype=jnp.int32), code


_scopes = threading.local()
_RULES: dict[int, str] = {}


def _stack() -> list[Collected]:
    if not hasattr(_scopes, "stack"):
        _scopes.stack = []
    return _scopes.stack


@contextlib.contextmanager
def collect() -> Iterator[Collected]:
    """Scope in which traced value checks record the rows that break their rule.

    Scopes nest: when one closes, its records also go to the enclosing scope, so a pure function
    called inside a metric's update is seen by both.
    """
    stack = _stack()
    scope = Collected()
    stack.append(scope)
    try:
        yield scope
    finally:
        stack.pop()
        if stack:
            stack[-1].problems.extend(scope.problems)


def note_rows(keep: jax.Array) -> None:
    """Tell the innermost scope which rows its update keeps (masked rows are never counted)."""
    stack = _stack()
    if stack and stack[-1].keep is None:
        stack[-1].keep = keep


def rule_code(rule: str) -> int:
    """The positive int32 code of ``rule`` (a stable hash, the same in every process)."""
    code = zlib.crc32(rule.encode()) & 0x7FFFFFFF
    code = code or 1
    _RULES.setdefault(code, rule)
    return code


def rule_of(code: int) -> str:
    """The rule recorded under ``code`` (by any check traced in this process)."""
    return _RULES.get(int(code), f"rule #{int(code)} (traced in another process)")


def jit_message(code: int, rows: int) -> str:
    """The error of ``compute()`` after ``rows`` rows broke the rule ``code`` under jit."""
    return (
        f"{rule_of(code)}, got {rows} rejected row{'s' if rows != 1 else ''} in updates traced "
        "under jit (their values are not visible there)"
    )


def _sum_dtype(x: Any) -> np.dtype:
    # At least float32 for a sum of probabilities; float64 stays float64 (strict promotion).
    dtype = _dtype(x)
    return dtype if dtype.itemsize >= 4 else np.dtype(np.float32)


def _per_row(ok: jax.Array) -> jax.Array:
    return ok if ok.ndim <= 1 else jnp.all(ok.reshape(ok.shape[0], -1), axis=1)


def require(ok: Any, rule: str) -> None:
    """Record a traced rule check: ``ok`` is ``True`` where the input follows ``rule``.

    ``ok`` has the rows on axis 0 (reduced to one flag per row) or is a scalar. Outside a
    :func:`collect` scope, or for a concrete ``ok``, nothing is recorded: eagerly the caller
    raises its own, more precise error.
    """
    stack = _stack()
    if not stack or is_concrete(ok):
        return
    stack[-1].problems.append((rule, _per_row(jnp.asarray(ok, bool))))


def nan_unless(value: Any, ok: Any, rows_ok: Any = None) -> Any:
    """``value`` with its floating leaves replaced by NaN where the input was not ``ok``.

    Signed integer leaves (counts, a confusion matrix) get -1 instead, which no count can be.

    ``ok`` is a scalar flag. With ``rows_ok`` (one flag per input row), a leaf whose leading axis
    has that length gets NaN only in the bad rows (per-row outputs), any other leaf everywhere.
    """

    def leaf(x: Any) -> Any:
        if not isinstance(x, (jax.Array, np.ndarray)):
            return x
        if jnp.issubdtype(x.dtype, jnp.signedinteger):
            # Counts cannot hold NaN: -1 is a count no valid input gives.
            bad = jnp.asarray(-1, x.dtype)
        elif jnp.issubdtype(x.dtype, jnp.inexact):
            bad = jnp.asarray(jnp.nan, x.dtype)
        else:
            return x
        flag = ok
        if rows_ok is not None:
            if x.ndim and x.shape[0] == rows_ok.shape[0]:
                flag = ok & rows_ok.reshape(rows_ok.shape + (1,) * (x.ndim - 1))
            else:
                flag = ok & jnp.all(rows_ok)
        return jnp.where(flag, x, bad)

    return _map_leaves(leaf, value)


def _map_leaves(fn: Callable[[Any], Any], value: Any) -> Any:
    # jax.tree.map rebuilds a dict with its keys sorted: keep the caller's order instead.
    if isinstance(value, dict):
        return type(value)((k, _map_leaves(fn, v)) for k, v in value.items())
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_leaves(fn, v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_map_leaves(fn, v) for v in value)
    if isinstance(value, (jax.Array, np.ndarray)) or value is None:
        return fn(value)
    return jax.tree.map(fn, value)


def nan_if_invalid(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a pure function so that traced bad input gives NaN in every floating output.

    Eagerly the function's own checks raise and nothing changes; under a transformation the
    checks record (see the module docstring) and a broken rule turns the result into NaN.
    """

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        with collect() as scope:
            out = fn(*args, **kwargs)
        if not scope.problems:
            return out
        return nan_unless(out, *scope.split_ok())

    return guarded


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
    """Raise ``ValueError`` if concrete ``x`` holds NaN or Inf (recorded under tracing)."""
    if not jnp.issubdtype(_dtype(x), jnp.inexact):
        return
    if not is_concrete(x):
        require(jnp.isfinite(x), f"expected `{name}` to be finite")
        return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        raise ValueError(f"expected `{name}` to be finite, got {n_nan} NaN and {n_inf} Inf values")


def check_range(x: Any, low: float, high: float, name: str, *, hint: str | None = None) -> None:
    """Raise ``ValueError`` if concrete ``x`` has values outside ``[low, high]``.

    Under tracing the rows holding such values (NaN included) are recorded instead.
    """
    extra = f" ({hint})" if hint else ""
    rule = f"expected `{name}` to be in [{low:g}, {high:g}]{extra}"
    if not is_concrete(x):
        require((x >= low) & (x <= high), rule)
        return
    arr = np.asarray(x)
    if arr.size == 0:
        return
    lo, hi = arr.min(), arr.max()
    if lo < low or hi > high:
        raise ValueError(f"{rule}, got values in [{float(lo):g}, {float(hi):g}]")


def check_probabilities(x: Any, name: str, *, axis: int | None = -1, atol: float = 1e-4) -> None:
    """Raise ``ValueError`` unless ``x`` is in ``[0, 1]`` and, with ``axis``, sums to 1 there."""
    check_floating(x, name)
    check_finite(x, name)
    check_range(x, 0.0, 1.0, name)
    if axis is None:
        return
    if not is_concrete(x):
        sums = jnp.sum(x, axis=axis, dtype=_sum_dtype(x))
        require(
            jnp.abs(sums - 1.0) <= atol,
            f"expected `{name}` to sum to 1 along axis {axis} (atol {atol:g})",
        )
        return
    sums = np.asarray(x, dtype=np.float64).sum(axis=axis)
    if sums.size and np.max(np.abs(sums - 1.0)) > atol:
        worst = float(sums.flat[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(
            f"expected `{name}` to sum to 1 along axis {axis} (atol {atol:g}), "
            f"got a row summing to {worst:.6g}"
        )


def check_not_probabilities(x: Any, name: str, *, atol: float = 1e-4) -> None:
    """Raise ``ValueError`` if rows of ``x`` (logits expected) are probabilities instead.

    A row counts as probabilities when all its values are in ``[0, 1]`` and they sum to 1 within
    ``atol`` along the last axis: softmax output given where logits are expected (the softmax of
    such a row is nearly uniform, which silently pulls a score towards 1). Recorded per row under
    tracing.
    """
    rule = (
        f"expected `{name}` to be logits (unnormalised log-probabilities), not probabilities "
        "(rows in [0, 1] summing to 1); pass their logarithm"
    )
    if not is_concrete(x):
        sums = jnp.sum(x, axis=-1, dtype=_sum_dtype(x))
        in_unit = jnp.all((x >= 0) & (x <= 1), axis=-1)
        require(~(in_unit & (jnp.abs(sums - 1.0) <= atol)), rule)
        return
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        return
    rows = np.all((arr >= 0) & (arr <= 1), axis=-1) & (np.abs(arr.sum(axis=-1) - 1.0) <= atol)
    if rows.any():
        raise ValueError(f"{rule}, got {int(rows.sum())} such rows")


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
    """Raise ``ValueError`` if concrete integer ``labels`` fall outside ``[0, num_classes)``.

    Under tracing the rows holding such labels are recorded instead.
    """
    rule = f"expected `{name}` to be in [0, {num_classes - 1}] (num_classes={num_classes})"
    if not is_concrete(labels):
        values = jnp.asarray(labels)
        if values.dtype == jnp.bool_:
            values = values.astype(jnp.int32)
        require((values >= 0) & (values < num_classes), rule)
        return
    arr = np.asarray(labels)
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{rule}, got values in [{lo}, {hi}]")


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
