"""Retrieval metric classes: MetricProtocol shells and the fixed-capacity streaming buffer.

The streaming metric ranks exactly the samples the function ranks (the buffer's empty rows are
excluded), so results agree to float32 rounding of the means: 1e-6 relative.
"""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.core import MetricProtocol
from calibrax.core import StatefulMetricProtocol
from calibrax.functional import retrieval_metrics
from calibrax.metrics import MAPAtR
from calibrax.metrics import PrecisionAt1
from calibrax.metrics import RecallAtK
from calibrax.metrics import RPrecision
from calibrax.metrics import StreamingRetrieval

KS = (1, 3)


def _data(n=18, dim=4, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n).astype(np.int32)
    labels[0] = 50  # a lone sample: left out, in the buffer as in the function
    x = rng.normal(size=(classes, dim))[labels % classes] + rng.normal(size=(n, dim))
    return jnp.asarray(x, jnp.float32), jnp.asarray(labels)


def _make(max_samples=24):
    return StreamingRetrieval(max_samples=max_samples, dim=4, ks=KS, block_size=5)


def _check(got, want):
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)


X, Y = _data()
WANT = retrieval_metrics(X, Y, ks=KS)
SPLITS = [(18,), (6, 12), (12, 6)]


@pytest.mark.parametrize("mode", ["eager", "nnx.jit", "jax.jit"])
def test_any_split_equals_the_whole(mode):
    @nnx.jit
    def nnx_step(metric, e, y):
        metric.update(embeddings=e, labels=y)

    for sizes in SPLITS:
        metric = _make()
        bounds = np.cumsum((0, *sizes))
        batches = [(X[a:b], Y[a:b]) for a, b in itertools.pairwise(bounds)]
        if mode == "jax.jit":
            graphdef, state = nnx.split(metric)

            @jax.jit
            def step(state, e, y, graphdef=graphdef):
                m = nnx.merge(graphdef, state)
                m.update(embeddings=e, labels=y)
                return nnx.state(m)

            for e, y in batches:
                state = step(state, e, y)
            metric = nnx.merge(graphdef, state)
            got = jax.jit(lambda s, g=graphdef: nnx.merge(g, s).compute())(state)
        else:
            for e, y in batches:
                if mode == "eager":
                    metric.update(embeddings=e, labels=y)
                else:
                    nnx_step(metric, e, y)
            got = metric.compute() if mode == "eager" else nnx.jit(lambda m: m.compute())(metric)
        _check(got, WANT)
        assert int(metric.count[...]) == 18


def test_merge_appends_and_reset_empties():
    a, b = _make(), _make()
    a.update(embeddings=X[:7], labels=Y[:7])
    b.update(embeddings=X[7:], labels=Y[7:], predictions=None)  # other keywords are ignored
    a.merge(b)
    _check(a.compute(), WANT)
    a.reset()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected at least 2 samples accumulated by `update` before `compute`, got 0"
        ),
    ):
        a.compute()
    with pytest.raises(NotImplementedError, match="gather the per-device metrics"):
        a.reduce("devices")


def test_overflow_is_an_error_eagerly_and_nan_under_jit():
    metric = _make(max_samples=10)
    metric.update(embeddings=X[:8], labels=Y[:8])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected at most max_samples=10 samples after this update, got 13; construct the "
            "metric with a larger `max_samples`"
        ),
    ):
        metric.update(embeddings=X[8:13], labels=Y[8:13])
    assert int(metric.count[...]) == 8  # the refused batch left no trace

    @nnx.jit
    def step(m, e, y):
        m.update(embeddings=e, labels=y)

    step(metric, X[8:13], Y[8:13])  # under jit: rows past capacity dropped, still counted
    assert int(metric.count[...]) == 13
    with pytest.raises(
        ValueError,
        match=re.escape("expected at most max_samples=10 samples accumulated, got 13"),
    ):
        metric.compute()
    jitted = nnx.jit(lambda m: m.compute())(metric)
    assert all(np.isnan(v) for v in jitted.values())
    other = _make(max_samples=10)
    other.update(embeddings=X[:8], labels=Y[:8])
    with pytest.raises(
        ValueError, match=re.escape("expected at most max_samples=10 samples after merging, got 16")
    ):
        other.merge(other)


def test_update_and_constructor_validation():
    metric = _make()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `embeddings` to have embedding size 4 on axis 1, got shape (3, 2)"
        ),
    ):
        metric.update(embeddings=X[:3, :2], labels=Y[:3])
    with pytest.raises(
        TypeError, match=re.escape("expected `labels` to have an integer dtype, got float32")
    ):
        metric.update(embeddings=X[:3], labels=Y[:3].astype(jnp.float32))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `embeddings` to be finite, got 0 NaN and 1 Inf values"),
    ):
        metric.update(embeddings=X[:3].at[0, 0].set(jnp.inf), labels=Y[:3])
    with pytest.raises(
        ValueError, match=re.escape("expected `max_samples` to be at least 2, got 1")
    ):
        StreamingRetrieval(max_samples=1, dim=4)
    with pytest.raises(
        ValueError, match=re.escape("expected `dim` to be a positive integer, got 0")
    ):
        StreamingRetrieval(max_samples=4, dim=0)
    metric.update(embeddings=X[:3], labels=Y[:3])
    with pytest.raises(
        ValueError,
        match=re.escape("expected `k` to be at most the number of references per query (2), got 3"),
    ):
        metric.compute()


def test_metric_protocol_classes():
    for metric, key in [
        (RecallAtK(k=3, block_size=4), "recall@3"),
        (PrecisionAt1(), "precision_at_1"),
        (RPrecision(distance="euclidean"), "r_precision"),
        (MAPAtR(block_size=7), "map_at_r"),
    ]:
        assert isinstance(metric, MetricProtocol)
        assert metric.higher_is_better
        np.testing.assert_allclose(metric.compute(X, Y), WANT[key], rtol=1e-6)
    assert isinstance(_make(), StatefulMetricProtocol)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `k` to be at most the number of references per query (17), got 18"
        ),
    ):
        RecallAtK(k=18).compute(X, Y)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `distance` to be one of 'euclidean', 'cosine', got 'l1'"),
    ):
        MAPAtR(distance="l1")
