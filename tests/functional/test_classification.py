"""Classification functions: hand-computed values, conventions, edge cases, jit, gradients and the
exact error messages. Parity with scikit-learn/torchmetrics is in
tests/reference/test_classification_reference.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import calibrax.functional as F

LABELS = jnp.array([0, 1, 2, 2, 1], jnp.int32)
PRED = jnp.array([0, 2, 2, 1, 1], jnp.int32)
SCORES = jnp.array(
    [[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 0.0, 1.0], [0.0, 2.0, 1.0], [0.5, 0.9, 0.1]],
    jnp.float32,
)  # arg-max of each row equals PRED


def test_accuracy_from_labels_scores_and_binary_scores():
    assert F.accuracy(PRED, LABELS) == pytest.approx(0.6)
    assert F.accuracy(SCORES, LABELS) == pytest.approx(0.6)
    binary = jnp.array([0.2, 0.5, 0.7, 0.4], jnp.float32)
    y = jnp.array([0, 1, 0, 1], jnp.int32)
    # 0.5 >= 0.5 predicts class 1: hits at 0 and 1 -> 0.5; with logits pass threshold=0
    assert F.accuracy(binary, y) == pytest.approx(0.5)
    assert F.accuracy(binary - 0.5, y, threshold=0.0) == pytest.approx(0.5)


def test_argmax_and_top_k_break_ties_by_lower_index():
    tied = jnp.array([[1.0, 1.0, 0.0]], jnp.float32)
    assert F.predicted_labels(tied) == 0
    assert F.top_k_accuracy(tied, jnp.array([1], jnp.int32), k=1) == 0.0
    assert F.top_k_accuracy(tied, jnp.array([1], jnp.int32), k=2) == 1.0
    assert F.top_k_accuracy(tied, jnp.array([0], jnp.int32), k=1) == 1.0
    # k=1 equals accuracy on the same scores
    assert F.top_k_accuracy(SCORES, LABELS, k=1) == F.accuracy(SCORES, LABELS)
    assert F.top_k_accuracy(SCORES, LABELS, k=3) == 1.0


def test_top_k_by_hand():
    # true-class ranks (0-based): row0 0, row1 1, row2 0, row3 1 (score 1 vs 2), row4 0
    assert F.top_k_accuracy(SCORES, LABELS, k=2) == 1.0
    # labels 2, 0, 0, 0, 2 have ranks 2, 2, 1 (class 2 ahead, tied class 1 behind), 2, 2
    other = jnp.array([2, 0, 0, 0, 2], jnp.int32)
    assert F.top_k_accuracy(SCORES, other, k=2) == pytest.approx(0.2)


def test_confusion_matrix_by_hand():
    expected = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(F.confusion_matrix(PRED, LABELS, num_classes=3), expected)
    np.testing.assert_array_equal(F.confusion_matrix(SCORES, LABELS, num_classes=3), expected)
    cm = F.confusion_matrix(PRED, LABELS, num_classes=4)
    assert cm.shape == (4, 4) and cm.dtype == jnp.int32 and int(cm.sum()) == 5


def test_precision_recall_f1_by_hand():
    # per class tp/fp/fn: c0 1/0/0, c1 1/1/1, c2 1/1/1 -> P = R = F1 = (1, .5, .5)
    for fn in (F.precision, F.recall, F.f1_score):
        np.testing.assert_allclose(fn(PRED, LABELS, num_classes=3, average=None), [1, 0.5, 0.5])
        np.testing.assert_allclose(fn(PRED, LABELS, num_classes=3), 2 / 3)
        np.testing.assert_allclose(fn(PRED, LABELS, num_classes=3, average="micro"), 0.6)
        # supports 1, 2, 2
        np.testing.assert_allclose(fn(PRED, LABELS, num_classes=3, average="weighted"), 0.6)


def test_macro_skips_classes_absent_from_targets_and_predictions():
    # class 3 never occurs: it is left out of the macro mean (as scikit-learn with labels=None)
    np.testing.assert_allclose(F.f1_score(PRED, LABELS, num_classes=4), 2 / 3)
    np.testing.assert_allclose(F.f1_score(PRED, LABELS, num_classes=4, average=None)[3], 0.0)


def test_binary_average_and_zero_division():
    y = jnp.array([0, 0, 1, 1], jnp.int32)
    p = jnp.array([0, 1, 1, 1], jnp.int32)
    assert F.precision(p, y, num_classes=2, average="binary") == pytest.approx(2 / 3)
    assert F.recall(p, y, num_classes=2, average="binary") == 1.0
    # nothing predicted or true for class 1: 0/0 is reported as 0
    zeros = jnp.zeros(4, jnp.int32)
    for fn in (F.precision, F.recall, F.f1_score):
        assert fn(zeros, zeros, num_classes=2, average="binary") == 0.0


def test_auroc_by_hand():
    y = jnp.array([0, 0, 1, 1], jnp.int32)
    assert F.auroc(jnp.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert F.auroc(jnp.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    # all tied: every pair counts half
    assert F.auroc(jnp.full(4, 0.3), y) == 0.5
    # pairs (pos, neg): (.5,.1) win, (.5,.5) tie, (.9, .1) win, (.9, .5) win -> 3.5 / 4
    assert F.auroc(jnp.array([0.1, 0.5, 0.5, 0.9]), y) == pytest.approx(0.875)


def test_auroc_accepts_logits_and_is_invariant_to_monotone_maps():
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=30))
    y = jnp.asarray(rng.integers(0, 2, 30), jnp.int32)
    assert F.auroc(s, y) == pytest.approx(float(F.auroc(jax.nn.sigmoid(3 * s), y)), abs=1e-15)


def test_multiclass_auroc_leaves_out_classes_absent_from_targets():
    scores = jnp.array(
        [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]], jnp.float64
    )
    y = jnp.array([0, 1, 0, 1], jnp.int32)  # class 2 never occurs
    # class 0 vs rest and class 1 vs rest both separate perfectly
    assert F.auroc(scores, y) == 1.0
    assert F.auroc(scores, y, average="weighted") == 1.0


def test_log_loss_by_hand_and_clipping():
    p = jnp.array([[0.5, 0.5], [0.1, 0.9]])
    y = jnp.array([0, 1], jnp.int32)
    np.testing.assert_allclose(F.log_loss(p, y), -(np.log(0.5) + np.log(0.9)) / 2, rtol=1e-12)
    # binary probabilities of class 1 give the same
    np.testing.assert_allclose(F.log_loss(jnp.array([0.5, 0.9]), y), F.log_loss(p, y), rtol=1e-12)
    # probability 0 for the true class (sample 0) is clipped to eps: finite, -log(eps) / n
    out = F.log_loss(jnp.array([1.0, 1.0]), y)
    np.testing.assert_allclose(out, -np.log(np.finfo(np.float64).eps) / 2, rtol=1e-12)


def test_log_loss_gradient():
    p = jnp.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    y = jnp.array([2, 1], jnp.int32)
    # float64 central differences with check_grads' default tolerances; eps 1e-6 keeps the
    # perturbed rows summing to 1 within the checks' atol (1e-4), else the traced probability
    # check (rightly) turns the loss into NaN.
    check_grads(jax.jit(lambda x: F.log_loss(x, y)), (p,), order=1, modes=["rev"], eps=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda p, t: F.accuracy(p, t),
        lambda p, t: F.top_k_accuracy(p, t, k=2),
        lambda p, t: F.confusion_matrix(p, t, num_classes=3),
        lambda p, t: F.f1_score(p, t, num_classes=3, average="weighted"),
        lambda p, t: F.auroc(p, t),
    ],
)
def test_jit_matches_eager(call):
    # same arithmetic, possibly fused differently by XLA: 1e-12 relative in float64
    np.testing.assert_allclose(jax.jit(call)(SCORES, LABELS), call(SCORES, LABELS), rtol=1e-12)


def _raises(exc, message, fn, *args, **kwargs):
    with pytest.raises(exc, match=re.escape(message)):
        fn(*args, **kwargs)


def test_bad_labels():
    _raises(
        TypeError,
        "expected `targets` to have an integer dtype, got float32",
        F.accuracy,
        PRED,
        LABELS.astype(jnp.float32),
    )
    _raises(
        ValueError,
        "expected `targets` to have 1 dims (batch), got shape (5, 1)",
        F.accuracy,
        PRED,
        LABELS[:, None],
    )
    _raises(
        ValueError,
        "expected `targets` to be non-empty, got shape (0,)",
        F.accuracy,
        PRED[:0],
        LABELS[:0],
    )
    _raises(
        ValueError,
        "expected `predictions` and `targets` to have the same shape, got (4,) and (5,)",
        F.accuracy,
        PRED[:4],
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` and `targets` to have the same length, got 4 and 5",
        F.accuracy,
        SCORES[:4],
        LABELS,
    )
    _raises(
        ValueError,
        "expected `targets` to be in [0, 2] (num_classes=3), got values in [1, 3]",
        F.accuracy,
        SCORES,
        LABELS.at[0].set(3),
    )
    _raises(
        ValueError,
        "expected `targets` to be in [0, 1] (num_classes=2), got values in [0, 2]",
        F.accuracy,
        jnp.full(5, 0.5),
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` to be in [0, 2] (num_classes=3), got values in [-1, 2]",
        F.confusion_matrix,
        PRED.at[0].set(-1),
        LABELS,
        num_classes=3,
    )
    _raises(
        TypeError,
        "expected `predictions` to have an integer or floating dtype, got complex64",
        F.accuracy,
        PRED.astype(jnp.complex64),
        LABELS,
    )


def test_bad_scores_and_settings():
    _raises(
        ValueError,
        "expected `predictions` to be finite, got 1 NaN and 0 Inf values",
        F.accuracy,
        SCORES.at[0, 0].set(jnp.nan),
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` to have 1 or 2 dims, got shape (5, 3, 1)",
        F.accuracy,
        SCORES[..., None],
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` to have 2 dims (batch, num_classes), got shape (5,)",
        F.top_k_accuracy,
        SCORES[:, 0],
        LABELS,
    )
    _raises(
        TypeError,
        "expected `predictions` to have a floating dtype, got int32",
        F.top_k_accuracy,
        PRED,
        LABELS,
    )
    _raises(
        ValueError,
        "expected `k` to be at most the number of classes (3), got 4",
        F.top_k_accuracy,
        SCORES,
        LABELS,
        k=4,
    )
    _raises(
        ValueError,
        "expected `k` to be a positive integer, got 0",
        F.top_k_accuracy,
        SCORES,
        LABELS,
        k=0,
    )
    _raises(
        ValueError,
        "expected `predictions` to have num_classes 4 on axis 1, got shape (5, 3)",
        F.confusion_matrix,
        SCORES,
        LABELS,
        num_classes=4,
    )
    _raises(
        ValueError,
        "expected `num_classes` to be at least 2, got 1",
        F.confusion_matrix,
        PRED,
        LABELS,
        num_classes=1,
    )
    _raises(
        ValueError,
        "expected `num_classes` to be 2 for binary scores of shape (batch,), got 3",
        F.precision,
        jnp.full(5, 0.5),
        LABELS,
        num_classes=3,
    )
    _raises(
        ValueError,
        "expected `average` to be one of 'binary', 'micro', 'macro', 'weighted', "
        "None, got 'samples'",
        F.recall,
        PRED,
        LABELS,
        num_classes=3,
        average="samples",
    )
    _raises(
        ValueError,
        "expected `num_classes` to be 2 with average='binary', got 3",
        F.f1_score,
        PRED,
        LABELS,
        num_classes=3,
        average="binary",
    )


def test_bad_auroc_inputs():
    _raises(
        ValueError,
        "expected `targets` to contain at least 2 classes, got only class 1",
        F.auroc,
        jnp.array([0.1, 0.4]),
        jnp.array([1, 1], jnp.int32),
    )
    _raises(
        ValueError,
        "expected `targets` to contain at least 2 classes, got only class 2",
        F.auroc,
        SCORES[:3],
        jnp.array([2, 2, 2], jnp.int32),
    )
    _raises(
        TypeError,
        "expected `predictions` to have a floating dtype, got int32",
        F.auroc,
        PRED,
        LABELS,
    )
    _raises(
        ValueError,
        "expected `average` to be one of 'macro', 'weighted', got 'micro'",
        F.auroc,
        SCORES,
        LABELS,
        average="micro",
    )
    _raises(
        ValueError,
        "expected `predictions` to be finite, got 0 NaN and 1 Inf values",
        F.auroc,
        SCORES.at[1, 1].set(-jnp.inf),
        LABELS,
    )


def test_bad_probabilities():
    p = jax.nn.softmax(SCORES, axis=-1)
    _raises(
        ValueError,
        "expected `predictions` to be in [0, 1], got values in [0, 3]",
        F.log_loss,
        SCORES,
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` to sum to 1 along axis -1 (atol 0.0001), got a row summing to 0.8",
        F.log_loss,
        p.at[0].set(jnp.array([0.4, 0.4, 0.0], jnp.float32)),
        LABELS,
    )
    _raises(
        ValueError,
        "expected `predictions` to be in [0, 1], got values in [-0.1, 0.5]",
        F.log_loss,
        jnp.array([-0.1, 0.5]),
        jnp.array([0, 1], jnp.int32),
    )
    _raises(
        ValueError,
        "expected `predictions` to be finite, got 1 NaN and 0 Inf values",
        F.log_loss,
        jnp.array([jnp.nan, 0.5]),
        jnp.array([0, 1], jnp.int32),
    )
    _raises(
        TypeError,
        "expected `predictions` to have a floating dtype, got int32",
        F.log_loss,
        PRED,
        LABELS,
    )
