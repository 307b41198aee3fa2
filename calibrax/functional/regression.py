"""Regression metrics: MSE, RMSE, MAE, MAPE, R² and Pearson correlation.

Each metric is a pair of pure functions: ``_*_update`` turns a batch into sufficient statistics and
``_*_compute`` turns statistics into the score. The public function and the streaming class in
:mod:`calibrax.metrics.regression` share the pair, so they cannot disagree.

Centred statistics (R², Pearson) are computed after shifting by the batch's first element, so that
constant data gives exactly zero variance, and merge with the parallel update of Chan et al. (1979),
so that any split of the data into batches gives the same answer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register

__all__ = [
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_error",
    "pearson_correlation",
    "r2_score",
    "root_mean_squared_error",
]


def _check_regression(
    predictions: jax.Array, targets: jax.Array, *, vector: bool = False, min_samples: int = 1
) -> None:
    """Floating arrays of the same shape (1-D if ``vector``), non-empty, finite."""
    checks.check_floating(predictions, "predictions")
    checks.check_floating(targets, "targets")
    if vector:
        checks.check_rank(predictions, 1, "predictions", "batch")
    checks.check_same_shape(predictions, targets, "predictions", "targets")
    checks.check_nonempty(predictions, "predictions")
    if min_samples > 1:
        checks.check_min_samples(predictions, min_samples, "predictions")
    checks.check_finite(predictions, "predictions")
    checks.check_finite(targets, "targets")


def _common_float_dtype(a: jax.Array, b: jax.Array) -> jnp.dtype:
    """The wider of two floating dtypes; explicit, because strict promotion may be on."""
    da, db = jnp.dtype(a.dtype), jnp.dtype(b.dtype)
    if da == db:
        return da
    bits_a, bits_b = jnp.finfo(da).bits, jnp.finfo(db).bits
    if bits_a == bits_b:  # float16 with bfloat16
        return jnp.dtype(jnp.float32)
    return da if bits_a > bits_b else db


def _common(predictions: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    dtype = _common_float_dtype(predictions, targets)
    return predictions.astype(dtype), targets.astype(dtype)


def _count(x: jax.Array) -> jax.Array:
    return jnp.asarray(x.size, jnp.int32)


# --------------------------------------------------------------------------- sums of errors
def _squared_error_update(predictions, targets) -> tuple[jax.Array, jax.Array]:
    p, t = _common(predictions, targets)
    return jnp.sum(jnp.square(p - t)), _count(p)


def _absolute_error_update(predictions, targets) -> tuple[jax.Array, jax.Array]:
    p, t = _common(predictions, targets)
    return jnp.sum(jnp.abs(p - t)), _count(p)


def _absolute_percentage_error_update(predictions, targets) -> tuple[jax.Array, jax.Array]:
    p, t = _common(predictions, targets)
    eps = jnp.finfo(p.dtype).eps
    return jnp.sum(jnp.abs(p - t) / jnp.maximum(jnp.abs(t), eps)), _count(p)


def _mean_compute(total: jax.Array, count: jax.Array) -> jax.Array:
    return total / count.astype(total.dtype)


def _rmse_compute(total: jax.Array, count: jax.Array) -> jax.Array:
    return jnp.sqrt(_mean_compute(total, count))


def _example_pair(n: int = 16) -> tuple[jax.Array, jax.Array]:
    kp, kt = jax.random.split(jax.random.key(0))
    return (
        jax.random.normal(kp, (n,), jnp.float32),
        jax.random.normal(kt, (n,), jnp.float32),
    )


@register(
    "mean_squared_error",
    kind="function",
    tier=0,
    domain="regression",
    higher_is_better=False,
    differentiable=True,
    example=lambda: (mean_squared_error, _example_pair()),
)
def mean_squared_error(
    predictions: Float[Array, "*shape"], targets: Float[Array, "*shape"]
) -> jax.Array:
    """Mean squared error over all elements.

    .. math:: \\mathrm{MSE} = \\frac{1}{n} \\sum_i (\\hat y_i - y_i)^2

    Args:
        predictions: Floating array of any shape.
        targets: Floating array of the same shape.

    Returns:
        Scalar, in the promoted dtype of the inputs.

    Raises:
        TypeError: If an input is not floating.
        ValueError: If the shapes differ, the inputs are empty, or (eagerly) hold NaN/Inf.

    Example:
        >>> import jax.numpy as jnp
        >>> print(f"{mean_squared_error(jnp.array([1.0, 2.0]), jnp.array([1.0, 4.0])):.2f}")
        2.00
    """
    _check_regression(predictions, targets)
    return _mean_compute(*_squared_error_update(predictions, targets))


@register(
    "root_mean_squared_error",
    kind="function",
    tier=0,
    domain="regression",
    higher_is_better=False,
    differentiable=True,
    example=lambda: (root_mean_squared_error, _example_pair()),
)
def root_mean_squared_error(
    predictions: Float[Array, "*shape"], targets: Float[Array, "*shape"]
) -> jax.Array:
    """Square root of the mean squared error over all elements.

    For 2-D inputs this is the root of the mean over every element (as torchmetrics), not
    scikit-learn's average of per-column RMSEs.

    Args:
        predictions: Floating array of any shape.
        targets: Floating array of the same shape.

    Returns:
        Scalar, in the promoted dtype of the inputs.

    Raises:
        TypeError: If an input is not floating.
        ValueError: If the shapes differ, the inputs are empty, or (eagerly) hold NaN/Inf.
    """
    _check_regression(predictions, targets)
    return _rmse_compute(*_squared_error_update(predictions, targets))


@register(
    "mean_absolute_error",
    kind="function",
    tier=0,
    domain="regression",
    higher_is_better=False,
    differentiable=True,
    example=lambda: (mean_absolute_error, _example_pair()),
)
def mean_absolute_error(
    predictions: Float[Array, "*shape"], targets: Float[Array, "*shape"]
) -> jax.Array:
    """Mean absolute error over all elements.

    Args:
        predictions: Floating array of any shape.
        targets: Floating array of the same shape.

    Returns:
        Scalar, in the promoted dtype of the inputs.

    Raises:
        TypeError: If an input is not floating.
        ValueError: If the shapes differ, the inputs are empty, or (eagerly) hold NaN/Inf.
    """
    _check_regression(predictions, targets)
    return _mean_compute(*_absolute_error_update(predictions, targets))


@register(
    "mean_absolute_percentage_error",
    kind="function",
    tier=0,
    domain="regression",
    higher_is_better=False,
    differentiable=True,
    example=lambda: (mean_absolute_percentage_error, _example_pair()),
)
def mean_absolute_percentage_error(
    predictions: Float[Array, "*shape"], targets: Float[Array, "*shape"]
) -> jax.Array:
    """Mean absolute percentage error, as a fraction (not multiplied by 100).

    .. math:: \\mathrm{MAPE} = \\frac{1}{n} \\sum_i \\frac{|\\hat y_i - y_i|}{\\max(|y_i|, \\epsilon)}

    where :math:`\\epsilon` is the machine epsilon of the dtype (as scikit-learn), so a zero target
    gives a huge but finite term.

    Args:
        predictions: Floating array of any shape.
        targets: Floating array of the same shape.

    Returns:
        Scalar, in the promoted dtype of the inputs.

    Raises:
        TypeError: If an input is not floating.
        ValueError: If the shapes differ, the inputs are empty, or (eagerly) hold NaN/Inf.
    """
    _check_regression(predictions, targets)
    return _mean_compute(*_absolute_percentage_error_update(predictions, targets))


# --------------------------------------------------------------------------- centred statistics
def _centred_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and centred values of 1-D ``x``; exact zeros when ``x`` is constant."""
    shift = jax.lax.stop_gradient(x[0])
    s = x - shift
    m = jnp.mean(s)
    return shift + m, s - m


def _chan_merge_mean(n_a, mean_a, n_b, mean_b):
    """Pooled mean and the cross factor ``n_a n_b / n`` of Chan's parallel update (floats)."""
    n = n_a + n_b
    safe_n = jnp.where(n > 0, n, 1)
    delta = mean_b - mean_a
    mean = jnp.where(n > 0, mean_a + delta * (n_b / safe_n), mean_a)
    return mean, delta, n_a * n_b / safe_n


def _r2_update(predictions, targets) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Batch statistics of R²: (count, mean of targets, centred sum of squares, sum of sq. err.)."""
    p, t = _common(predictions, targets)
    mean_t, ct = _centred_moments(t)
    return _count(t), mean_t, jnp.sum(jnp.square(ct)), jnp.sum(jnp.square(p - t))


def _r2_merge(a, b):
    """Merge two R² statistics tuples exactly (Chan et al.)."""
    n_a, mean_a, m2_a, sse_a = a
    n_b, mean_b, m2_b, sse_b = b
    dtype = mean_a.dtype
    fa, fb = n_a.astype(dtype), n_b.astype(dtype)
    mean, delta, cross = _chan_merge_mean(fa, mean_a, fb, mean_b)
    return n_a + n_b, mean, m2_a + m2_b + jnp.square(delta) * cross, sse_a + sse_b


def _r2_compute(count, mean, m2, sse) -> jax.Array:
    """``1 - SSE / SST``; with constant targets 1 if the predictions are exact, else 0."""
    del count, mean
    safe = jnp.where(m2 > 0, m2, 1)
    constant = jnp.where(sse == 0, 1, 0).astype(sse.dtype)
    return jnp.where(m2 > 0, 1 - sse / safe, constant)


@register(
    "r2_score",
    kind="function",
    tier=0,
    domain="regression",
    higher_is_better=True,
    differentiable=True,
    example=lambda: (r2_score, _example_pair()),
)
def r2_score(predictions: Float[Array, " batch"], targets: Float[Array, " batch"]) -> jax.Array:
    """Coefficient of determination.

    .. math:: R^2 = 1 - \\frac{\\sum_i (y_i - \\hat y_i)^2}{\\sum_i (y_i - \\bar y)^2}

    With constant targets the ratio is undefined; like scikit-learn's default
    (``force_finite=True``) the result is 1.0 when the predictions are exact and 0.0 otherwise.

    Args:
        predictions: Floating array of shape (batch,).
        targets: Floating array of shape (batch,), at least 2 samples.

    Returns:
        Scalar, in the promoted dtype of the inputs.

    Raises:
        TypeError: If an input is not floating.
        ValueError: If the shapes differ, the inputs are not 1-D, have fewer than 2 samples, or
            (eagerly) hold NaN/Inf.
    """
    _check_regression(predictions, targets, vector=True, min_samples=2)
    return _r2_compute(*_r2_update(predictions, targets))


def _pearson_update(predictions, targets):
    """Batch statistics: (count, mean_p, mean_t, centred SS of p, of t, centred cross product)."""
    p, t = _common(predictions, targets)
    mean_p, cp = _centred_moments(p)
    mean_t, ct = _centred_moments(t)
    return (
        _count(p),
        mean_p,
        mean_t,
        jnp.sum(jnp.square(cp)),
        jnp.sum(jnp.square(ct)),
        jnp.sum(cp * ct),
    )


def _pearson_merge(a, b):
    """Merge two Pearson statistics tuples exactly (Chan et al.)."""
    n_a, mp_a, mt_a, sp_a, st_a, c_a = a
    n_b, mp_b, mt_b, sp_b, st_b, c_b = b
    dtype = mp_a.dtype
    fa, fb = n_a.astype(dtype), n_b.astype(dtype)
    mean_p, dp, cross = _chan_merge_mean(fa, mp_a, fb, mp_b)
    mean_t, dt, _ = _chan_merge_mean(fa, mt_a, fb, mt_b)
    return (
        n_a + n_b,
        mean_p,
        mean_t,
        sp_a + sp_b + jnp.square(dp) * cross,
        st_a + st_b + jnp.square(dt) * cross,
        c_a + c_b + dp * dt * cross,
    )


def _pearson_compute(count, mean_p, mean_t, ss_p, ss_t, cross) -> jax.Array:
    """Correlation clipped to [-1, 1]; NaN when either side is constant (as scipy)."""
    del count, mean_p, mean_t
    denom = jnp.sqrt(ss_p) * jnp.sqrt(ss_t)
    defined = denom > 0
    r = cross / jnp.where(defined, denom, 1)
    return jnp.where(defined, jnp.clip(r, -1, 1), jnp.nan).astype(cross.dtype)


@register(
    "pearson_correlation",
    kind="function",
    tier=0,
    domain="regression",
    higher_is_better=True,
    differentiable=True,
    example=lambda: (pearson_correlation, _example_pair()),
)
def pearson_correlation(
    predictions: Float[Array, " batch"], targets: Float[Array, " batch"]
) -> jax.Array:
    """Pearson correlation coefficient between predictions and targets.

    When either input is constant the coefficient is undefined and the result is NaN (as
    ``scipy.stats.pearsonr``); a constant input is detected exactly, not by a tolerance.

    Args:
        predictions: Floating array of shape (batch,).
        targets: Floating array of shape (batch,), at least 2 samples.

    Returns:
        Scalar in [-1, 1], in the promoted dtype of the inputs.

    Raises:
        TypeError: If an input is not floating.
        ValueError: If the shapes differ, the inputs are not 1-D, have fewer than 2 samples, or
            (eagerly) hold NaN/Inf.
    """
    _check_regression(predictions, targets, vector=True, min_samples=2)
    return _pearson_compute(*_pearson_update(predictions, targets))
