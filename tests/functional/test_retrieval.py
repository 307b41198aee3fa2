"""Retrieval metrics: a hand-worked example, blocking, jit, and validation messages.

Parity with pytorch-metric-learning is in ``tests/reference/test_retrieval_reference.py``.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calibrax.functional import map_at_r
from calibrax.functional import precision_at_1
from calibrax.functional import r_precision
from calibrax.functional import recall_at_k
from calibrax.functional import retrieval_metrics


def _data(n=30, dim=4, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n).astype(np.int32)
    x = rng.normal(size=(classes, dim))[labels] + rng.normal(size=(n, dim))
    return jnp.asarray(x, jnp.float32), jnp.asarray(labels)


def test_hand_worked_example():
    # 1-D points 0, 1, 3, 10 with labels a, a, b, a (leave-one-out, euclidean).
    # Query 0 (a): order 1(a), 3(b), 10(a); R=2 -> P@1=1, R-prec=1/2, AP@R=(1/1)/2.
    # Query 1 (a): order 0(a), 3(b), 10(a); same as query 0.
    # Query 3 (b): R=0 -> left out.
    # Query 10 (a): order 3(b), 1(a), 0(a); R=2 -> P@1=0, R-prec=1/2, AP@R=(1/2)/2.
    x = jnp.asarray([[0.0], [1.0], [3.0], [10.0]], jnp.float64)
    y = jnp.asarray([0, 0, 1, 0])
    got = retrieval_metrics(x, y, ks=(1, 2))
    np.testing.assert_allclose(got["precision_at_1"], 2 / 3, rtol=1e-12)
    np.testing.assert_allclose(got["recall@1"], 2 / 3, rtol=1e-12)
    np.testing.assert_allclose(got["recall@2"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(got["r_precision"], 0.5, rtol=1e-12)
    np.testing.assert_allclose(got["map_at_r"], (0.5 + 0.5 + 0.25) / 3, rtol=1e-12)


def test_ties_go_to_the_lower_index():
    # Query 1 is equidistant from samples 0 and 2; sample 0 ranks first.
    x = jnp.asarray([[0.0], [1.0], [2.0]], jnp.float32)
    # Labels a, a, b: queries 0 and 1 hit (1 via the tie to 0), query 2 is lone.
    assert precision_at_1(x, jnp.asarray([0, 0, 1])) == 1.0
    # Labels b, a, a: query 0 is lone, query 1 misses (0 wins the tie), query 2 hits.
    assert precision_at_1(x, jnp.asarray([1, 0, 0])) == 0.5


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_block_size_does_not_change_the_result(distance):
    x, y = _data()
    whole = retrieval_metrics(x, y, ks=(1, 3), distance=distance, block_size=1000)
    for block_size in (1, 7, 30):
        got = retrieval_metrics(x, y, ks=(1, 3), distance=distance, block_size=block_size)
        for key, value in whole.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=key)


def test_single_metric_functions_agree_with_the_dict():
    x, y = _data(seed=1)
    both = retrieval_metrics(x, y, ks=(4,), block_size=8)
    np.testing.assert_allclose(recall_at_k(x, y, k=4, block_size=8), both["recall@4"], rtol=1e-7)
    np.testing.assert_allclose(precision_at_1(x, y), both["precision_at_1"], rtol=1e-7)
    np.testing.assert_allclose(r_precision(x, y), both["r_precision"], rtol=1e-7)
    np.testing.assert_allclose(map_at_r(x, y), both["map_at_r"], rtol=1e-7)


def test_recall_grows_with_k_and_cosine_ignores_scale():
    x, y = _data(seed=2)
    recalls = [float(recall_at_k(x, y, k=k)) for k in (1, 2, 5, 29)]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0
    scale = jnp.asarray(np.random.default_rng(0).uniform(0.5, 3.0, size=(30, 1)), jnp.float32)
    a = retrieval_metrics(x, y, distance="cosine")
    b = retrieval_metrics(x * scale, y, distance="cosine")
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6)


def test_jit_matches_eager():
    x, y = _data(seed=3)
    fn = lambda e, l: retrieval_metrics(e, l, ks=(1, 5), block_size=8)  # noqa: E731
    eager, jitted = fn(x, y), jax.jit(fn)(x, y)
    for key in eager:
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-6)


X, Y = _data(n=6, dim=3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"embeddings": X[0]},
            ValueError,
            "expected `embeddings` to have 2 dims (samples, dim), got shape (3,)",
        ),
        (
            {"labels": Y[:, None]},
            ValueError,
            "expected `labels` to have 1 dims (samples), got shape (6, 1)",
        ),
        (
            {"labels": Y[:5]},
            ValueError,
            "expected `embeddings` and `labels` to have the same length, got 6 and 5",
        ),
        (
            {"embeddings": X.astype(jnp.int32)},
            TypeError,
            "expected `embeddings` to have a floating dtype, got int32",
        ),
        (
            {"labels": Y.astype(jnp.float32)},
            TypeError,
            "expected `labels` to have an integer dtype, got float32",
        ),
        (
            {"embeddings": X[:0], "labels": Y[:0]},
            ValueError,
            "expected `embeddings` to be non-empty, got shape (0, 3)",
        ),
        (
            {"embeddings": X[:1], "labels": Y[:1]},
            ValueError,
            "expected `embeddings` to have at least 2 samples, got 1",
        ),
        (
            {"embeddings": X.at[2, 1].set(jnp.nan)},
            ValueError,
            "expected `embeddings` to be finite, got 1 NaN and 0 Inf values",
        ),
        (
            {"ks": (1, 6)},
            ValueError,
            "expected `k` to be at most the number of references per query (5), got 6",
        ),
        (
            {"ks": (0,)},
            ValueError,
            "expected `k` to be a positive integer, got 0",
        ),
        (
            {"ks": ()},
            ValueError,
            "expected `ks` to be a non-empty tuple of positive integers, got ()",
        ),
        (
            {"distance": "manhattan"},
            ValueError,
            "expected `distance` to be one of 'euclidean', 'cosine', got 'manhattan'",
        ),
        (
            {"block_size": 0},
            ValueError,
            "expected `block_size` to be a positive integer, got 0",
        ),
        (
            {"reference_embeddings": X},
            ValueError,
            "expected `reference_embeddings` and `reference_labels` to be given together, "
            "got only `reference_embeddings`",
        ),
        (
            {"reference_embeddings": X[:, :2], "reference_labels": Y},
            ValueError,
            "expected `reference_embeddings` to have embedding size 3 on axis 1, got shape (6, 2)",
        ),
        (
            {"reference_embeddings": X.astype(jnp.float64), "reference_labels": Y},
            TypeError,
            "expected `embeddings` and `reference_embeddings` to have the same dtype, "
            "got float32 and float64",
        ),
        (
            {"reference_embeddings": X[:3], "reference_labels": Y[:3], "ks": (4,)},
            ValueError,
            "expected `k` to be at most the number of references per query (3), got 4",
        ),
        (
            {"reference_embeddings": X, "reference_labels": Y.at[0].set(0)[:4]},
            ValueError,
            "expected `reference_embeddings` and `reference_labels` to have the same length, "
            "got 6 and 4",
        ),
    ],
)
def test_validation_messages(kwargs, error, message):
    args = {"embeddings": X, "labels": Y, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        retrieval_metrics(**args)


def test_recall_at_k_rejects_k_above_references():
    with pytest.raises(
        ValueError,
        match=re.escape("expected `k` to be at most the number of references per query (5), got 9"),
    ):
        recall_at_k(X, Y, k=9)
