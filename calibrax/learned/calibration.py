"""Post-hoc calibration heads: fit on held-out logits, map logits to calibrated probabilities.

Every head is an ``nnx.Module`` whose trainable parameters are ``nnx.Param`` (except
:class:`IsotonicCalibration`, which is fitted by pool-adjacent-violators and holds its knots in
:class:`CalibrationKnots`). ``fit(logits, labels)`` minimises the mean negative log-likelihood
(plus the head's regulariser) full-batch with optax's L-BFGS inside one jit-compiled
``lax.while_loop``, or with a minibatch optax loop when ``batch_size`` is given, and returns a
:class:`CalibrationReport` of NLL and ECE before and after. Heads save and restore with
:func:`calibrax.io.save_state` / :func:`calibrax.io.restore_state`.

Multiclass heads take logits of shape (batch, num_classes); binary heads (:class:`PlattScaling`,
:class:`IsotonicCalibration`) take real scores of shape (batch,), read as log-odds of class 1 by
the "before" half of the report.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.functional import expected_calibration_error
from calibrax.functional import log_loss
from calibrax.functional import negative_log_likelihood

__all__ = [
    "CalibrationKnots",
    "CalibrationReport",
    "DirichletCalibration",
    "IsotonicCalibration",
    "MatrixScaling",
    "PlattScaling",
    "TemperatureScaling",
    "VectorScaling",
]

MIN_SAMPLES = 2


class CalibrationKnots(nnx.Variable):
    """Fitted, non-gradient state of a calibration head (isotonic knots)."""


@dataclasses.dataclass(frozen=True)
class CalibrationReport:
    """NLL and ECE of the same held-out set before and after calibration."""

    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _binary_logits(scores: jax.Array) -> jax.Array:
    # softmax([0, s]) = (1 - sigmoid(s), sigmoid(s)): the two-class logits of a log-odds score.
    return jnp.stack([jnp.zeros_like(scores), scores], axis=-1)


def _report(logits_before, logits_after, labels, *, n_bins: int, probs_after=None):
    labels = jnp.asarray(labels)
    nll_b = negative_log_likelihood(logits_before, labels)
    ece_b = expected_calibration_error(
        jax.nn.softmax(logits_before, axis=-1), labels, n_bins=n_bins
    )
    if probs_after is None:
        nll_a = negative_log_likelihood(logits_after, labels)
        probs_after = jax.nn.softmax(logits_after, axis=-1)
    else:
        # Probabilities of exactly 0 or 1 (isotonic) have no finite logit: clip as sklearn does.
        nll_a = log_loss(probs_after, labels)
    ece_a = expected_calibration_error(probs_after, labels, n_bins=n_bins)
    return CalibrationReport(float(nll_b), float(nll_a), float(ece_b), float(ece_a))


def _optax_promotion():
    # optax's line search and bias corrections mix Python floats, int32 counts and float32/64
    # scalars; a caller's strict dtype-promotion setting must not break the fit.
    return jax.numpy_dtype_promotion("standard")


@functools.partial(jax.jit, static_argnames=("graphdef", "max_iter"))
def _lbfgs(graphdef, params, rest, logits, labels, *, max_iter, tol):
    def fun(p):
        return nnx.merge(graphdef, p, rest).objective(logits, labels)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(p, updates), state

    def keep_going(carry):
        _, state = carry
        count = optax.tree.get(state, "count")
        gnorm = optax.tree.norm(optax.tree.get(state, "grad"))
        return (count == 0) | ((count < max_iter) & (gnorm >= tol))

    params, state = jax.lax.while_loop(keep_going, step, (params, opt.init(params)))
    return params, optax.tree.get(state, "count")


@functools.partial(jax.jit, static_argnames=("graphdef", "tx"))
def _minibatch_epoch(graphdef, tx, params, rest, opt_state, xs, ys):
    def body(carry, batch):
        p, s = carry
        loss, grads = jax.value_and_grad(lambda q: nnx.merge(graphdef, q, rest).objective(*batch))(
            p
        )
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
    return params, opt_state, jnp.mean(losses)


class _GradientHead(nnx.Module):
    """Shared ``fit``/``evaluate`` of the heads trained by gradient on the mean NLL."""

    binary: bool = False
    num_classes: int | None = None

    def logits(self, logits: jax.Array) -> jax.Array:
        raise NotImplementedError

    def __call__(self, logits: jax.Array) -> jax.Array:
        """Calibrated probabilities: softmax rows (multiclass) or P(class 1) (binary)."""
        out = self.logits(logits)
        return jax.nn.sigmoid(out) if self.binary else jax.nn.softmax(out, axis=-1)

    def penalty(self) -> jax.Array:
        return jnp.zeros((), self.dtype)

    def objective(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Mean NLL of ``labels`` under the calibrated logits, plus the head's regulariser."""
        out = self.logits(logits)
        if self.binary:
            # Targets may be smoothed (Platt): binary cross-entropy with soft labels.
            nll = jnp.mean(optax.sigmoid_binary_cross_entropy(out, labels))
        else:
            log_p = jax.nn.log_softmax(out, axis=-1)
            nll = -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))
        return nll + self.penalty()

    def _check(self, logits, labels) -> None:
        # Binary heads take scores; their messages say so.
        name = "scores" if self.binary else "logits"
        checks.check_floating(logits, name)
        checks.check_integer(labels, "labels")
        if self.binary:
            checks.check_rank(logits, 1, name, "batch")
        else:
            checks.check_rank(logits, 2, name, "batch, num_classes")
            if self.num_classes is not None:
                checks.check_dim(logits, 1, self.num_classes, name, "num_classes")
        checks.check_rank(labels, 1, "labels", "batch")
        checks.check_same_length(logits, labels, name, "labels")
        checks.check_min_samples(logits, MIN_SAMPLES, name)
        checks.check_finite(logits, name)
        k = 2 if self.binary else logits.shape[1]
        checks.check_labels_in_range(labels, k, "labels")

    def _targets(self, labels: jax.Array) -> jax.Array:
        return labels.astype(self.dtype) if self.binary else labels.astype(jnp.int32)

    def _before_after(self, logits):
        if self.binary:
            return _binary_logits(logits), _binary_logits(self.logits(logits))
        return logits, self.logits(logits)

    def evaluate(
        self, logits: jax.Array, labels: jax.Array, *, n_bins: int = 15
    ) -> CalibrationReport:
        """NLL and ECE (``n_bins`` uniform bins) of ``logits`` before and after this head.

        Raises:
            TypeError: If ``logits`` is not floating or ``labels`` not integer.
            ValueError: If shapes disagree, there are fewer than 2 samples, ``logits`` holds
                NaN/Inf or ``labels`` are out of range.
        """
        self._check(logits, labels)
        logits = jnp.asarray(logits, self.dtype)
        before, after = self._before_after(logits)
        return _report(before, after, jnp.asarray(labels).astype(jnp.int32), n_bins=n_bins)

    def fit(
        self,
        logits: jax.Array,
        labels: jax.Array,
        *,
        max_iter: int = 500,
        tol: float | None = None,
        batch_size: int | None = None,
        epochs: int = 100,
        optimizer: optax.GradientTransformation | None = None,
        seed: int = 0,
        n_bins: int = 15,
    ) -> CalibrationReport:
        """Fit the parameters on held-out ``logits`` and ``labels``; return the NLL/ECE report.

        Full-batch L-BFGS (optax, jit-compiled, stopping when the gradient norm falls below
        ``tol`` or after ``max_iter`` iterations) unless ``batch_size`` is given; then ``epochs``
        passes of ``optimizer`` (default ``optax.adam(1e-2)``) over shuffled minibatches of
        exactly ``batch_size`` rows (the remainder of each shuffle is left to the next epoch).

        Args:
            logits: Uncalibrated logits, shape (batch, num_classes); binary heads: scores (batch,).
            labels: Integer labels, shape (batch,).
            max_iter: L-BFGS iteration limit.
            tol: Gradient-norm tolerance (default: 1e-10 in float64, 1e-6 in float32).
            batch_size: Minibatch size; ``None`` for full-batch L-BFGS.
            epochs: Minibatch passes over the data.
            optimizer: Minibatch optax transformation.
            seed: Seed of the minibatch shuffles.
            n_bins: ECE bins of the report.

        Returns:
            A :class:`CalibrationReport` on the fitting data.

        Raises:
            TypeError: If ``logits`` is not floating or ``labels`` not integer.
            ValueError: If shapes disagree, there are fewer than 2 samples, ``logits`` holds
                NaN/Inf, ``labels`` are out of range, or ``batch_size`` is not a positive integer
                at most the number of samples.
        """
        self._check(logits, labels)
        x = jnp.asarray(logits, self.dtype)
        y = self._fit_targets(jnp.asarray(labels))
        graphdef, params, rest = nnx.split(self, nnx.Param, ...)
        if batch_size is None:
            if tol is None:
                tol = 1e-10 if jnp.dtype(self.dtype) == jnp.float64 else 1e-6
            with _optax_promotion():
                params, _ = _lbfgs(graphdef, params, rest, x, y, max_iter=max_iter, tol=tol)
        else:
            checks.check_k(batch_size, x.shape[0], "batch_size", "the number of samples")
            tx = optimizer if optimizer is not None else optax.adam(1e-2)
            opt_state = tx.init(params)
            rng = np.random.default_rng(seed)
            n_batches = x.shape[0] // batch_size
            for _ in range(epochs):
                order = rng.permutation(x.shape[0])[: n_batches * batch_size]
                xs = x[order].reshape(n_batches, batch_size, *x.shape[1:])
                ys = y[order].reshape(n_batches, batch_size)
                with _optax_promotion():
                    params, opt_state, _ = _minibatch_epoch(
                        graphdef, tx, params, rest, opt_state, xs, ys
                    )
        nnx.update(self, params)
        return self.evaluate(logits, labels, n_bins=n_bins)

    def _fit_targets(self, labels: jax.Array) -> jax.Array:
        return self._targets(labels)


class TemperatureScaling(_GradientHead):
    """Temperature scaling: ``softmax(z / T)`` with one scalar ``T > 0`` (Guo et al. 2017).

    The parameter is ``log_temperature`` (an ``nnx.Param``), so that ``T`` stays positive during
    the unconstrained L-BFGS search; :attr:`temperature` reads ``T``.

    Args:
        dtype: Parameter and computation dtype.

    References:
        Guo et al., 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599.
    """

    def __init__(self, *, dtype: Any = jnp.float32) -> None:
        self.dtype = dtype
        self.log_temperature = nnx.Param(jnp.zeros((), dtype))

    @property
    def temperature(self) -> jax.Array:
        return jnp.exp(self.log_temperature[...])

    def logits(self, logits: Float[Array, "batch num_classes"]) -> jax.Array:
        """Calibrated logits ``z / T``, shape (batch, num_classes)."""
        return logits.astype(self.dtype) * jnp.exp(-self.log_temperature[...])


class _AffineHead(_GradientHead):
    """``W f(z) + b`` with Kull et al.'s ODIR penalty (off-diagonal and intercept L2)."""

    def __init__(
        self,
        num_classes: int,
        *,
        off_diagonal_l2: float = 1e-3,
        intercept_l2: float = 1e-3,
        dtype: Any = jnp.float32,
    ) -> None:
        checks.check_positive_int(num_classes, "num_classes")
        if num_classes < 2:
            raise ValueError(f"expected `num_classes` to be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.off_diagonal_l2 = float(off_diagonal_l2)
        self.intercept_l2 = float(intercept_l2)
        self.dtype = dtype
        self.weight = nnx.Param(jnp.eye(num_classes, dtype=dtype))
        self.bias = nnx.Param(jnp.zeros((num_classes,), dtype))

    def features(self, logits: jax.Array) -> jax.Array:
        raise NotImplementedError

    def logits(self, logits: Float[Array, "batch num_classes"]) -> jax.Array:
        """Calibrated logits ``f(z) W^T + b``, shape (batch, num_classes)."""
        return (
            self.features(logits.astype(self.dtype)) @ self.weight[...].T + self.bias[...][None, :]
        )

    def penalty(self) -> jax.Array:
        k = self.num_classes
        w = self.weight[...]
        off = jnp.sum(w * w) - jnp.sum(jnp.diag(w) ** 2)
        b = self.bias[...]
        return self.off_diagonal_l2 * off / (k * (k - 1)) + self.intercept_l2 * jnp.sum(b * b) / k


class MatrixScaling(_AffineHead):
    """Matrix scaling: ``softmax(W z + b)`` on the logits, with ODIR.

    The objective is the mean NLL plus Kull et al.'s off-diagonal and intercept regulariser:

    .. math:: \\lambda \\frac{1}{k(k-1)} \\sum_{i \\ne j} W_{ij}^2 + \\mu \\frac1k \\sum_j b_j^2

    with ``off_diagonal_l2`` = :math:`\\lambda` and ``intercept_l2`` = :math:`\\mu` (choose them
    by cross-validation, as the paper does: the 1e-3 defaults are weak, and with few rows per
    parameter the fit overfits; the diagonal is never penalised). ``W`` starts at the identity,
    ``b`` at zero.

    Args:
        num_classes: Number of classes ``k``.
        off_diagonal_l2: :math:`\\lambda`.
        intercept_l2: :math:`\\mu`.
        dtype: Parameter and computation dtype.

    Raises:
        ValueError: If ``num_classes`` is not an integer >= 2.

    References:
        Guo et al., 2017, arXiv:1706.04599; Kull et al., 2019, "Beyond temperature scaling",
        arXiv:1910.12656.
    """

    def features(self, logits: jax.Array) -> jax.Array:
        return logits


class VectorScaling(_AffineHead):
    """Vector scaling: ``softmax(w * z + b)``, a diagonal ``W`` (Guo et al. 2017).

    Args:
        num_classes: Number of classes ``k``.
        intercept_l2: Intercept L2 weight :math:`\\mu` (as in ODIR; 0 by default).
        dtype: Parameter and computation dtype.

    Raises:
        ValueError: If ``num_classes`` is not an integer >= 2.

    References:
        Guo et al., 2017, arXiv:1706.04599.
    """

    def __init__(
        self, num_classes: int, *, intercept_l2: float = 0.0, dtype: Any = jnp.float32
    ) -> None:
        super().__init__(num_classes, off_diagonal_l2=0.0, intercept_l2=intercept_l2, dtype=dtype)
        self.weight = nnx.Param(jnp.ones((num_classes,), dtype))

    def logits(self, logits: Float[Array, "batch num_classes"]) -> jax.Array:
        """Calibrated logits ``w * z + b``, shape (batch, num_classes)."""
        return logits.astype(self.dtype) * self.weight[...][None, :] + self.bias[...][None, :]

    def penalty(self) -> jax.Array:
        b = self.bias[...]
        return self.intercept_l2 * jnp.sum(b * b) / self.num_classes


class DirichletCalibration(_AffineHead):
    """Dirichlet calibration: matrix scaling of the log-probabilities, ``softmax(W log p + b)``.

    ``p = softmax(z)`` of the given logits; the objective is the mean NLL plus ODIR (see
    :class:`MatrixScaling`).

    Args:
        num_classes: Number of classes ``k``.
        off_diagonal_l2: :math:`\\lambda`.
        intercept_l2: :math:`\\mu`.
        dtype: Parameter and computation dtype.

    Raises:
        ValueError: If ``num_classes`` is not an integer >= 2.

    References:
        Kull et al., 2019, "Beyond temperature scaling: obtaining well-calibrated multi-class
        probabilities with Dirichlet calibration", arXiv:1910.12656.
    """

    def features(self, logits: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(logits, axis=-1)


class PlattScaling(_GradientHead):
    """Platt scaling of binary scores: ``P(y=1 | s) = sigmoid(a s + b)`` (Platt 1999).

    Fitted, as scikit-learn's ``CalibratedClassifierCV(method="sigmoid")``, on Platt's smoothed
    targets ``(n_+ + 1) / (n_+ + 2)`` for positives and ``1 / (n_- + 2)`` for negatives, starting
    from ``a = 0, b = log((n_+ + 1) / (n_- + 1))``. scikit-learn's ``(A, B)`` are ``(-a, -b)``.

    Args:
        dtype: Parameter and computation dtype.

    References:
        Platt, 1999, "Probabilistic Outputs for Support Vector Machines"; Lin et al., 2007.
    """

    binary = True

    def __init__(self, *, dtype: Any = jnp.float32) -> None:
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((), dtype))
        self.shift = nnx.Param(jnp.zeros((), dtype))

    def logits(self, scores: Float[Array, " batch"]) -> jax.Array:
        """Calibrated log-odds ``a s + b``, shape (batch,)."""
        return scores.astype(self.dtype) * self.scale[...] + self.shift[...]

    def _fit_targets(self, labels: jax.Array) -> jax.Array:
        pos = labels > 0
        n_pos = float(jnp.sum(pos))
        n_neg = float(labels.shape[0]) - n_pos
        self.scale[...] = jnp.zeros((), self.dtype)
        self.shift[...] = jnp.asarray(np.log((n_pos + 1.0) / (n_neg + 1.0)), self.dtype)
        hi = (n_pos + 1.0) / (n_pos + 2.0)
        lo = 1.0 / (n_neg + 2.0)
        return jnp.where(pos, hi, lo).astype(self.dtype)


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of ``y`` (float64, numpy)."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        means.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(means) > 1 and means[-2] >= means[-1]:
            m1, w1, s1 = means.pop(), weights.pop(), sizes.pop()
            wt = weights[-1] + w1
            means[-1] = (means[-1] * weights[-1] + m1 * w1) / wt
            weights[-1] = wt
            sizes[-1] += s1
    return np.repeat(np.asarray(means), sizes)


class IsotonicCalibration(nnx.Module):
    """Isotonic regression of binary labels on scores: a non-decreasing step-linear map.

    Not gradient-trained: ``fit`` runs pool-adjacent-violators on the host in float64 numpy (the
    number of pooled blocks depends on the data, which jit cannot express) and stores the fitted
    function's knots as :class:`CalibrationKnots`, padded to ``max_knots`` by repeating the last
    knot; ``__call__`` interpolates between the knots with ``jnp.interp`` (jit-able) and clips
    outside the fitted range, as scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``.
    Before ``fit`` it returns NaN.
    Equal scores are pooled first (weighted mean of their labels), and only the first and last
    knot of each plateau are kept, as scikit-learn does.

    Args:
        max_knots: Capacity of the knot arrays (fixed so the head can be checkpointed).
        dtype: Dtype of the knots.

    References:
        Zadrozny & Elkan, 2002, "Transforming classifier scores into accurate multiclass
        probability estimates".
    """

    binary = True

    def __init__(self, *, max_knots: int = 1024, dtype: Any = jnp.float32) -> None:
        checks.check_positive_int(max_knots, "max_knots")
        self.dtype = dtype
        self.max_knots = max_knots
        self.x_knots = CalibrationKnots(jnp.zeros((max_knots,), dtype))
        # NaN until fitted: an unfitted head must not return plausible probabilities.
        self.y_knots = CalibrationKnots(jnp.full((max_knots,), jnp.nan, dtype))

    def __call__(self, scores: Float[Array, " batch"]) -> jax.Array:
        """P(class 1) for each score, shape (batch,)."""
        return jnp.interp(scores.astype(self.dtype), self.x_knots[...], self.y_knots[...])

    _check = _GradientHead._check
    num_classes = None

    def evaluate(
        self, scores: jax.Array, labels: jax.Array, *, n_bins: int = 15
    ) -> CalibrationReport:
        """NLL and ECE of ``scores`` (read as log-odds) before and of this head's output after.

        Raises:
            TypeError: If ``scores`` is not floating or ``labels`` not integer.
            ValueError: If shapes disagree, there are fewer than 2 samples, ``scores`` holds
                NaN/Inf or ``labels`` are out of range.
        """
        self._check(scores, labels)
        s = jnp.asarray(scores, self.dtype)
        p = self(s)
        probs = jnp.stack([1 - p, p], axis=-1)
        labels = jnp.asarray(labels).astype(jnp.int32)
        return _report(_binary_logits(s), None, labels, n_bins=n_bins, probs_after=probs)

    def fit(self, scores: jax.Array, labels: jax.Array, *, n_bins: int = 15) -> CalibrationReport:
        """Fit the isotonic map on held-out ``scores`` and 0/1 ``labels``; return the report.

        Raises:
            TypeError: If ``scores`` is not floating or ``labels`` not integer.
            ValueError: If shapes disagree, there are fewer than 2 samples, ``scores`` holds
                NaN/Inf, ``labels`` are out of range, or the fit needs more than ``max_knots``
                knots.
        """
        self._check(scores, labels)
        s = np.asarray(scores, np.float64)
        y = np.asarray(labels, np.float64)
        order = np.lexsort((y, s))
        s, y = s[order], y[order]
        xs, start, counts = np.unique(s, return_index=True, return_counts=True)
        ys = np.add.reduceat(y, start) / counts
        fitted = _pool_adjacent_violators(ys, counts.astype(np.float64))
        keep = np.ones(len(xs), bool)
        if len(xs) > 2:
            flat = (fitted[1:-1] == fitted[:-2]) & (fitted[1:-1] == fitted[2:])
            keep[1:-1] = ~flat
        xs, fitted = xs[keep], fitted[keep]
        if len(xs) > self.max_knots:
            raise ValueError(
                f"expected the isotonic fit to need at most `max_knots`={self.max_knots} knots, "
                f"got {len(xs)} (build the head with a larger max_knots)"
            )
        pad = self.max_knots - len(xs)
        self.x_knots[...] = jnp.asarray(np.pad(xs, (0, pad), mode="edge"), self.dtype)
        self.y_knots[...] = jnp.asarray(np.pad(fitted, (0, pad), mode="edge"), self.dtype)
        return self.evaluate(scores, labels, n_bins=n_bins)
