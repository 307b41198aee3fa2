"""AccuracyCalculator: retrieval and clustering accuracy of embeddings, as pytorch-metric-learning's.

The retrieval metrics rank the references by distance to each query with a blocked exact k-nearest
neighbour search in JAX (``block_size`` queries at a time: O(block_size x n_references) memory, no
faiss); the clustering metrics (NMI, AMI) cluster the queries with a seeded k-means in JAX
(:func:`calibrax.metric_learning.clustering.kmeans`) and score the clusters against the labels.

Conventions (pytorch-metric-learning 2.9's, checked against it in the tests):

- ``R`` (per query) is the number of references with the query's label, minus one when the
  reference set includes the query (``ref_includes_query``; the query itself is not its own
  neighbour). Queries with ``R = 0`` ("lone" queries) are left out of every retrieval metric; if
  every query is lone, each retrieval metric is NaN.
- ``k`` neighbours are retrieved: ``None`` = every reference (minus the query itself),
  ``"max_bin_count"`` = the largest ``R``, or an integer.
- ``precision_at_1``: is the nearest neighbour relevant. ``r_precision``: relevant among the
  first ``min(R, k)`` neighbours, divided by ``min(R, k)``. ``mean_average_precision_at_r``:
  ``(1/R) sum_{i <= min(R, k)} P(i) rel(i)``. ``mean_average_precision``: ``(1/R) sum_{i <= k}
  P(i) rel(i)``. ``mean_reciprocal_rank``: ``1/rank`` of the first relevant neighbour among the
  ``k``, 0 if none. ``P(i)`` is the precision among the ``i`` nearest.
- NMI / AMI: k-means (k-means++ from ``seed``) on all the queries with as many clusters as query
  labels; the scores are scikit-learn's ``normalized_mutual_info_score`` (arithmetic mean) and
  ``adjusted_mutual_info_score`` of (query labels, clusters). ``avg_of_avgs`` and
  ``return_per_class`` do not apply to them (as in PML).
- ``avg_of_avgs``: the per-class means (over the queries' classes) averaged; ``return_per_class``:
  the list of per-class means, classes in increasing label order.

Differences from PML: PML casts everything to float32 and searches with faiss (``IndexFlatL2``);
here the search is exact in the embeddings' dtype (float64 when given, ties broken by lower
reference index). PML clusters with faiss k-means (20 iterations from faiss's own random start), so
its NMI/AMI come from a different clustering than ours. Labels must be 1-D integers (no
``label_comparison_fn``). Results are Python floats (lists with ``return_per_class``), as PML's.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from calibrax.core import checks
from calibrax.metric_learning.clustering import adjusted_mutual_info
from calibrax.metric_learning.clustering import kmeans
from calibrax.metric_learning.clustering import normalized_mutual_info

__all__ = ["AccuracyCalculator"]

RETRIEVAL_METRICS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)
CLUSTERING_METRICS = ("AMI", "NMI")
METRICS = CLUSTERING_METRICS + RETRIEVAL_METRICS
DISTANCES = ("euclidean", "cosine")
# Column of each retrieval metric in the kernel's per-query output.
_COLUMN = {
    "precision_at_1": 0,
    "r_precision": 1,
    "mean_average_precision_at_r": 2,
    "mean_average_precision": 3,
    "mean_reciprocal_rank": 4,
}


def _scores(q: jax.Array, r: jax.Array, distance: str) -> jax.Array:
    """Higher is nearer: ``2 q.r - |r|^2`` (squared Euclidean up to a per-query constant) or the
    cosine similarity."""
    dot = jnp.matmul(q, r.T, precision=jax.lax.Precision.HIGHEST)
    if distance == "cosine":
        tiny = jnp.finfo(q.dtype).tiny
        qn = jnp.maximum(jnp.linalg.norm(q, axis=1), tiny)
        rn = jnp.maximum(jnp.linalg.norm(r, axis=1), tiny)
        return dot / qn[:, None] / rn[None, :]
    return 2 * dot - jnp.sum(r * r, axis=1)[None, :]


@functools.partial(
    jax.jit, static_argnames=("num_k", "block_size", "distance", "ref_includes_query")
)
def knn_accuracy_per_query(
    query: jax.Array,
    query_labels: jax.Array,
    relevant: jax.Array,
    reference: jax.Array,
    reference_labels: jax.Array,
    *,
    num_k: int,
    block_size: int,
    distance: str,
    ref_includes_query: bool,
) -> jax.Array:
    """(Q, 5) per-query precision@1, R-precision, AP@R, AP and reciprocal rank over the ``num_k``
    nearest references, ``block_size`` queries at a time (see the module doc).

    ``relevant`` is each query's ``R``. With ``ref_includes_query`` query ``i`` skips reference
    ``i``. Memory: O(block_size x n_references).
    """
    n_q = query.shape[0]
    n_blocks = -(-n_q // block_size)
    pad = n_blocks * block_size - n_q
    dtype = query.dtype

    def padded(x: jax.Array) -> jax.Array:
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape(n_blocks, block_size, *x.shape[1:])

    blocks = (
        padded(query),
        padded(query_labels),
        padded(relevant),
        padded(jnp.arange(n_q, dtype=jnp.int32)),
    )
    ref_index = jnp.arange(reference.shape[0], dtype=jnp.int32)
    rank = jnp.arange(1, num_k + 1, dtype=jnp.int32)
    ref_labels = reference_labels.astype(query_labels.dtype)

    def one_block(block: tuple[jax.Array, ...]) -> jax.Array:
        q, q_lab, r, q_idx = block
        scores = _scores(q, reference, distance)
        if ref_includes_query:
            scores = jnp.where(q_idx[:, None] == ref_index[None, :], -jnp.inf, scores)
        _, nbr = jax.lax.top_k(scores, num_k)
        same = ref_labels[nbr] == q_lab[:, None]
        within_r = rank[None, :] <= r[:, None]
        r_f = jnp.maximum(r, 1).astype(dtype)
        hits_r = same & within_r
        n_r = jnp.maximum(jnp.minimum(r, num_k), 1).astype(dtype)
        r_prec = jnp.sum(hits_r, axis=1, dtype=jnp.int32).astype(dtype) / n_r
        rank_f = rank.astype(dtype)[None, :]
        prec_r = jnp.cumsum(hits_r, axis=1, dtype=jnp.int32).astype(dtype) / rank_f
        ap_r = jnp.sum(jnp.where(hits_r, prec_r, jnp.zeros((), dtype)), axis=1) / r_f
        prec = jnp.cumsum(same, axis=1, dtype=jnp.int32).astype(dtype) / rank_f
        ap = jnp.sum(jnp.where(same, prec, jnp.zeros((), dtype)), axis=1) / r_f
        first = jnp.argmax(same, axis=1)
        rr = jnp.where(jnp.any(same, axis=1), 1 / (first + 1).astype(dtype), jnp.zeros((), dtype))
        p1 = same[:, 0].astype(dtype)
        return jnp.stack([p1, r_prec, ap_r, ap, rr], axis=1)

    out = jax.lax.map(one_block, blocks)
    return out.reshape(n_blocks * block_size, 5)[:n_q]


def _check_metric_names(names: Any, arg: str) -> tuple[str, ...]:
    if not isinstance(names, (tuple, list)):
        raise TypeError(f"expected `{arg}` to be a tuple or list, got {type(names).__name__}")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(
            f"expected `{arg}` to name metrics among {', '.join(METRICS)}, got {unknown[0]!r}"
        )
    return tuple(names)


def _check_embeddings(x: Any, labels: Any, name: str, label_name: str) -> None:
    checks.check_rank(x, 2, name, "samples, dim")
    checks.check_rank(labels, 1, label_name, "samples")
    checks.check_same_length(x, labels, name, label_name)
    checks.check_floating(x, name)
    checks.check_integer(labels, label_name)
    checks.check_nonempty(x, name)
    checks.check_finite(x, name)


class AccuracyCalculator:
    """Retrieval and clustering accuracy of embeddings, as pytorch-metric-learning's.

    Metrics (see the module doc for their definitions): ``precision_at_1``, ``r_precision``,
    ``mean_average_precision_at_r``, ``mean_average_precision``, ``mean_reciprocal_rank``,
    ``NMI`` and ``AMI``.

    Args:
        include: Metrics to compute (default: all).
        exclude: Metrics not to compute.
        avg_of_avgs: Average the per-class means instead of the per-query values.
        return_per_class: Return the list of per-class means (exclusive with ``avg_of_avgs``).
        k: Neighbours retrieved: ``None`` (all references), ``"max_bin_count"`` or a positive
            integer.
        distance: ``"euclidean"`` (PML's default ``IndexFlatL2``) or ``"cosine"``.
        block_size: Queries ranked at once (memory O(block_size x n_references)).
        seed: Seed of the k-means++ initialisation for NMI / AMI.
        kmeans_iters: Largest number of Lloyd iterations (stops earlier when the assignment no
            longer changes).

    Raises:
        TypeError: If ``include`` / ``exclude`` are not tuples or lists.
        ValueError: For unknown metric names, ``avg_of_avgs`` with ``return_per_class``, a bad
            ``k``, ``distance``, ``block_size``, ``seed`` or ``kmeans_iters``.

    Example:
        >>> import numpy as np
        >>> from calibrax.metric_learning import AccuracyCalculator
        >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
        >>> acc = AccuracyCalculator(include=("precision_at_1",))
        >>> acc.get_accuracy(x, np.array([0, 0, 1, 1]))
        {'precision_at_1': 1.0}
    """

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        avg_of_avgs: bool = False,
        return_per_class: bool = False,
        k: int | str | None = None,
        *,
        distance: str = "euclidean",
        block_size: int = 256,
        seed: int = 0,
        kmeans_iters: int = 100,
    ) -> None:
        self.include = _check_metric_names(include, "include")
        self.exclude = _check_metric_names(exclude, "exclude")
        if avg_of_avgs and return_per_class:
            raise ValueError(
                "expected at most one of `avg_of_avgs` and `return_per_class`, got both"
            )
        if not (k is None or k == "max_bin_count"):
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(
                    f"expected `k` to be a positive integer, None or 'max_bin_count', got {k!r}"
                )
        checks.check_choice(distance, DISTANCES, "distance")
        checks.check_positive_int(block_size, "block_size")
        checks.check_positive_int(kmeans_iters, "kmeans_iters")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"expected `seed` to be a non-negative integer, got {seed!r}")
        self.avg_of_avgs = bool(avg_of_avgs)
        self.return_per_class = bool(return_per_class)
        self.k = k
        self.distance = distance
        self.block_size = int(block_size)
        self.seed = int(seed)
        self.kmeans_iters = int(kmeans_iters)

    def metrics(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> tuple[str, ...]:
        """The metrics computed: the constructor's selection, narrowed by ``include``/``exclude``."""
        # In PML's order (its metric functions sorted by name).
        base = [m for m in METRICS if m in (self.include or METRICS) and m not in self.exclude]
        include = _check_metric_names(include, "include")
        exclude = _check_metric_names(exclude, "exclude")
        chosen = [m for m in (include or base) if m not in exclude]
        return tuple(m for m in base if m in chosen)

    def get_accuracy(
        self,
        query: Any,
        query_labels: Any,
        reference: Any = None,
        reference_labels: Any = None,
        ref_includes_query: bool = False,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The metrics of ``query`` against ``reference`` (default: the queries themselves).

        Args:
            query: Query embeddings, (n_queries, dim), floating, finite.
            query_labels: (n_queries,) integer labels.
            reference: Reference embeddings (n_references, dim), same dtype; ``None``: the
                queries (``ref_includes_query`` is then True).
            reference_labels: (n_references,) integer labels; given with ``reference``.
            ref_includes_query: The first ``n_queries`` references are the queries.
            include: Narrow the metrics for this call.
            exclude: Leave metrics out for this call.

        Returns:
            ``{metric: float}`` (a list of per-class floats with ``return_per_class``).

        Raises:
            ValueError: Bad shapes, empty or non-finite embeddings, ``reference`` without
                ``reference_labels`` (or the reverse), ``ref_includes_query`` with references
                whose first rows are not the queries, or an integer ``k`` above the number of
                references a query can retrieve.
            TypeError: Non-floating embeddings, non-integer labels, or different dtypes.
        """
        names = self.metrics(include, exclude)
        _check_embeddings(query, query_labels, "query", "query_labels")
        if (reference is None) != (reference_labels is None):
            given = "reference" if reference_labels is None else "reference_labels"
            raise ValueError(
                "expected `reference` and `reference_labels` to be given together, got only "
                f"`{given}`"
            )
        q = jnp.asarray(query)
        q_lab = np.asarray(query_labels)
        if reference is None:
            r, r_lab, ref_includes_query = q, q_lab, True
        else:
            _check_embeddings(reference, reference_labels, "reference", "reference_labels")
            checks.check_dim(reference, 1, q.shape[1], "reference", "embedding size")
            checks.check_same_dtype(query, reference, "query", "reference")
            r, r_lab = jnp.asarray(reference), np.asarray(reference_labels)
            if ref_includes_query:
                n = q.shape[0]
                if (
                    r.shape[0] < n
                    or not np.array_equal(np.asarray(r[:n]), np.asarray(q))
                    or not np.array_equal(r_lab[:n], q_lab)
                ):
                    raise ValueError(
                        "expected the first len(query) rows of `reference` and "
                        "`reference_labels` to be `query` and `query_labels` when "
                        "`ref_includes_query` is True"
                    )
        out: dict[str, Any] = {}
        retrieval = [m for m in names if m in RETRIEVAL_METRICS]
        if retrieval:
            out.update(self._retrieval(q, q_lab, r, r_lab, bool(ref_includes_query), retrieval))
        clustering = [m for m in names if m in CLUSTERING_METRICS]
        if clustering:
            clusters = np.asarray(self.cluster_labels(q, q_lab))
            scores = {"NMI": normalized_mutual_info, "AMI": adjusted_mutual_info}
            out.update({m: scores[m](q_lab, clusters) for m in clustering})
        return {m: out[m] for m in names}

    def cluster_labels(self, query: Any, query_labels: Any) -> jax.Array:
        """The k-means clusters of the queries (as many clusters as query labels)."""
        n_clusters = len(np.unique(np.asarray(query_labels)))
        return kmeans(query, n_clusters, seed=self.seed, max_iter=self.kmeans_iters)[0]

    def num_neighbors(self, max_bin_count: int, n_references: int, ref_includes_query: bool) -> int:
        """The ``k`` actually retrieved (PML's ``determine_k``)."""
        self_count = int(ref_includes_query)
        available = n_references - self_count
        if self.k == "max_bin_count":
            return max_bin_count - self_count
        if self.k is None:
            return available
        if self.k > available:
            raise ValueError(
                f"expected `k` to be at most the number of references a query can retrieve "
                f"({available}), got {self.k}"
            )
        return int(self.k)

    def _retrieval(
        self,
        q: jax.Array,
        q_lab: np.ndarray,
        r: jax.Array,
        r_lab: np.ndarray,
        ref_includes_query: bool,
        names: list[str],
    ) -> dict[str, Any]:
        uniq_q, inverse = np.unique(q_lab, return_inverse=True)
        uniq_r, counts_r = np.unique(r_lab, return_counts=True)
        pos = np.searchsorted(uniq_r, uniq_q)
        pos = np.minimum(pos, len(uniq_r) - 1)
        bin_counts = np.where(uniq_r[pos] == uniq_q, counts_r[pos], 0)
        self_count = int(ref_includes_query)
        relevant = np.maximum(bin_counts - self_count, 0)[inverse]
        not_lone = relevant > 0
        num_k = self.num_neighbors(int(bin_counts.max()), r.shape[0], ref_includes_query)
        if self.k is not None and self.k != "max_bin_count" and self.k < bin_counts.max():
            limited = {"r_precision", "mean_average_precision_at_r"}.intersection(names)
            if limited:
                warnings.warn(
                    f"computing {sorted(limited)} with k={self.k} below the largest class size "
                    f"({int(bin_counts.max())}) gives wrong values; use k='max_bin_count'",
                    stacklevel=3,
                )
        if not np.any(not_lone) or num_k < 1:
            return {m: self._nan(uniq_q) for m in names}
        per_query = np.asarray(
            knn_accuracy_per_query(
                q,
                jnp.asarray(q_lab),
                jnp.asarray(relevant.astype(np.int32)),
                r,
                jnp.asarray(r_lab),
                num_k=num_k,
                block_size=min(self.block_size, q.shape[0]),
                distance=self.distance,
                ref_includes_query=ref_includes_query,
            ),
            np.float64,
        )[not_lone]
        labels = q_lab[not_lone]
        return {m: self._average(per_query[:, _COLUMN[m]], labels) for m in names}

    def _nan(self, unique_labels: np.ndarray) -> Any:
        if self.return_per_class:
            return [float("nan")] * len(unique_labels)
        return float("nan")

    def _average(self, values: np.ndarray, labels: np.ndarray) -> Any:
        if not (self.avg_of_avgs or self.return_per_class):
            return float(np.mean(values))
        uniq, inverse = np.unique(labels, return_inverse=True)
        sums = np.bincount(inverse, weights=values, minlength=len(uniq))
        per_class = sums / np.bincount(inverse, minlength=len(uniq))
        if self.return_per_class:
            return [float(v) for v in per_class]
        return float(np.mean(per_class))
