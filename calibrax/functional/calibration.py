"""Calibration metrics: ECE, MCE, reliability-diagram data, Brier score and NLL.

Binned metrics look at a confidence and an outcome per sample:

- class probabilities (batch, num_classes), rows summing to 1: the confidence is the top
  probability and the outcome is whether the arg-max class is the target (top-label calibration,
  Guo et al., 2017);
- binary probabilities (batch,) of class 1: the confidence is that probability and the outcome is
  whether the target is 1 (as torchmetrics' ``binary_calibration_error``).

Bins are either ``"uniform"`` (equal width on [0, 1]: bin ``b`` holds confidences in
``[b / n_bins, (b + 1) / n_bins)``, the last bin also holds 1.0) or ``"quantile"`` (equal mass:
samples sorted by confidence are split into ``n_bins`` consecutive groups whose sizes differ by at
most one, larger groups first, as ``numpy.array_split``; tied confidences at a group border may fall
in different bins). The per-bin statistics are (count, sum of confidences, sum of outcomes).

References:
    Guo et al., 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599.
    Naeini et al., 2015, "Obtaining Well Calibrated Probabilities Using Bayesian Binning", AAAI.
    Nixon et al., 2019, "Measuring Calibration in Deep Learning", arXiv:1904.01685.
    Brier, 1950, "Verification of forecasts expressed in terms of probability", Monthly Weather
    Review 78(1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.functional.classification import _check_num_classes
from calibrax.functional.classification import _check_probabilistic
from calibrax.functional.classification import _check_targets
from calibrax.functional.classification import _count
from calibrax.functional.classification import _example_probabilities
from calibrax.functional.classification import _example_scores
from calibrax.functional.classification import _mean_compute

__all__ = [
    "ReliabilityDiagram",
    "brier_score",
    "expected_calibration_error",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
]

STRATEGIES = ("uniform", "quantile")


class ReliabilityDiagram(NamedTuple):
    """Per-bin data of a reliability diagram; every field has shape (n_bins,).

    Attributes:
        confidence: Mean confidence of the samples in each bin (0 for an empty bin).
        accuracy: Fraction of correct outcomes in each bin (0 for an empty bin).
        count: Number of samples in each bin (int32); check it before plotting empty bins.
    """

    confidence: jax.Array
    accuracy: jax.Array
    count: jax.Array


def _check_binning(n_bins: int, strategy: str) -> None:
    checks.check_positive_int(n_bins, "n_bins")
    checks.check_choice(strategy, STRATEGIES, "strategy")


def _confidence_and_outcome(probabilities, targets) -> tuple[jax.Array, jax.Array]:
    labels = targets.astype(jnp.int32)
    if probabilities.ndim == 1:
        return probabilities, (labels == 1).astype(probabilities.dtype)
    confidence = jnp.max(probabilities, axis=1)
    correct = jnp.argmax(probabilities, axis=1).astype(jnp.int32) == labels
    return confidence, correct.astype(probabilities.dtype)


def _uniform_bins(confidence: jax.Array, n_bins: int) -> jax.Array:
    return jnp.clip(jnp.floor(confidence * n_bins).astype(jnp.int32), 0, n_bins - 1)


def _quantile_bins(confidence: jax.Array, n_bins: int) -> jax.Array:
    n = confidence.shape[0]
    size, extra = divmod(n, n_bins)
    order = jnp.argsort(confidence, stable=True)
    rank = jnp.arange(n, dtype=jnp.int32)
    big = extra * (size + 1)
    sorted_bins = jnp.where(
        rank < big, rank // (size + 1), extra + (rank - big) // max(size, 1)
    ).astype(jnp.int32)
    return jnp.zeros(n, jnp.int32).at[order].set(sorted_bins)


def _calibration_update(
    probabilities, targets, n_bins: int, strategy: str = "uniform"
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-bin (count, sum of confidences, sum of outcomes), each of shape (n_bins,)."""
    confidence, outcome = _confidence_and_outcome(probabilities, targets)
    if strategy == "uniform":
        bins = _uniform_bins(confidence, n_bins)
    else:
        bins = _quantile_bins(confidence, n_bins)
    zeros = jnp.zeros(n_bins, confidence.dtype)
    return (
        jnp.zeros(n_bins, jnp.int32).at[bins].add(1),
        zeros.at[bins].add(confidence),
        zeros.at[bins].add(outcome),
    )


def _ece_compute(count, sum_confidence, sum_outcome) -> jax.Array:
    """``sum_b (n_b / n) |acc_b - conf_b| = sum_b |sum_outcome_b - sum_conf_b| / n``."""
    n = jnp.sum(count).astype(sum_confidence.dtype)
    return jnp.sum(jnp.abs(sum_outcome - sum_confidence)) / n


def _mce_compute(count, sum_confidence, sum_outcome) -> jax.Array:
    """Largest ``|acc_b - conf_b|`` over the non-empty bins."""
    filled = count > 0
    n_b = jnp.where(filled, count, 1).astype(sum_confidence.dtype)
    gap = jnp.abs(sum_outcome - sum_confidence) / n_b
    return jnp.max(jnp.where(filled, gap, 0))


def _reliability_compute(count, sum_confidence, sum_outcome) -> ReliabilityDiagram:
    filled = count > 0
    n_b = jnp.where(filled, count, 1).astype(sum_confidence.dtype)
    return ReliabilityDiagram(
        confidence=jnp.where(filled, sum_confidence / n_b, 0),
        accuracy=jnp.where(filled, sum_outcome / n_b, 0),
        count=count,
    )


def _example_binned(fn):
    return (lambda p, t: fn(p, t, n_bins=5)), _example_probabilities(32)


_BINNED_ARGS = """Args:
        predictions: Class probabilities of shape (batch, num_classes) whose rows sum to 1, or
            binary probabilities of class 1 of shape (batch,); see the module docstring.
        targets: Integer labels of shape (batch,).
        n_bins: Number of bins.
        strategy: "uniform" (equal width) or "quantile" (equal mass)."""

_BINNED_RAISES = """Raises:
        TypeError: If ``predictions`` is not floating or ``targets`` not integer.
        ValueError: If shapes are wrong, ``n_bins``/``strategy`` is invalid, inputs are empty, or
            (eagerly) probabilities are outside [0, 1], rows do not sum to 1, values are NaN/Inf
            or labels are out of range."""


@checks.nan_if_invalid
def expected_calibration_error(
    predictions: jax.Array,
    targets: Int[Array, " batch"],
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
) -> jax.Array:
    _check_binning(n_bins, strategy)
    _check_probabilistic(predictions, targets)
    return _ece_compute(*_calibration_update(predictions, targets, n_bins, strategy))


@checks.nan_if_invalid
def maximum_calibration_error(
    predictions: jax.Array,
    targets: Int[Array, " batch"],
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
) -> jax.Array:
    _check_binning(n_bins, strategy)
    _check_probabilistic(predictions, targets)
    return _mce_compute(*_calibration_update(predictions, targets, n_bins, strategy))


@checks.nan_if_invalid
def reliability_diagram(
    predictions: jax.Array,
    targets: Int[Array, " batch"],
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
) -> ReliabilityDiagram:
    _check_binning(n_bins, strategy)
    _check_probabilistic(predictions, targets)
    return _reliability_compute(*_calibration_update(predictions, targets, n_bins, strategy))


expected_calibration_error.__doc__ = f"""Expected calibration error (ECE, L1 norm).

    .. math:: \\mathrm{{ECE}} = \\sum_b \\frac{{n_b}}{{n}} |\\mathrm{{acc}}_b - \\mathrm{{conf}}_b|

    With uniform bins this equals torchmetrics' ``calibration_error(norm="l1")`` (except that a
    confidence of exactly 1.0 falls in the last bin here; torchmetrics gives it a bin of its own).

    {_BINNED_ARGS}

    Returns:
        Scalar in [0, 1], in the dtype of ``predictions``.

    {_BINNED_RAISES}

    References:
        Naeini et al., 2015; Guo et al., 2017, arXiv:1706.04599; Nixon et al., 2019,
        arXiv:1904.01685 (equal-mass bins).
"""

maximum_calibration_error.__doc__ = f"""Maximum calibration error (MCE): the largest bin gap.

    .. math:: \\mathrm{{MCE}} = \\max_{{b: n_b > 0}} |\\mathrm{{acc}}_b - \\mathrm{{conf}}_b|

    With uniform bins this equals torchmetrics' ``calibration_error(norm="max")`` (up to the
    handling of a confidence of exactly 1.0, see :func:`expected_calibration_error`).

    {_BINNED_ARGS}

    Returns:
        Scalar in [0, 1], in the dtype of ``predictions``.

    {_BINNED_RAISES}

    References:
        Naeini et al., 2015; Guo et al., 2017, arXiv:1706.04599.
"""

reliability_diagram.__doc__ = f"""Reliability-diagram data: per-bin mean confidence, accuracy and count.

    Shapes are fixed by ``n_bins``, so it jits. Empty bins report confidence and accuracy 0 with
    count 0.

    {_BINNED_ARGS}

    Returns:
        A :class:`ReliabilityDiagram` of three arrays of shape (n_bins,).

    {_BINNED_RAISES}

    References:
        Guo et al., 2017, arXiv:1706.04599.
"""

# Registered after the docstrings are set, so the registry sees their first lines.
register(
    "expected_calibration_error",
    kind="function",
    tier=0,
    domain="calibration",
    higher_is_better=False,
    example=lambda: _example_binned(expected_calibration_error),
)(expected_calibration_error)
register(
    "maximum_calibration_error",
    kind="function",
    tier=0,
    domain="calibration",
    higher_is_better=False,
    example=lambda: _example_binned(maximum_calibration_error),
)(maximum_calibration_error)
register(
    "reliability_diagram",
    kind="statistic",
    tier=0,
    domain="calibration",
    example=lambda: _example_binned(reliability_diagram),
)(reliability_diagram)


# --------------------------------------------------------------------------- Brier score
def _brier_update(probabilities, targets) -> tuple[jax.Array, jax.Array]:
    labels = targets.astype(jnp.int32)
    if probabilities.ndim == 1:
        outcome = (labels == 1).astype(probabilities.dtype)
        per_sample = jnp.square(probabilities - outcome)
    else:
        onehot = jax.nn.one_hot(labels, probabilities.shape[1], dtype=probabilities.dtype)
        per_sample = jnp.sum(jnp.square(probabilities - onehot), axis=1)
    return jnp.sum(per_sample), _count(targets)


@register(
    "brier_score",
    kind="function",
    tier=0,
    domain="calibration",
    higher_is_better=False,
    differentiable=True,
    example=lambda: (brier_score, _example_probabilities()),
)
def brier_score(predictions: jax.Array, targets: Int[Array, " batch"]) -> jax.Array:
    """Brier score: mean squared distance between probabilities and the one-hot outcome.

    Binary probabilities (batch,) give :math:`\\frac1n \\sum_i (p_i - y_i)^2` in [0, 1] (as
    scikit-learn's ``brier_score_loss``). Class probabilities (batch, num_classes) give Brier's
    original multiclass score :math:`\\frac1n \\sum_i \\sum_c (p_{ic} - [y_i = c])^2` in [0, 2],
    never halved (scikit-learn halves it when ``num_classes == 2``).

    Args:
        predictions: Binary probabilities (batch,) or class probabilities (batch, num_classes)
            whose rows sum to 1.
        targets: Integer labels of shape (batch,).

    Returns:
        Scalar, in the dtype of ``predictions``.

    Raises:
        TypeError: If ``predictions`` is not floating or ``targets`` not integer.
        ValueError: If shapes are wrong, inputs are empty, or (eagerly) probabilities are outside
            [0, 1], rows do not sum to 1, values are NaN/Inf or labels are out of range.

    References:
        Brier, 1950, Monthly Weather Review 78(1).
    """
    _check_probabilistic(predictions, targets)
    return _mean_compute(*_brier_update(predictions, targets))


# --------------------------------------------------------------------------- NLL
def _check_logits(logits, targets) -> None:
    checks.check_floating(logits, "predictions")
    checks.check_rank(logits, 2, "predictions", "batch, num_classes")
    _check_targets(targets)
    checks.check_same_length(logits, targets, "predictions", "targets")
    _check_num_classes(logits.shape[1])
    checks.check_finite(logits, "predictions")
    checks.check_labels_in_range(targets, logits.shape[1], "targets")


def _nll_update(logits, targets) -> tuple[jax.Array, jax.Array]:
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    labels = targets.astype(jnp.int32)[:, None]
    return -jnp.sum(jnp.take_along_axis(log_probs, labels, axis=1)), _count(targets)


@register(
    "negative_log_likelihood",
    kind="function",
    tier=0,
    domain="calibration",
    higher_is_better=False,
    differentiable=True,
    example=lambda: (negative_log_likelihood, _example_scores()),
)
def negative_log_likelihood(
    predictions: Float[Array, "batch num_classes"], targets: Int[Array, " batch"]
) -> jax.Array:
    """Mean negative log-likelihood of the targets under softmax of the logits.

    .. math:: \\mathrm{NLL} = -\\frac1n \\sum_i \\log \\mathrm{softmax}(z_i)_{y_i}

    Computed with a stable log-softmax, without clipping (the cross-entropy of
    ``torch.nn.functional.cross_entropy``). For probabilities use
    :func:`calibrax.functional.log_loss`.

    Args:
        predictions: Logits of shape (batch, num_classes).
        targets: Integer labels of shape (batch,).

    Returns:
        Scalar, in the dtype of ``predictions``.

    Raises:
        TypeError: If ``predictions`` is not floating or ``targets`` not integer.
        ValueError: If shapes are wrong, inputs are empty, or (eagerly) logits hold NaN/Inf or
            labels are out of range.

    References:
        Guo et al., 2017, arXiv:1706.04599.
    """
    _check_logits(predictions, targets)
    return _mean_compute(*_nll_update(predictions, targets))
