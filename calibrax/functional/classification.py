"""Classification metrics: accuracy, top-k accuracy, confusion matrix, precision/recall/F1, AUROC,
log loss.

Predictions follow one convention everywhere (:func:`predicted_labels`):

- an integer array of shape (batch,) holds predicted class labels;
- a floating array of shape (batch, num_classes) holds per-class scores (logits or
  probabilities); the predicted class is the arg-max, the lowest index on ties;
- a floating array of shape (batch,) holds binary scores for class 1; the predicted class is 1
  where ``score >= threshold`` (default 0.5 for probabilities; pass 0.0 for logits).

Targets are always integer class labels of shape (batch,).

Each metric is an ``_*_update`` (batch to sufficient statistics) and ``_*_compute`` (statistics to
score) pair shared with the streaming classes in :mod:`calibrax.metrics.classification`.
Label ranges and NaN/Inf are checked eagerly; under ``jax.jit`` they cannot be (see
:mod:`calibrax.core.checks`), so jitted callers must pass valid labels: out-of-range labels give
meaningless counts there rather than an error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register

__all__ = [
    "accuracy",
    "auroc",
    "confusion_matrix",
    "f1_score",
    "log_loss",
    "precision",
    "predicted_labels",
    "recall",
    "top_k_accuracy",
]

AVERAGES = ("binary", "micro", "macro", "weighted", None)
AUROC_AVERAGES = ("macro", "weighted")


def _ratio_dtype() -> jnp.dtype:
    """float64 when x64 is enabled, else float32: the dtype of count-based ratios."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _is_float(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.floating)


# --------------------------------------------------------------------------- validation
def _check_targets(targets) -> None:
    checks.check_integer(targets, "targets")
    checks.check_rank(targets, 1, "targets", "batch")
    checks.check_nonempty(targets, "targets")


def _check_num_classes(num_classes: int) -> None:
    checks.check_positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise ValueError(f"expected `num_classes` to be at least 2, got {num_classes}")


def _check_predictions(predictions, targets, num_classes: int | None) -> int | None:
    """Validate labels or scores against ``targets``; return the number of classes (None for
    integer predictions without ``num_classes``)."""
    _check_targets(targets)
    dtype = np.dtype(predictions.dtype)
    if jnp.issubdtype(dtype, jnp.integer) or dtype == np.bool_:
        checks.check_rank(predictions, 1, "predictions", "batch")
        checks.check_same_shape(predictions, targets, "predictions", "targets")
        if num_classes is not None:
            checks.check_labels_in_range(predictions, num_classes, "predictions")
            checks.check_labels_in_range(targets, num_classes, "targets")
        return num_classes
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"expected `predictions` to have an integer or floating dtype, got {dtype}")
    checks.check_ndim_in(predictions, (1, 2), "predictions")
    checks.check_same_length(predictions, targets, "predictions", "targets")
    if predictions.ndim == 1:
        if num_classes is not None and num_classes != 2:
            raise ValueError(
                f"expected `num_classes` to be 2 for binary scores of shape (batch,), "
                f"got {num_classes}"
            )
        found = 2
    else:
        found = predictions.shape[1]
        if num_classes is not None:
            checks.check_dim(predictions, 1, num_classes, "predictions", "num_classes")
        else:
            _check_num_classes(found)
    checks.check_finite(predictions, "predictions")
    checks.check_labels_in_range(targets, found, "targets")
    return found


def _check_scores(predictions, targets) -> int:
    """Floating scores of shape (batch, num_classes) and labels; return num_classes."""
    checks.check_floating(predictions, "predictions")
    checks.check_rank(predictions, 2, "predictions", "batch, num_classes")
    return _check_predictions(predictions, targets, None)


def _check_probabilistic(probabilities, targets) -> int:
    """Binary probabilities (batch,) or rows of (batch, num_classes) summing to 1."""
    checks.check_floating(probabilities, "predictions")
    checks.check_ndim_in(probabilities, (1, 2), "predictions")
    _check_targets(targets)
    checks.check_same_length(probabilities, targets, "predictions", "targets")
    if probabilities.ndim == 1:
        checks.check_probabilities(probabilities, "predictions", axis=None)
        num_classes = 2
    else:
        num_classes = probabilities.shape[1]
        _check_num_classes(num_classes)
        checks.check_probabilities(probabilities, "predictions", axis=-1)
    checks.check_labels_in_range(targets, num_classes, "targets")
    return num_classes


def _check_average(average, choices=AVERAGES) -> None:
    checks.check_choice(average, choices, "average")


def _check_two_classes_present(targets) -> None:
    """AUROC needs positives and negatives: at least 2 distinct target classes (recorded under
    tracing)."""
    if not checks.is_concrete(targets):
        labels = jnp.asarray(targets)
        checks.require(
            jnp.any(labels != labels[0]), "expected `targets` to contain at least 2 classes"
        )
        return
    present = np.unique(np.asarray(targets))
    if present.size < 2:
        raise ValueError(
            f"expected `targets` to contain at least 2 classes, got only class {int(present[0])}"
        )


# --------------------------------------------------------------------------- helpers
def predicted_labels(predictions: jax.Array, *, threshold: float = 0.5) -> Int[Array, " batch"]:
    """Predicted class labels (int32, shape (batch,)) under the module's convention.

    Args:
        predictions: Integer labels (batch,), binary scores (batch,) or class scores
            (batch, num_classes).
        threshold: Binary scores ``>= threshold`` predict class 1.

    Returns:
        int32 array of shape (batch,).
    """
    if not _is_float(predictions):
        return predictions.astype(jnp.int32)
    if predictions.ndim == 1:
        return (predictions >= threshold).astype(jnp.int32)
    return jnp.argmax(predictions, axis=-1).astype(jnp.int32)


def _count(x) -> jax.Array:
    return jnp.asarray(x.shape[0], jnp.int32)


def _ratio_compute(correct: jax.Array, count: jax.Array) -> jax.Array:
    dtype = _ratio_dtype()
    return correct.astype(dtype) / count.astype(dtype)


def _example_scores(n: int = 16, num_classes: int = 4):
    kp, kt = jax.random.split(jax.random.key(0))
    scores = jax.random.normal(kp, (n, num_classes), jnp.float32)
    labels = jax.random.randint(kt, (n,), 0, num_classes, jnp.int32)
    return scores, labels


def _example_probabilities(n: int = 16, num_classes: int = 4):
    scores, labels = _example_scores(n, num_classes)
    return jax.nn.softmax(scores, axis=-1), labels


# --------------------------------------------------------------------------- accuracy
def _accuracy_update(predictions, targets, threshold=0.5) -> tuple[jax.Array, jax.Array]:
    hits = predicted_labels(predictions, threshold=threshold) == targets.astype(jnp.int32)
    return jnp.sum(hits, dtype=jnp.int32), _count(targets)


def _top_k_update(predictions, targets, k: int) -> tuple[jax.Array, jax.Array]:
    labels = targets.astype(jnp.int32)[:, None]
    true_score = jnp.take_along_axis(predictions, labels, axis=1)
    classes = jnp.arange(predictions.shape[1], dtype=jnp.int32)[None, :]
    # Classes ranked ahead of the true one: higher score, or equal score and lower index.
    ahead = (predictions > true_score) | ((predictions == true_score) & (classes < labels))
    hits = jnp.sum(ahead, axis=1) < k
    return jnp.sum(hits, dtype=jnp.int32), _count(targets)


@register(
    "accuracy",
    kind="function",
    tier=0,
    domain="classification",
    higher_is_better=True,
    example=lambda: (accuracy, _example_scores()),
)
def accuracy(
    predictions: jax.Array, targets: Int[Array, " batch"], *, threshold: float = 0.5
) -> jax.Array:
    """Fraction of samples whose predicted class equals the target.

    Args:
        predictions: Integer labels (batch,), binary scores (batch,) or class scores
            (batch, num_classes); see the module docstring.
        targets: Integer labels of shape (batch,).
        threshold: Binary scores ``>= threshold`` predict class 1.

    Returns:
        Scalar in [0, 1] (float64 with x64 enabled, else float32).

    Raises:
        TypeError: If ``targets`` is not integer or ``predictions`` is neither integer nor floating.
        ValueError: If shapes or ranks are wrong, inputs are empty, or (eagerly) scores hold
            NaN/Inf or targets are outside the classes of the scores.
    """
    _check_predictions(predictions, targets, None)
    return _ratio_compute(*_accuracy_update(predictions, targets, threshold))


@register(
    "top_k_accuracy",
    kind="function",
    tier=0,
    domain="classification",
    higher_is_better=True,
    example=lambda: ((lambda p, t: top_k_accuracy(p, t, k=2)), _example_scores()),
)
def top_k_accuracy(
    predictions: Float[Array, "batch num_classes"], targets: Int[Array, " batch"], *, k: int = 1
) -> jax.Array:
    """Fraction of samples whose target is among the ``k`` highest-scored classes.

    Ties are broken by class index (lower index ranks first, as ``jax.lax.top_k`` and arg-max), so
    ``k=1`` equals :func:`accuracy` on the same scores. scikit-learn's ``top_k_accuracy_score``
    breaks ties differently; the two agree whenever scores have no ties.

    Args:
        predictions: Floating scores (logits or probabilities) of shape (batch, num_classes).
        targets: Integer labels of shape (batch,).
        k: Number of top classes that count as a hit, ``1 <= k <= num_classes``.

    Returns:
        Scalar in [0, 1] (float64 with x64 enabled, else float32).

    Raises:
        TypeError: If ``predictions`` is not floating or ``targets`` not integer.
        ValueError: If shapes are wrong, ``k`` is out of range, inputs are empty, or (eagerly)
            scores hold NaN/Inf or targets are out of range.
    """
    num_classes = _check_scores(predictions, targets)
    checks.check_k(k, num_classes)
    return _ratio_compute(*_top_k_update(predictions, targets, k))


# --------------------------------------------------------------------------- confusion matrix
def _confusion_matrix_update(predictions, targets, num_classes: int, threshold=0.5) -> jax.Array:
    pred = predicted_labels(predictions, threshold=threshold)
    cm = jnp.zeros((num_classes, num_classes), jnp.int32)
    return cm.at[targets.astype(jnp.int32), pred].add(1, mode="drop")


@register(
    "confusion_matrix",
    kind="statistic",
    tier=0,
    domain="classification",
    example=lambda: ((lambda p, t: confusion_matrix(p, t, num_classes=4)), _example_scores()),
)
def confusion_matrix(
    predictions: jax.Array,
    targets: Int[Array, " batch"],
    *,
    num_classes: int,
    threshold: float = 0.5,
) -> Int[Array, "num_classes num_classes"]:
    """Confusion matrix: entry ``[i, j]`` counts samples of true class ``i`` predicted as ``j``.

    The convention of scikit-learn (rows are targets, columns predictions). The shape is fixed by
    ``num_classes`` so it jits.

    Args:
        predictions: Integer labels (batch,), binary scores (batch,) or class scores
            (batch, num_classes).
        targets: Integer labels of shape (batch,).
        num_classes: Number of classes (at least 2).
        threshold: Binary scores ``>= threshold`` predict class 1.

    Returns:
        int32 array of shape (num_classes, num_classes).

    Raises:
        TypeError: If a dtype is wrong.
        ValueError: If shapes are wrong, ``num_classes`` is invalid, inputs are empty, or
            (eagerly) labels are outside ``[0, num_classes)`` or scores hold NaN/Inf.
    """
    _check_num_classes(num_classes)
    _check_predictions(predictions, targets, num_classes)
    return _confusion_matrix_update(predictions, targets, num_classes, threshold)


def _safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den``, and 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0).astype(num.dtype)


def _per_class(metric: str, tp, fp, fn) -> jax.Array:
    if metric == "precision":
        return _safe_divide(tp, tp + fp)
    if metric == "recall":
        return _safe_divide(tp, tp + fn)
    return _safe_divide(2 * tp, 2 * tp + fp + fn)


def _prf_compute(cm: jax.Array, metric: str, average: str | None) -> jax.Array:
    """Precision, recall or F1 from a confusion matrix under one averaging rule."""
    cm = cm.astype(_ratio_dtype())
    tp = jnp.diagonal(cm)
    support = jnp.sum(cm, axis=1)
    fp = jnp.sum(cm, axis=0) - tp
    fn = support - tp
    if average == "micro":
        return _per_class(metric, jnp.sum(tp), jnp.sum(fp), jnp.sum(fn))
    scores = _per_class(metric, tp, fp, fn)
    if average is None:
        return scores
    if average == "binary":
        return scores[1]
    if average == "weighted":
        return _safe_divide(jnp.sum(scores * support), jnp.sum(support))
    # macro: over the classes that occur in the targets or the predictions (as scikit-learn).
    present = (tp + fp + fn) > 0
    return _safe_divide(jnp.sum(jnp.where(present, scores, 0)), jnp.sum(present).astype(tp.dtype))


def _check_prf(predictions, targets, num_classes, average) -> None:
    _check_num_classes(num_classes)
    _check_average(average)
    if average == "binary" and num_classes != 2:
        raise ValueError(f"expected `num_classes` to be 2 with average='binary', got {num_classes}")
    _check_predictions(predictions, targets, num_classes)


_PRF_DOC = """{title}.

    Per class, {formula}; a zero denominator gives 0 (scikit-learn's ``zero_division=0``).
    ``average`` combines the classes:

    - ``"binary"`` (``num_classes == 2``): the score of class 1;
    - ``"micro"``: from the total true/false positives/negatives (for single-label data,
      micro precision = recall = F1 = accuracy);
    - ``"macro"``: unweighted mean over the classes that occur in the targets or the predictions
      (as scikit-learn with ``labels=None``);
    - ``"weighted"``: mean weighted by each class's number of targets;
    - ``None``: the per-class scores, shape (num_classes,).

    Args:
        predictions: Integer labels (batch,), binary scores (batch,) or class scores
            (batch, num_classes); see the module docstring.
        targets: Integer labels of shape (batch,).
        num_classes: Number of classes (at least 2).
        average: One of "binary", "micro", "macro", "weighted" or None.
        threshold: Binary scores ``>= threshold`` predict class 1.

    Returns:
        Scalar (or (num_classes,) for ``average=None``) in [0, 1].

    Raises:
        TypeError: If a dtype is wrong.
        ValueError: If shapes are wrong, ``average``/``num_classes`` is invalid, inputs are empty,
            or (eagerly) labels are out of range or scores hold NaN/Inf.
"""


def _prf_example(fn):
    return (lambda p, t: fn(p, t, num_classes=4)), _example_scores()


@checks.nan_if_invalid
def precision(
    predictions: jax.Array,
    targets: Int[Array, " batch"],
    *,
    num_classes: int,
    average: str | None = "macro",
    threshold: float = 0.5,
) -> jax.Array:
    _check_prf(predictions, targets, num_classes, average)
    cm = _confusion_matrix_update(predictions, targets, num_classes, threshold)
    return _prf_compute(cm, "precision", average)


@checks.nan_if_invalid
def recall(
    predictions: jax.Array,
    targets: Int[Array, " batch"],
    *,
    num_classes: int,
    average: str | None = "macro",
    threshold: float = 0.5,
) -> jax.Array:
    _check_prf(predictions, targets, num_classes, average)
    cm = _confusion_matrix_update(predictions, targets, num_classes, threshold)
    return _prf_compute(cm, "recall", average)


@checks.nan_if_invalid
def f1_score(
    predictions: jax.Array,
    targets: Int[Array, " batch"],
    *,
    num_classes: int,
    average: str | None = "macro",
    threshold: float = 0.5,
) -> jax.Array:
    _check_prf(predictions, targets, num_classes, average)
    cm = _confusion_matrix_update(predictions, targets, num_classes, threshold)
    return _prf_compute(cm, "f1", average)


precision.__doc__ = _PRF_DOC.format(title="Precision", formula="``tp / (tp + fp)``")
recall.__doc__ = _PRF_DOC.format(title="Recall", formula="``tp / (tp + fn)``")
f1_score.__doc__ = _PRF_DOC.format(
    title="F1 score, the harmonic mean of precision and recall",
    formula="``2 tp / (2 tp + fp + fn)``",
)

# Registered after the docstrings are set, so the registry sees their first lines.
register(
    "precision",
    kind="function",
    tier=0,
    domain="classification",
    higher_is_better=True,
    example=lambda: _prf_example(precision),
)(precision)
register(
    "recall",
    kind="function",
    tier=0,
    domain="classification",
    higher_is_better=True,
    example=lambda: _prf_example(recall),
)(recall)
register(
    "f1_score",
    kind="function",
    tier=0,
    domain="classification",
    higher_is_better=True,
    example=lambda: _prf_example(f1_score),
)(f1_score)


# --------------------------------------------------------------------------- AUROC
def _binary_auroc(scores: jax.Array, positive: jax.Array) -> jax.Array:
    """Exact ROC AUC of 1-D ``scores``; NaN without both positives and negatives.

    The area under the trapezoidal ROC curve equals the Mann-Whitney statistic
    ``P(s_pos > s_neg) + P(s_pos == s_neg) / 2``, which counts tied pairs as half. Counting, for
    each positive, the negatives below and at its score takes two binary searches in the sorted
    negative scores: O(n log n) and static shapes.
    """
    dtype = scores.dtype
    negatives = jnp.sort(jnp.where(positive, jnp.inf, scores))
    below = jnp.searchsorted(negatives, scores, side="left")
    up_to = jnp.searchsorted(negatives, scores, side="right")
    twice_wins = jnp.sum(jnp.where(positive, (below + up_to).astype(dtype), 0))
    n_pos = jnp.sum(positive).astype(dtype)
    n_neg = positive.shape[0] - n_pos
    pairs = n_pos * n_neg
    return jnp.where(pairs > 0, twice_wins / (2 * jnp.where(pairs > 0, pairs, 1)), jnp.nan)


def _auroc_compute(predictions, targets, average: str = "macro") -> jax.Array:
    labels = targets.astype(jnp.int32)
    if predictions.ndim == 1:
        return _binary_auroc(predictions, labels == 1)
    classes = jnp.arange(predictions.shape[1], dtype=jnp.int32)
    positive = labels[None, :] == classes[:, None]
    per_class = jax.vmap(_binary_auroc)(predictions.T, positive)
    defined = ~jnp.isnan(per_class)
    if average == "weighted":
        weights = jnp.where(defined, jnp.sum(positive, axis=1), 0).astype(per_class.dtype)
    else:
        weights = defined.astype(per_class.dtype)
    total = jnp.sum(jnp.where(defined, per_class * weights, 0))
    wsum = jnp.sum(weights)
    return jnp.where(wsum > 0, total / jnp.where(wsum > 0, wsum, 1), jnp.nan)


@register(
    "auroc",
    kind="function",
    tier=0,
    domain="classification",
    higher_is_better=True,
    example=lambda: (auroc, _example_scores()),
)
def auroc(
    predictions: jax.Array, targets: Int[Array, " batch"], *, average: str = "macro"
) -> jax.Array:
    """Area under the ROC curve, exact, with ties counted as half (as ``roc_auc_score``).

    Binary scores (batch,) with targets in {0, 1} give the binary AUROC. Class scores
    (batch, num_classes) give one-vs-rest AUROC per class, averaged with ``"macro"`` (unweighted)
    or ``"weighted"`` (by the number of targets of each class). Scores need not be probabilities.

    Undefined cases: the targets must contain at least 2 classes (checked eagerly; under
    ``jax.jit`` a single class gives NaN). In the multiclass case a class that never occurs in the
    targets has no one-vs-rest AUROC and is left out of the average (scikit-learn refuses such
    input).

    Args:
        predictions: Floating scores of shape (batch,) or (batch, num_classes).
        targets: Integer labels of shape (batch,).
        average: "macro" or "weighted" (multiclass only).

    Returns:
        Scalar in [0, 1], in the dtype of ``predictions``.

    Raises:
        TypeError: If ``predictions`` is not floating or ``targets`` not integer.
        ValueError: If shapes are wrong, ``average`` is invalid, inputs are empty, or (eagerly)
            scores hold NaN/Inf, labels are out of range or only one class occurs.
    """
    checks.check_floating(predictions, "predictions")
    _check_average(average, AUROC_AVERAGES)
    _check_predictions(predictions, targets, None)
    _check_two_classes_present(targets)
    return _auroc_compute(predictions, targets, average)


# --------------------------------------------------------------------------- log loss
def _true_class_probability(probabilities, targets) -> jax.Array:
    labels = targets.astype(jnp.int32)
    if probabilities.ndim == 1:
        return jnp.where(labels == 1, probabilities, 1 - probabilities)
    return jnp.take_along_axis(probabilities, labels[:, None], axis=1)[:, 0]


def _log_loss_update(probabilities, targets) -> tuple[jax.Array, jax.Array]:
    eps = jnp.finfo(probabilities.dtype).eps
    p = jnp.clip(_true_class_probability(probabilities, targets), eps, 1 - eps)
    return -jnp.sum(jnp.log(p)), _count(targets)


def _mean_compute(total: jax.Array, count: jax.Array) -> jax.Array:
    return total / count.astype(total.dtype)


@register(
    "log_loss",
    kind="function",
    tier=0,
    domain="classification",
    higher_is_better=False,
    differentiable=True,
    example=lambda: (log_loss, _example_probabilities()),
)
def log_loss(predictions: jax.Array, targets: Int[Array, " batch"]) -> jax.Array:
    """Log loss (cross-entropy) of predicted probabilities, as scikit-learn's ``log_loss``.

    .. math:: -\\frac{1}{n} \\sum_i \\log \\mathrm{clip}(p_{i, y_i}, \\epsilon, 1 - \\epsilon)

    with :math:`\\epsilon` the machine epsilon of the dtype. For logits use
    :func:`calibrax.functional.negative_log_likelihood`.

    Args:
        predictions: Probabilities of class 1, shape (batch,), or class probabilities of shape
            (batch, num_classes) whose rows sum to 1.
        targets: Integer labels of shape (batch,).

    Returns:
        Scalar, in the dtype of ``predictions``.

    Raises:
        TypeError: If ``predictions`` is not floating or ``targets`` not integer.
        ValueError: If shapes are wrong, inputs are empty, or (eagerly) probabilities are outside
            [0, 1], rows do not sum to 1, values are NaN/Inf or labels are out of range.
    """
    _check_probabilistic(predictions, targets)
    return _mean_compute(*_log_loss_update(predictions, targets))
