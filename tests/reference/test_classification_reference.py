"""Classification parity with scikit-learn and torchmetrics on random inputs and edge cases."""

import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics as skm
import torch
import torchmetrics.functional.classification as tmc
from sklearn.exceptions import UndefinedMetricWarning

import calibrax.functional as F
import calibrax.metrics as M

C = 4


def _multiclass(seed, n=97, ties=False, dtype=np.float64):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, C)) * 2
    if ties:
        logits = np.round(logits)  # many exactly tied scores
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, C, n)
    return probs.astype(dtype), labels


def _j(x):
    return jnp.asarray(x)


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_top_k_and_confusion_matrix(seed):
    probs, y = _multiclass(seed)
    y_pred = probs.argmax(axis=1)
    # counts divided by n: exact up to one rounding in float64
    np.testing.assert_allclose(F.accuracy(_j(probs), _j(y)), skm.accuracy_score(y, y_pred))
    np.testing.assert_allclose(F.accuracy(_j(y_pred), _j(y)), skm.accuracy_score(y, y_pred))
    for k in (1, 2, 3):
        np.testing.assert_allclose(
            F.top_k_accuracy(_j(probs), _j(y), k=k),
            skm.top_k_accuracy_score(y, probs, k=k, labels=range(C)),
        )
        np.testing.assert_allclose(
            M.TopKAccuracy(k=k)(_j(probs), _j(y)),
            skm.top_k_accuracy_score(y, probs, k=k, labels=range(C)),
        )
    np.testing.assert_array_equal(
        F.confusion_matrix(_j(probs), _j(y), num_classes=C),
        skm.confusion_matrix(y, y_pred, labels=range(C)),
    )


@pytest.mark.parametrize("average", ["micro", "macro", "weighted", None])
@pytest.mark.parametrize("missing", [False, True])
def test_precision_recall_f1(average, missing):
    probs, y = _multiclass(2)
    y_pred = probs.argmax(axis=1)
    if missing:
        # class 3 absent from targets and predictions: scikit-learn (labels=None) drops it
        keep = (y != 3) & (y_pred != 3)
        probs, y, y_pred = probs[keep], y[keep], y_pred[keep]
    for ours, cls, ref in (
        (F.precision, M.Precision, skm.precision_score),
        (F.recall, M.Recall, skm.recall_score),
        (F.f1_score, M.F1Score, skm.f1_score),
    ):
        kwargs = {"labels": range(C)} if average is None else {}
        expected = ref(y, y_pred, average=average, zero_division=0, **kwargs)
        got = ours(_j(probs), _j(y), num_classes=C, average=average)
        # ratios of small counts in float64: 1e-12 relative
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        np.testing.assert_allclose(
            cls(num_classes=C, average=average)(_j(y_pred), _j(y)), expected, rtol=1e-12
        )


def test_binary_precision_recall_f1_from_thresholded_scores():
    rng = np.random.default_rng(3)
    p = rng.random(64)
    y = rng.integers(0, 2, 64)
    y_pred = (p >= 0.5).astype(int)
    for ours, ref in (
        (F.precision, skm.precision_score),
        (F.recall, skm.recall_score),
        (F.f1_score, skm.f1_score),
    ):
        np.testing.assert_allclose(
            ours(_j(p), _j(y), num_classes=2, average="binary"), ref(y, y_pred), rtol=1e-12
        )
        np.testing.assert_allclose(
            ours(_j(p - 0.5), _j(y), num_classes=2, average="binary", threshold=0.0),
            ref(y, y_pred),
            rtol=1e-12,
        )


@pytest.mark.parametrize("ties", [False, True])
def test_binary_auroc(ties):
    rng = np.random.default_rng(4)
    s = rng.normal(size=200)
    if ties:
        s = np.round(s, 1)
    y = (rng.random(200) < 0.3).astype(int)
    expected = skm.roc_auc_score(y, s)
    # exact pair counts: float64 ratio, 1e-12 relative
    np.testing.assert_allclose(F.auroc(_j(s), _j(y)), expected, rtol=1e-12)
    np.testing.assert_allclose(M.AUROC()(_j(s), _j(y)), expected, rtol=1e-12)
    tm = tmc.binary_auroc(torch.tensor(s), torch.tensor(y))
    np.testing.assert_allclose(F.auroc(_j(s), _j(y)), tm.item(), rtol=1e-6)
    # float32 scores: ties and ordering are those of the float32 values; counts stay exact and
    # the final division is float32 (1e-6 relative)
    s32 = s.astype(np.float32)
    np.testing.assert_allclose(
        F.auroc(_j(s32), _j(y)), skm.roc_auc_score(y, s32.astype(np.float64)), rtol=1e-6
    )


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_multiclass_auroc(ties, average):
    probs, y = _multiclass(5, n=150, ties=ties)
    expected = skm.roc_auc_score(y, probs, multi_class="ovr", average=average)
    np.testing.assert_allclose(F.auroc(_j(probs), _j(y), average=average), expected, rtol=1e-12)
    if average == "macro":
        tm = tmc.multiclass_auroc(torch.tensor(probs), torch.tensor(y), num_classes=C)
        # torchmetrics computes in float32
        np.testing.assert_allclose(F.auroc(_j(probs), _j(y)), tm.item(), rtol=1e-6)


def test_multiclass_auroc_with_an_absent_class_matches_mean_of_present_classes():
    probs, y = _multiclass(6, n=80)
    y = np.where(y == 2, 0, y)  # class 2 never occurs
    present = [0, 1, 3]
    expected = np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in present])
    np.testing.assert_allclose(F.auroc(_j(probs), _j(y)), expected, rtol=1e-12)


def test_auroc_single_class_is_an_error_where_sklearn_warns_and_returns_nan():
    y = np.ones(5, int)
    s = np.linspace(0, 1, 5)
    with pytest.warns(UndefinedMetricWarning, match="Only one class is present"):
        assert np.isnan(skm.roc_auc_score(y, s))
    with pytest.raises(ValueError, match="at least 2 classes"):
        F.auroc(_j(s), _j(y))


@pytest.mark.parametrize("binary", [False, True])
def test_log_loss(binary):
    probs, y = _multiclass(7)
    if binary:
        probs, y = probs[:, 0] / probs[:, :2].sum(axis=1), (y == 0).astype(int)
        expected = skm.log_loss(y, probs, labels=[0, 1])
        # our binary input is P(class 1): compare with 1 - p
        probs = 1 - probs
        y = 1 - y
    else:
        expected = skm.log_loss(y, probs, labels=range(C))
    np.testing.assert_allclose(F.log_loss(_j(probs), _j(y)), expected, rtol=1e-10)
    np.testing.assert_allclose(M.LogLoss()(_j(probs), _j(y)), expected, rtol=1e-10)


def test_log_loss_float32_and_extremes():
    probs, y = _multiclass(8, dtype=np.float32)
    probs[0] = np.eye(C, dtype=np.float32)[(y[0] + 1) % C]  # true class gets probability 0
    # scikit-learn clips with float32 eps too; float32 logs: 1e-5 relative
    np.testing.assert_allclose(
        F.log_loss(_j(probs), _j(y)), skm.log_loss(y, probs, labels=range(C)), rtol=1e-5
    )
