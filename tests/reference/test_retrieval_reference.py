"""Retrieval metrics against pytorch-metric-learning's AccuracyCalculator and a numpy loop.

pytorch-metric-learning's default k-NN needs faiss (not installed); it is given a brute-force
torch k-NN with the same signature, ``knn_func(query, k, reference, ref_includes_query)`` returning
``(distances, indices)`` without the query itself. It sorts with a stable sort, so ties go to the
lower reference index, which is calibrax's documented rule; the tie cases below would expose any
other order. ``k=None`` makes the calculator rank every reference, as calibrax does.

Tolerance: calibrax averages in the embeddings' dtype (float32 here) while the calculator averages
in float64: 1e-6 relative covers float32 rounding of means of a few hundred fractions.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from calibrax.functional import retrieval_metrics

PML_KEYS = {
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "mean_average_precision_at_r",
}


def _distances(query, reference, distance):
    if distance == "cosine":
        q = torch.nn.functional.normalize(query, dim=1)
        r = torch.nn.functional.normalize(reference, dim=1)
        return -(q @ r.T)
    return torch.cdist(query.double(), reference.double())


def _make_knn(distance):
    def knn(query, k, reference, ref_includes_query=False):
        d = _distances(query, reference, distance)
        if ref_includes_query:
            d.fill_diagonal_(float("inf"))
        order = torch.sort(d, dim=1, stable=True).indices[:, :k]
        return torch.gather(d, 1, order), order

    return knn


def _pml(distance, query, query_labels, reference=None, reference_labels=None):
    calc = AccuracyCalculator(
        include=tuple(PML_KEYS.values()),
        k=None,
        knn_func=_make_knn(distance),
        device=torch.device("cpu"),
    )
    args = [torch.from_numpy(query), torch.from_numpy(query_labels)]
    if reference is not None:
        args += [torch.from_numpy(reference), torch.from_numpy(reference_labels)]
    return calc.get_accuracy(*args)


def _numpy_recall(query, query_labels, reference, reference_labels, k, distance, leave_one_out):
    """Recall@K by a loop: stable sort per query, lone queries left out."""
    hits = []
    for i, (q, y) in enumerate(zip(query, query_labels, strict=True)):
        if distance == "cosine":
            d = -(reference @ q) / np.linalg.norm(reference, axis=1) / np.linalg.norm(q)
        else:
            d = np.linalg.norm(reference.astype(np.float64) - q, axis=1)
        idx = np.arange(len(reference))
        if leave_one_out:
            d, idx = np.delete(d, i), np.delete(idx, i)
        relevant = reference_labels[idx] == y
        if not relevant.any():
            continue
        order = np.argsort(d, kind="stable")[:k]
        hits.append(relevant[order].any())
    return np.mean(hits) if hits else np.nan


def _data(n, dim, classes, seed, spread=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n).astype(np.int64)
    centres = rng.normal(size=(classes, dim))
    x = centres[labels] + spread * rng.normal(size=(n, dim))
    return x.astype(np.float32), labels


def _check(ours, pml, recall_want):
    for key, pml_key in PML_KEYS.items():
        np.testing.assert_allclose(ours[key], pml[pml_key], rtol=1e-6, err_msg=key)
    for key, want in recall_want.items():
        np.testing.assert_allclose(ours[key], want, rtol=1e-6, err_msg=key)


KS = (1, 2, 5)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize(("n", "classes", "seed"), [(60, 5, 0), (41, 12, 1)])
def test_leave_one_out_matches_pml(distance, n, classes, seed):
    x, y = _data(n, 6, classes, seed)
    y[0] = 99  # a class with a single sample: left out, as in pytorch-metric-learning
    ours = retrieval_metrics(
        jnp.asarray(x), jnp.asarray(y), ks=KS, distance=distance, block_size=16
    )
    recall = {f"recall@{k}": _numpy_recall(x, y, x, y, k, distance, True) for k in KS}
    _check(ours, _pml(distance, x, y), recall)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_query_vs_reference_matches_pml(distance):
    x, y = _data(70, 5, 6, 2)
    q, qy, r, ry = x[:25], y[:25], x[25:], y[25:]
    qy[0] = 77  # no reference has this label: the query is left out
    ours = retrieval_metrics(
        jnp.asarray(q),
        jnp.asarray(qy),
        reference_embeddings=jnp.asarray(r),
        reference_labels=jnp.asarray(ry),
        ks=KS,
        distance=distance,
        block_size=8,
    )
    recall = {f"recall@{k}": _numpy_recall(q, qy, r, ry, k, distance, False) for k in KS}
    _check(ours, _pml(distance, q, qy, r, ry), recall)


def test_ties_match_pml_with_stable_order():
    # Points on an integer grid with many equal distances (exact in float32): the order of
    # tied references decides every metric, and both sides break ties by lower index.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(40, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=40).astype(np.int64)
    ours = retrieval_metrics(jnp.asarray(x), jnp.asarray(y), ks=KS, block_size=7)
    recall = {f"recall@{k}": _numpy_recall(x, y, x, y, k, "euclidean", True) for k in KS}
    _check(ours, _pml("euclidean", x, y), recall)


def test_identical_embeddings_match_pml():
    # All distances tie: ranking is by index alone.
    x = np.zeros((12, 3), np.float32)
    y = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0, 0, 1], np.int64)
    ours = retrieval_metrics(jnp.asarray(x), jnp.asarray(y), ks=KS)
    recall = {f"recall@{k}": _numpy_recall(x, y, x, y, k, "euclidean", True) for k in KS}
    _check(ours, _pml("euclidean", x, y), recall)


def test_single_class_is_perfect():
    x, _ = _data(15, 4, 3, 4)
    y = np.zeros(15, np.int64)
    ours = retrieval_metrics(jnp.asarray(x), jnp.asarray(y), ks=KS)
    _check(ours, _pml("euclidean", x, y), dict.fromkeys((f"recall@{k}" for k in KS), 1.0))


def test_all_singletons_is_nan_like_pml():
    x, _ = _data(6, 3, 2, 5)
    y = np.arange(6, dtype=np.int64)
    ours = retrieval_metrics(jnp.asarray(x), jnp.asarray(y))
    pml = _pml("euclidean", x, y)
    for key, pml_key in PML_KEYS.items():
        assert np.isnan(pml[pml_key]) and np.isnan(ours[key])
    assert np.isnan(ours["recall@1"])
