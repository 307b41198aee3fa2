"""Clustering quality for :class:`~calibrax.metric_learning.AccuracyCalculator`: k-means in JAX,
normalized and adjusted mutual information in numpy float64.

- :func:`kmeans`: k-means++ initialisation (each next centre drawn with probability proportional
  to the squared distance to the nearest centre chosen so far) from a ``jax.random`` key, then
  Lloyd iterations until the assignment no longer changes (or ``max_iter``). Fixed shapes, one
  ``jax.lax.while_loop``: jit-compiled per (n, d, n_clusters).
- :func:`normalized_mutual_info` and :func:`adjusted_mutual_info`: scikit-learn's
  ``normalized_mutual_info_score`` and ``adjusted_mutual_info_score`` (arithmetic mean of the
  entropies), same special cases, checked against them to 1e-10.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from calibrax.core import checks

__all__ = ["adjusted_mutual_info", "kmeans", "kmeans_plus_plus", "normalized_mutual_info"]


def _sq_dists(x: jax.Array, centers: jax.Array) -> jax.Array:
    dot = jnp.matmul(x, centers.T, precision=jax.lax.Precision.HIGHEST)
    sq = jnp.sum(x * x, axis=1)[:, None] - 2 * dot + jnp.sum(centers * centers, axis=1)[None, :]
    return jnp.maximum(sq, 0)


@functools.partial(jax.jit, static_argnames=("n_clusters",))
def kmeans_plus_plus(x: jax.Array, n_clusters: int, key: jax.Array) -> jax.Array:
    """(n_clusters, d) k-means++ initial centres (rows of ``x``) drawn with ``key``."""
    n = x.shape[0]
    key0, key_rest = jax.random.split(key)
    first = jax.random.randint(key0, (), 0, n)
    centers = jnp.zeros((n_clusters, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = _sq_dists(x, x[first][None, :])[:, 0]

    def body(i: jax.Array, state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        centers, d2 = state
        total = jnp.sum(d2)
        # All points on the chosen centres: draw uniformly.
        w = jnp.where(total > 0, d2, jnp.ones_like(d2))
        cdf = jnp.cumsum(w)
        u = jax.random.uniform(jax.random.fold_in(key_rest, i), (), x.dtype) * cdf[-1]
        idx = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n - 1)
        centers = centers.at[i].set(x[idx])
        d2 = jnp.minimum(d2, _sq_dists(x, x[idx][None, :])[:, 0])
        return centers, d2

    centers, _ = jax.lax.fori_loop(1, n_clusters, body, (centers, d2))
    return centers


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _lloyd(
    x: jax.Array, centers: jax.Array, max_iter: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    k = centers.shape[0]

    def assign(c: jax.Array) -> jax.Array:
        return jnp.argmin(_sq_dists(x, c), axis=1).astype(jnp.int32)

    def update(labels: jax.Array, c: jax.Array) -> jax.Array:
        sums = jax.ops.segment_sum(x, labels, num_segments=k)
        counts = jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), labels, num_segments=k)
        # An empty cluster keeps its centre.
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], c)

    def cond(state: tuple[Any, ...]) -> jax.Array:
        _, _, it, changed = state
        return changed & (it < max_iter)

    def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
        c, old, it, _ = state
        labels = assign(c)
        return update(labels, c), labels, it + 1, jnp.any(labels != old)

    init = (centers, jnp.full(x.shape[0], -1, jnp.int32), jnp.zeros((), jnp.int32), jnp.array(True))
    centers, _, n_iter, _ = jax.lax.while_loop(cond, body, init)
    labels = assign(centers)
    inertia = jnp.sum(jnp.take_along_axis(_sq_dists(x, centers), labels[:, None], axis=1))
    return labels, centers, inertia, n_iter


def kmeans(
    x: Any,
    n_clusters: int,
    *,
    key: jax.Array | None = None,
    seed: int = 0,
    max_iter: int = 100,
    init: Any = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Lloyd's k-means from a k-means++ start.

    Iterates ``labels = argmin_j |x - c_j|²`` (ties to the lower index) and ``c_j = mean of
    cluster j`` (an empty cluster keeps its centre; scikit-learn relocates it instead) until the
    labels stop changing or after ``max_iter`` iterations, as scikit-learn's
    ``KMeans(algorithm="lloyd", tol=0)``.

    Args:
        x: (n, d) floating, finite data.
        n_clusters: Number of clusters, 1 <= n_clusters <= n.
        key: ``jax.random`` key of the k-means++ draws (default ``jax.random.key(seed)``).
        seed: Used when ``key`` is None.
        max_iter: Largest number of Lloyd iterations.
        init: Optional (n_clusters, d) initial centres instead of k-means++.

    Returns:
        ``(labels, centers, inertia, n_iter)``: (n,) int32 cluster of each row, (n_clusters, d)
        centres, the sum of squared distances to the assigned centres, and the iterations run.

    Raises:
        ValueError: Bad shapes, empty or non-finite ``x``, ``n_clusters`` outside [1, n], or
            ``max_iter`` not a positive integer.
        TypeError: Non-floating ``x``.
    """
    checks.check_rank(x, 2, "x", "samples, dim")
    checks.check_floating(x, "x")
    checks.check_nonempty(x, "x")
    checks.check_finite(x, "x")
    checks.check_k(n_clusters, x.shape[0], "n_clusters", "the number of samples")
    checks.check_positive_int(max_iter, "max_iter")
    x = jnp.asarray(x)
    if init is None:
        key = jax.random.key(seed) if key is None else key
        centers = kmeans_plus_plus(x, int(n_clusters), key)
    else:
        checks.check_rank(init, 2, "init", "n_clusters, dim")
        if tuple(np.shape(init)) != (n_clusters, x.shape[1]):
            raise ValueError(
                f"expected `init` to have shape ({n_clusters}, {x.shape[1]}), got shape "
                f"{tuple(np.shape(init))}"
            )
        centers = jnp.asarray(init, x.dtype)
    return _lloyd(x, centers, int(max_iter))


def _check_labelings(labels_true: Any, labels_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(labels_true), np.asarray(labels_pred)
    checks.check_rank(a, 1, "labels_true", "samples")
    checks.check_rank(b, 1, "labels_pred", "samples")
    checks.check_integer(a, "labels_true")
    checks.check_integer(b, "labels_pred")
    checks.check_same_length(a, b, "labels_true", "labels_pred")
    return a, b


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    total = counts.sum()
    return float(-np.sum((counts / total) * (np.log(counts) - math.log(total))))


def _mutual_info(table: np.ndarray) -> float:
    n = float(table.sum())
    rows, cols = table.sum(1).astype(np.float64), table.sum(0).astype(np.float64)
    i, j = np.nonzero(table)
    nij = table[i, j].astype(np.float64)
    p = nij / n
    terms = p * (np.log(nij) - math.log(n)) + p * (
        -np.log(rows[i] * cols[j]) + math.log(rows.sum()) + math.log(cols.sum())
    )
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    return max(float(terms.sum()), 0.0)


def _trivial(a: np.ndarray, b: np.ndarray) -> bool:
    """Both labelings a single cluster (or both empty): scikit-learn's score 1 case."""
    na, nb = len(np.unique(a)), len(np.unique(b))
    return na == nb == 1 or na == nb == 0


def normalized_mutual_info(labels_true: Any, labels_pred: Any) -> float:
    """scikit-learn's ``normalized_mutual_info_score`` (arithmetic mean): ``MI / ((H(U) +
    H(V)) / 2)``, 1 when both labelings are a single cluster, 0 when the MI is 0.

    Raises:
        ValueError: If the labelings are not 1-D or differ in length.
        TypeError: If they are not integer.
    """
    a, b = _check_labelings(labels_true, labels_pred)
    if _trivial(a, b):
        return 1.0
    table = _contingency(a, b)
    mi = _mutual_info(table)
    if mi == 0:
        return 0.0
    normalizer = (_entropy(table.sum(1)) + _entropy(table.sum(0))) / 2
    return float(mi / normalizer)


def _expected_mutual_info(table: np.ndarray) -> float:
    """E[MI] of two labelings with the row and column sums of ``table`` under the permutation
    (hypergeometric) model, summed over every feasible cell count ``n_ij``."""
    n = int(table.sum())
    a, b = table.sum(1).astype(np.int64), table.sum(0).astype(np.int64)
    if a.size == 1 or b.size == 1:
        return 0.0
    # lg[m] = log((m - 1)!) for m >= 1 (every argument below is >= 1).
    lg = np.array([math.inf] + [math.lgamma(m) for m in range(1, n + 2)])
    ai, bj = np.meshgrid(a, b, indexing="ij")
    ai, bj = ai.ravel(), bj.ravel()
    start = np.maximum(1, ai + bj - n)
    stop = np.minimum(ai, bj)  # inclusive
    length = np.maximum(stop - start + 1, 0)
    cell = np.repeat(np.arange(ai.size), length)
    nij = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length) + start[cell]
    A, B = ai[cell], bj[cell]
    term1 = nij / n
    term2 = np.log(n) + np.log(nij) - np.log(A) - np.log(B)
    log_p = (
        lg[A + 1]
        + lg[B + 1]
        + lg[n - A + 1]
        + lg[n - B + 1]
        - lg[nij + 1]
        - lg[n + 1]
        - lg[A - nij + 1]
        - lg[B - nij + 1]
        - lg[n - A - B + nij + 1]
    )
    return float(np.sum(term1 * term2 * np.exp(log_p)))


def adjusted_mutual_info(labels_true: Any, labels_pred: Any) -> float:
    """scikit-learn's ``adjusted_mutual_info_score`` (arithmetic mean): ``(MI - E[MI]) /
    ((H(U) + H(V)) / 2 - E[MI])``, 1 when both labelings are a single cluster.

    Raises:
        ValueError: If the labelings are not 1-D or differ in length.
        TypeError: If they are not integer.
    """
    a, b = _check_labelings(labels_true, labels_pred)
    if _trivial(a, b):
        return 1.0
    table = _contingency(a, b)
    mi = _mutual_info(table)
    emi = _expected_mutual_info(table)
    normalizer = (_entropy(table.sum(1)) + _entropy(table.sum(0))) / 2
    denominator = normalizer - emi
    eps = np.finfo(np.float64).eps
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    return float((mi - emi) / denominator)
