"""Classification MetricProtocol classes and streaming classes against the functions."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import calibrax.functional as F
import calibrax.metrics as M
from calibrax.core import MetricProtocol
from calibrax.core import StatefulMetricProtocol

from ._streaming import MODES
from ._streaming import assert_tree_close
from ._streaming import batches
from ._streaming import merged
from ._streaming import stream

C = 4
RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(size=(40, C)) * 2, jnp.float32)
PROBS = jax.nn.softmax(LOGITS, axis=-1)
LABELS = jnp.asarray(RNG.integers(0, C, 40), jnp.int32)

# (streaming factory, inputs, reference on the whole, relative tolerance)
CASES = {
    "accuracy": (M.StreamingAccuracy, LOGITS, F.accuracy(LOGITS, LABELS)),
    "accuracy_int": (M.StreamingAccuracy, jnp.argmax(LOGITS, 1), F.accuracy(LOGITS, LABELS)),
    "top_2": (
        lambda: M.StreamingTopKAccuracy(k=2),
        LOGITS,
        F.top_k_accuracy(LOGITS, LABELS, k=2),
    ),
    "confusion": (
        lambda: M.StreamingConfusionMatrix(num_classes=C),
        LOGITS,
        F.confusion_matrix(LOGITS, LABELS, num_classes=C),
    ),
    "precision_macro": (
        lambda: M.StreamingPrecision(num_classes=C),
        LOGITS,
        F.precision(LOGITS, LABELS, num_classes=C),
    ),
    "recall_weighted": (
        lambda: M.StreamingRecall(num_classes=C, average="weighted"),
        LOGITS,
        F.recall(LOGITS, LABELS, num_classes=C, average="weighted"),
    ),
    "f1_none": (
        lambda: M.StreamingF1Score(num_classes=C, average=None),
        LOGITS,
        F.f1_score(LOGITS, LABELS, num_classes=C, average=None),
    ),
    "log_loss": (M.StreamingLogLoss, PROBS, F.log_loss(PROBS, LABELS)),
}


def _value(metric):
    return metric.compute()[metric.name]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_any_batching_gives_the_whole(case, mode):
    make, inputs, expected = CASES[case]
    m = stream(make, batches(inputs, LABELS), mode)
    assert isinstance(m, StatefulMetricProtocol)
    # counts are exact; log loss is a float32 sum in a different order: 1e-5 relative
    assert_tree_close(_value(m), expected, rtol=1e-5 if case == "log_loss" else 1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_merge_gives_the_whole(case):
    make, inputs, expected = CASES[case]
    m = merged(make, inputs, LABELS, cut=17)
    assert_tree_close(_value(m), expected, rtol=1e-5 if case == "log_loss" else 1e-12)


def test_binary_scores_stream_with_threshold():
    p = jax.nn.sigmoid(LOGITS[:, 0])
    y = (LABELS % 2).astype(jnp.int32)
    m = stream(lambda: M.StreamingF1Score(num_classes=2, average="binary"), batches(p, y), "eager")
    np.testing.assert_allclose(_value(m), F.f1_score(p, y, num_classes=2, average="binary"))
    logits = LOGITS[:, 0]
    m = M.StreamingAccuracy(threshold=0.0)
    m.update(predictions=logits, targets=y)
    assert _value(m) == F.accuracy(p, y)


def test_compute_before_update_and_reset():
    for m in (M.StreamingAccuracy(), M.StreamingF1Score(num_classes=C), M.StreamingLogLoss()):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "expected at least 1 samples accumulated by `update` before `compute`, got 0"
            ),
        ):
            m.compute()
    m = M.StreamingConfusionMatrix(num_classes=C)
    m.update(predictions=LOGITS, targets=LABELS, loss=jnp.float32(0.0))
    assert int(m.matrix[...].sum()) == 40
    m.reset()
    assert int(m.matrix[...].sum()) == 0


def test_streaming_validation():
    _raises = pytest.raises
    with _raises(
        ValueError, match=re.escape("expected `k` to be at most the number of classes (4), got 5")
    ):
        M.StreamingTopKAccuracy(k=5).update(predictions=LOGITS, targets=LABELS)
    with _raises(ValueError, match=re.escape("expected `k` to be a positive integer, got 0")):
        M.StreamingTopKAccuracy(k=0)
    with _raises(
        ValueError,
        match=re.escape(
            "expected `predictions` to have num_classes 3 on axis 1, got shape (40, 4)"
        ),
    ):
        M.StreamingPrecision(num_classes=3).update(predictions=LOGITS, targets=LABELS)
    with _raises(
        ValueError, match=re.escape("expected `num_classes` to be 2 with average='binary', got 4")
    ):
        M.StreamingRecall(num_classes=C, average="binary")
    with _raises(
        ValueError,
        match=re.escape(
            "expected `average` to be one of 'binary', 'micro', 'macro', 'weighted', None, got 'x'"
        ),
    ):
        M.StreamingF1Score(num_classes=C, average="x")
    with _raises(
        ValueError,
        match=re.escape("expected `targets` to be in [0, 3] (num_classes=4), got values in [0, 4]"),
    ):
        M.StreamingAccuracy().update(predictions=LOGITS, targets=LABELS.at[0].set(4))
    with _raises(
        TypeError, match=re.escape("expected `targets` to have an integer dtype, got float32")
    ):
        M.StreamingLogLoss().update(predictions=PROBS, targets=LABELS.astype(jnp.float32))


def test_merge_rejects_a_different_num_classes():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected state `matrix` of `other` to have shape (4, 4) and dtype int32, "
            "got shape (3, 3) and dtype int32"
        ),
    ):
        M.StreamingF1Score(num_classes=4).merge(M.StreamingF1Score(num_classes=3))


METRICS = [
    (M.Accuracy(), LOGITS, F.accuracy),
    (M.TopKAccuracy(k=2), LOGITS, lambda p, t: F.top_k_accuracy(p, t, k=2)),
    (M.Precision(num_classes=C), LOGITS, lambda p, t: F.precision(p, t, num_classes=C)),
    (
        M.Recall(num_classes=C, average="micro"),
        LOGITS,
        lambda p, t: F.recall(p, t, num_classes=C, average="micro"),
    ),
    (M.F1Score(num_classes=C), LOGITS, lambda p, t: F.f1_score(p, t, num_classes=C)),
    (M.AUROC(average="weighted"), LOGITS, lambda p, t: F.auroc(p, t, average="weighted")),
    (M.LogLoss(), PROBS, F.log_loss),
]


@pytest.mark.parametrize(("metric", "inputs", "fn"), METRICS, ids=lambda x: type(x).__name__)
def test_metric_classes_match_functions(metric, inputs, fn):
    assert isinstance(metric, MetricProtocol)
    assert metric.higher_is_better == (metric.name != "log_loss")
    np.testing.assert_array_equal(metric.compute(inputs, LABELS), fn(inputs, LABELS))
    with pytest.raises(
        TypeError, match=re.escape("expected `targets` to have an integer dtype, got float32")
    ):
        metric.validate_inputs(inputs, LABELS.astype(jnp.float32))


def test_metric_class_settings_are_validated():
    with pytest.raises(
        ValueError, match=re.escape("expected `num_classes` to be at least 2, got 1")
    ):
        M.Precision(num_classes=1)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `average` to be one of 'macro', 'weighted', got 'micro'"),
    ):
        M.AUROC(average="micro")
    with pytest.raises(
        ValueError,
        match=re.escape("expected `targets` to contain at least 2 classes, got only class 0"),
    ):
        M.AUROC()(LOGITS[:3], jnp.zeros(3, jnp.int32))
    assert repr(M.TopKAccuracy(k=3)) == "TopKAccuracy(k=3)"


def test_jitted_compute_of_metric_class():
    metric = M.F1Score(num_classes=C, average="weighted")
    np.testing.assert_allclose(
        jax.jit(metric.compute)(LOGITS, LABELS), metric.compute(LOGITS, LABELS), rtol=1e-12
    )


def test_multimetric_with_different_inputs_ignored():
    multi = nnx.MultiMetric(accuracy=M.StreamingAccuracy(), f1=M.StreamingF1Score(num_classes=C))
    multi.update(predictions=LOGITS, targets=LABELS, images=jnp.zeros((2, 8, 8, 3)))
    out = multi.compute()
    assert out["accuracy"]["accuracy"] == F.accuracy(LOGITS, LABELS)
    np.testing.assert_allclose(out["f1"]["f1_score"], F.f1_score(LOGITS, LABELS, num_classes=C))
