"""k-means (JAX) against scikit-learn's KMeans from the same initial centres, and NMI / AMI
against scikit-learn's scores on the same labelings; AccuracyCalculator's NMI / AMI.

Tolerances: labels and iteration counts equal; inertia 1e-9 relative (both sum the same float64
squared distances, differently ordered; sklearn also centres the data first); NMI / AMI 1e-10
absolute (float64 sums of a few hundred log terms).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PMLCalculator
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.metrics import normalized_mutual_info_score

from calibrax.metric_learning import AccuracyCalculator
from calibrax.metric_learning.clustering import adjusted_mutual_info
from calibrax.metric_learning.clustering import kmeans
from calibrax.metric_learning.clustering import kmeans_plus_plus
from calibrax.metric_learning.clustering import normalized_mutual_info


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return PCA(16, random_state=0).fit_transform(x), y.astype(np.int64)


@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_matches_sklearn_lloyd_from_the_same_init(digits, seed):
    x, _ = digits
    init = np.asarray(kmeans_plus_plus(jnp.asarray(x), 10, jax.random.key(seed)))
    labels, centers, inertia, n_iter = kmeans(x, 10, init=init, max_iter=300)
    ref = KMeans(10, init=init, n_init=1, max_iter=300, tol=0, algorithm="lloyd").fit(x)
    np.testing.assert_array_equal(np.asarray(labels), ref.labels_)
    np.testing.assert_allclose(float(inertia), ref.inertia_, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(centers), ref.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert int(n_iter) == ref.n_iter_


def test_kmeans_plus_plus_picks_distinct_data_rows_and_is_seeded(digits):
    x, _ = digits
    c = np.asarray(kmeans_plus_plus(jnp.asarray(x), 10, jax.random.key(3)))
    rows = [int(np.flatnonzero(np.all(x == ci, axis=1))[0]) for ci in c]
    assert len(set(rows)) == 10
    np.testing.assert_array_equal(
        c, np.asarray(kmeans_plus_plus(jnp.asarray(x), 10, jax.random.key(3)))
    )
    labels = jax.jit(lambda z: kmeans(z, 4, key=jax.random.key(0))[0])(jnp.asarray(x[:200]))
    assert labels.shape == (200,) and set(np.asarray(labels).tolist()) <= set(range(4))


LABELINGS = [
    (np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 0, 0, 2, 2])),  # perfect, permuted
    (np.zeros(7, int), np.zeros(7, int)),  # both one cluster: 1
    (np.zeros(7, int), np.arange(7)),  # one cluster vs all distinct
    (np.arange(9), np.arange(9)[::-1]),
    (np.array([5, 5, 5, 9]), np.array([0, 1, 0, 1])),
]


def test_nmi_ami_match_sklearn():
    rng = np.random.default_rng(0)
    cases = list(LABELINGS)
    for n, ka, kb in [(50, 3, 4), (200, 10, 10), (31, 1, 5), (400, 40, 7)]:
        cases.append((rng.integers(0, ka, n), rng.integers(0, kb, n)))
    for a, b in cases:
        np.testing.assert_allclose(
            normalized_mutual_info(a, b), normalized_mutual_info_score(a, b), rtol=0, atol=1e-10
        )
        np.testing.assert_allclose(
            adjusted_mutual_info(a, b), adjusted_mutual_info_score(a, b), rtol=0, atol=1e-10
        )


def test_accuracy_calculator_nmi_ami(digits):
    x, y = digits
    acc = AccuracyCalculator(include=("NMI", "AMI"), seed=0)
    ours = acc.get_accuracy(x, y)
    assert list(ours) == ["AMI", "NMI"]
    clusters = np.asarray(acc.cluster_labels(x, y))
    assert len(np.unique(clusters)) == 10
    np.testing.assert_allclose(
        ours["NMI"], normalized_mutual_info_score(y, clusters), atol=1e-10, rtol=0
    )
    np.testing.assert_allclose(
        ours["AMI"], adjusted_mutual_info_score(y, clusters), atol=1e-10, rtol=0
    )
    # PML clusters with faiss k-means (another start, 20 iterations): a different clustering of
    # the same data, so only the same ballpark is expected.
    theirs = PMLCalculator(include=("NMI", "AMI"), device=torch.device("cpu")).get_accuracy(x, y)
    assert abs(ours["NMI"] - theirs["NMI"]) < 0.05 and abs(ours["AMI"] - theirs["AMI"]) < 0.05


def test_errors():
    x = np.zeros((4, 2))
    cases = [
        (
            ValueError,
            "expected `n_clusters` to be at most the number of samples (4), got 5",
            lambda: kmeans(x, 5),
        ),
        (ValueError, "expected `n_clusters` to be a positive integer, got 0", lambda: kmeans(x, 0)),
        (
            ValueError,
            "expected `x` to have 2 dims (samples, dim), got shape (4,)",
            lambda: kmeans(x[:, 0], 2),
        ),
        (
            TypeError,
            "expected `x` to have a floating dtype, got int64",
            lambda: kmeans(x.astype(np.int64), 2),
        ),
        (
            ValueError,
            "expected `x` to be finite, got 1 NaN and 0 Inf values",
            lambda: kmeans(np.where(np.arange(8).reshape(4, 2) == 3, np.nan, 0.0), 2),
        ),
        (
            ValueError,
            "expected `max_iter` to be a positive integer, got 0",
            lambda: kmeans(x, 2, max_iter=0),
        ),
        (
            ValueError,
            "expected `init` to have shape (2, 2), got shape (3, 2)",
            lambda: kmeans(x, 2, init=np.zeros((3, 2))),
        ),
        (
            ValueError,
            "expected `labels_true` and `labels_pred` to have the same length, got 3 and 2",
            lambda: normalized_mutual_info([0, 1, 1], [0, 1]),
        ),
        (
            TypeError,
            "expected `labels_pred` to have an integer dtype, got float64",
            lambda: adjusted_mutual_info([0, 1], [0.0, 1.0]),
        ),
        (
            ValueError,
            "expected `labels_true` to have 1 dims (samples), got shape (2, 1)",
            lambda: adjusted_mutual_info([[0], [1]], [0, 1]),
        ),
    ]
    for exc, message, call in cases:
        with pytest.raises(exc, match=re.escape(message)):
            call()
