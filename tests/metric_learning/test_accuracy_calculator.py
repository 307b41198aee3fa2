"""AccuracyCalculator against pytorch-metric-learning 2.9's (faiss kNN) on real embeddings.

Embeddings: scikit-learn's digits, PCA to 16 dimensions (float64; no two distances tie, so both
rankings are the same). Tolerance 1e-6 absolute: PML computes in float32 (embeddings cast to
float32; MRR's ``1 / rank`` and MAP's per-row precision sums partly in float32), which moves its
results by up to ~2e-7; any ranking or counting difference moves them by >= 1 / (n * R) ~ 1e-5.
"""

import re

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PMLCalculator
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from calibrax.metric_learning import AccuracyCalculator
from calibrax.metric_learning.accuracy_calculator import RETRIEVAL_METRICS

TOL = 1e-6
RETRIEVAL_ONLY = ("AMI", "NMI")


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    z = PCA(16, random_state=0).fit_transform(x)
    idx = np.random.default_rng(0).permutation(len(y))[:500]
    return z[idx], y[idx].astype(np.int64)


def _pml(**kwargs):
    return PMLCalculator(exclude=("NMI", "AMI"), device=torch.device("cpu"), **kwargs)


def _compare(ours, theirs):
    assert list(ours) == sorted(theirs) or set(ours) == set(theirs)
    for name, value in ours.items():
        np.testing.assert_allclose(np.asarray(value), np.asarray(theirs[name]), atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"k": "max_bin_count"}, {"k": 7}, {"avg_of_avgs": True}, {"return_per_class": True}],
    ids=["k_all", "max_bin_count", "k7", "avg_of_avgs", "per_class"],
)
def test_leave_one_out_matches_pml(digits, kwargs):
    x, y = digits
    with pytest.warns(UserWarning) if kwargs.get("k") == 7 else _nothing():
        ours = AccuracyCalculator(exclude=RETRIEVAL_ONLY, block_size=128, **kwargs).get_accuracy(
            x, y
        )
    _compare(ours, _pml(**kwargs).get_accuracy(x, y))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("ref_includes_query", [False, True])
def test_query_vs_reference_matches_pml(digits, ref_includes_query):
    x, y = digits
    q, ql = x[:150], y[:150]
    if ref_includes_query:
        r, rl = x, y
    else:
        r, rl = x[150:], y[150:]
    ours = AccuracyCalculator(
        exclude=RETRIEVAL_ONLY, k="max_bin_count", block_size=64
    ).get_accuracy(q, ql, r, rl, ref_includes_query)
    theirs = _pml(k="max_bin_count").get_accuracy(q, ql, r, rl, ref_includes_query)
    _compare(ours, theirs)


def test_lone_queries_and_unseen_labels_match_pml(digits):
    """Class 9 has a single sample (lone in leave-one-out); queries of class 8 have no reference."""
    x, y = digits
    keep = (y != 9) | (np.cumsum(y == 9) == 1)
    x1, y1 = x[keep][:200], y[keep][:200]
    _compare(
        AccuracyCalculator(exclude=RETRIEVAL_ONLY).get_accuracy(x1, y1), _pml().get_accuracy(x1, y1)
    )
    q, ql = x[:60], y[:60]
    r, rl = x[60:][y[60:] != 8], y[60:][y[60:] != 8]
    for kw in ({}, {"return_per_class": True}):
        _compare(
            AccuracyCalculator(exclude=RETRIEVAL_ONLY, **kw).get_accuracy(q, ql, r, rl),
            _pml(**kw).get_accuracy(q, ql, r, rl),
        )


def test_all_queries_lone_gives_nan():
    x = np.random.default_rng(0).normal(size=(6, 3))
    y = np.arange(6)
    ours = AccuracyCalculator(exclude=RETRIEVAL_ONLY).get_accuracy(x, y)
    assert set(ours) == set(RETRIEVAL_METRICS) and all(np.isnan(v) for v in ours.values())
    per_class = AccuracyCalculator(exclude=RETRIEVAL_ONLY, return_per_class=True).get_accuracy(x, y)
    assert all(len(v) == 6 and np.all(np.isnan(v)) for v in per_class.values())


def test_include_exclude_and_cosine(digits):
    x, y = digits
    acc = AccuracyCalculator(include=("precision_at_1", "r_precision"), distance="cosine")
    assert list(acc.get_accuracy(x, y)) == ["precision_at_1", "r_precision"]
    assert list(acc.get_accuracy(x, y, exclude=("r_precision",))) == ["precision_at_1"]
    # Cosine ranking = Euclidean ranking of the L2-normalised embeddings.
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(
        acc.get_accuracy(x, y)["r_precision"],
        AccuracyCalculator(include=("r_precision",)).get_accuracy(xn, y)["r_precision"],
        atol=1e-12,
    )


def test_block_size_does_not_change_the_result(digits):
    x, y = digits
    a = AccuracyCalculator(exclude=RETRIEVAL_ONLY, k=20, block_size=7).get_accuracy(
        x[:100], y[:100]
    )
    b = AccuracyCalculator(exclude=RETRIEVAL_ONLY, k=20, block_size=100).get_accuracy(
        x[:100], y[:100]
    )
    assert a == b


def test_errors():
    x = np.zeros((4, 2))
    y = np.array([0, 0, 1, 1])
    cases = [
        (
            TypeError,
            "expected `include` to be a tuple or list, got str",
            lambda: AccuracyCalculator(include="NMI"),
        ),
        (
            ValueError,
            "expected `exclude` to name metrics among AMI, NMI, mean_average_precision, mean_average_precision_at_r, mean_reciprocal_rank, precision_at_1, r_precision, got 'foo'",
            lambda: AccuracyCalculator(exclude=("foo",)),
        ),
        (
            ValueError,
            "expected at most one of `avg_of_avgs` and `return_per_class`, got both",
            lambda: AccuracyCalculator(avg_of_avgs=True, return_per_class=True),
        ),
        (
            ValueError,
            "expected `k` to be a positive integer, None or 'max_bin_count', got 0",
            lambda: AccuracyCalculator(k=0),
        ),
        (
            ValueError,
            "expected `k` to be a positive integer, None or 'max_bin_count', got 'max'",
            lambda: AccuracyCalculator(k="max"),
        ),
        (
            ValueError,
            "expected `distance` to be one of 'euclidean', 'cosine', got 'l1'",
            lambda: AccuracyCalculator(distance="l1"),
        ),
        (
            ValueError,
            "expected `block_size` to be a positive integer, got 0",
            lambda: AccuracyCalculator(block_size=0),
        ),
        (
            ValueError,
            "expected `query` to have 2 dims (samples, dim), got shape (4,)",
            lambda: AccuracyCalculator().get_accuracy(y * 1.0, y),
        ),
        (
            ValueError,
            "expected `query` and `query_labels` to have the same length, got 4 and 3",
            lambda: AccuracyCalculator().get_accuracy(x, y[:3]),
        ),
        (
            TypeError,
            "expected `query_labels` to have an integer dtype, got float64",
            lambda: AccuracyCalculator().get_accuracy(x, y * 1.0),
        ),
        (
            ValueError,
            "expected `query` to be finite, got 8 NaN and 0 Inf values",
            lambda: AccuracyCalculator().get_accuracy(np.full((4, 2), np.nan), y),
        ),
        (
            ValueError,
            "expected `query` to be non-empty",
            lambda: AccuracyCalculator().get_accuracy(np.zeros((0, 2)), y[:0]),
        ),
        (
            ValueError,
            "expected `reference` and `reference_labels` to be given together, got only `reference`",
            lambda: AccuracyCalculator().get_accuracy(x, y, x),
        ),
        (
            ValueError,
            "expected `reference` to have embedding size 2 on axis 1, got shape (4, 3)",
            lambda: AccuracyCalculator().get_accuracy(x, y, np.zeros((4, 3)), y),
        ),
        (
            TypeError,
            "expected `query` and `reference` to have the same dtype, got float64 and float32",
            lambda: AccuracyCalculator().get_accuracy(x, y, x.astype(np.float32), y),
        ),
        (
            ValueError,
            "expected the first len(query) rows of `reference` and `reference_labels` to be `query` and `query_labels` when `ref_includes_query` is True",
            lambda: AccuracyCalculator().get_accuracy(x, y, x + 1, y, True),
        ),
        (
            ValueError,
            "expected `k` to be at most the number of references a query can retrieve (3), got 4",
            lambda: AccuracyCalculator(k=4).get_accuracy(x, y),
        ),
    ]
    for exc, message, call in cases:
        with pytest.raises(exc, match=re.escape(message)):
            call()


def test_errors_of_the_clustering_settings():
    with pytest.raises(
        ValueError, match=re.escape("expected `seed` to be a non-negative integer, got -1")
    ):
        AccuracyCalculator(seed=-1)
    with pytest.raises(
        ValueError, match=re.escape("expected `kmeans_iters` to be a positive integer, got 0")
    ):
        AccuracyCalculator(kmeans_iters=0)
