"""Retrieval quality of embeddings: Recall@K, precision@1, R-precision and MAP@R.

Every query ranks the references by distance to it; a reference is relevant when it has the
query's label. Two settings:

- **Leave-one-out** (default): every sample queries all the others, as pytorch-metric-learning's
  ``AccuracyCalculator.get_accuracy(query, query_labels)`` (``ref_includes_query=True``).
- **Query vs reference**: pass ``reference_embeddings`` and ``reference_labels``; no sample is
  excluded (``ref_includes_query=False``).

Conventions (pytorch-metric-learning's, checked against it in the tests):

- ``R`` for a query is the number of relevant references. Queries with ``R = 0`` (in leave-one-out,
  the only sample of their class) are left out of every average, Recall@K included; if no query
  has a relevant reference, every metric is NaN.
- Precision@1 is the fraction of queries whose nearest reference is relevant; Recall@K the
  fraction with at least one relevant reference among the ``K`` nearest; R-precision the mean of
  ``(relevant among the R nearest) / R``; MAP@R the mean of
  ``(1/R) Σ_{i ≤ R} P(i) · rel(i)``, with ``P(i)`` the precision among the ``i`` nearest.
- ``distance="euclidean"`` (default, as ``AccuracyCalculator``'s default faiss ``IndexFlatL2``)
  ranks by Euclidean distance on the raw embeddings, through the rank-equivalent score
  ``2 q·r - |r|^2`` (one matmul at ``Precision.HIGHEST``; distances closer than the float
  rounding of that score may rank differently from an exact computation); ``"cosine"`` ranks by
  cosine similarity (embeddings L2-normalised first).
- Ties in distance are broken by reference index, lower first (``jax.lax.top_k``'s rule), so the
  result is deterministic.

Similarities are computed ``block_size`` queries at a time (the last block padded), and each block
is fully ranked with ``jax.lax.top_k``, so memory is ``O(block_size × n_references)`` and the
result is exact for any class size.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register

__all__ = [
    "DISTANCES",
    "compute_retrieval",
    "finalize_retrieval",
    "map_at_r",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
    "retrieval_metrics",
    "retrieval_sums",
    "validate_retrieval_config",
    "validate_retrieval_inputs",
]

DISTANCES = ("euclidean", "cosine")


def _scores(queries: jax.Array, references: jax.Array, distance: str) -> jax.Array:
    """Higher is nearer: ``2 q·r - |r|^2`` (Euclidean, ``|q|^2`` dropped) or cosine similarity."""
    dot = jnp.matmul(queries, references.T, precision=jax.lax.Precision.HIGHEST)
    if distance == "cosine":
        # Normalising the dot products is the same as normalising the embeddings first.
        tiny = jnp.finfo(queries.dtype).tiny
        q_norm = jnp.maximum(jnp.linalg.norm(queries, axis=1), tiny)
        r_norm = jnp.maximum(jnp.linalg.norm(references, axis=1), tiny)
        return dot / q_norm[:, None] / r_norm[None, :]
    return 2.0 * dot - jnp.sum(references * references, axis=1)[None, :]


@functools.partial(jax.jit, static_argnames=("leave_one_out", "ks", "distance", "block_size"))
def retrieval_sums(
    queries: jax.Array,
    query_labels: jax.Array,
    query_valid: jax.Array,
    references: jax.Array,
    reference_labels: jax.Array,
    reference_valid: jax.Array,
    *,
    leave_one_out: bool,
    ks: tuple[int, ...],
    distance: str,
    block_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Sums of per-query scores over the valid queries with a relevant reference.

    The shared core, without validation. ``query_valid`` and ``reference_valid`` mark the rows that
    take part (the streaming class keeps a padded buffer). With ``leave_one_out`` the queries are
    the references and query ``i`` skips reference ``i``.

    Returns:
        ``(sums, count)``: ``sums`` has shape ``(len(ks) + 3,)`` holding the sums of recall@k for
        each ``k``, precision@1, R-precision and AP@R; ``count`` is the number of queries summed.
    """
    dtype = queries.dtype
    n_q = queries.shape[0]
    n_r = references.shape[0]
    num_neighbors = n_r - 1 if leave_one_out else n_r
    n_blocks = -(-n_q // block_size)
    pad = n_blocks * block_size - n_q
    reference_labels = reference_labels.astype(query_labels.dtype)

    def padded(x: jax.Array) -> jax.Array:
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape(n_blocks, block_size, *x.shape[1:])

    blocks = (
        padded(queries),
        padded(query_labels),
        padded(query_valid),
        padded(jnp.arange(n_q, dtype=jnp.int32)),
    )
    positions = jnp.arange(num_neighbors, dtype=jnp.int32)
    ref_index = jnp.arange(n_r, dtype=jnp.int32)

    def block_sums(block: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        q, q_lab, q_ok, q_idx = block
        excluded = jnp.broadcast_to(~reference_valid[None, :], (block_size, n_r))
        if leave_one_out:
            excluded = excluded | (q_idx[:, None] == ref_index[None, :])
        scores = jnp.where(excluded, -jnp.inf, _scores(q, references, distance))
        _, nbr = jax.lax.top_k(scores, num_neighbors)
        nbr_ok = ~jnp.take_along_axis(excluded, nbr, axis=1)
        same = (reference_labels[nbr] == q_lab[:, None]) & nbr_ok
        r = jnp.sum(
            (reference_labels[None, :] == q_lab[:, None]) & ~excluded, axis=1, dtype=jnp.int32
        )
        used = q_ok & (r > 0)
        r_safe = jnp.maximum(r, 1).astype(dtype)
        hits_r = same & (positions[None, :] < r[:, None])
        r_prec = jnp.sum(hits_r, axis=1).astype(dtype) / r_safe
        precision_at_i = (
            jnp.cumsum(hits_r, axis=1).astype(dtype) / (positions + 1).astype(dtype)[None, :]
        )
        ap_r = jnp.sum(jnp.where(hits_r, precision_at_i, 0.0), axis=1) / r_safe
        recalls = [jnp.any(same[:, :k], axis=1).astype(dtype) for k in ks]
        per_query = jnp.stack([*recalls, same[:, 0].astype(dtype), r_prec, ap_r], axis=1)
        sums = jnp.sum(jnp.where(used[:, None], per_query, 0.0), axis=0)
        return sums, jnp.sum(used, dtype=jnp.int32)

    sums, counts = jax.lax.map(block_sums, blocks)
    return jnp.sum(sums, axis=0), jnp.sum(counts)


def finalize_retrieval(
    sums: jax.Array, count: jax.Array, ks: tuple[int, ...]
) -> dict[str, jax.Array]:
    """Turn :func:`retrieval_sums`' output into the named means (NaN when ``count`` is 0)."""
    means = sums / count.astype(sums.dtype)
    names = [f"recall@{k}" for k in ks] + ["precision_at_1", "r_precision", "map_at_r"]
    return {name: means[i] for i, name in enumerate(names)}


def validate_retrieval_config(ks: Any, distance: Any, block_size: Any) -> tuple[int, ...]:
    """Check the static settings; returns ``ks`` as a tuple.

    Raises:
        ValueError: ``ks`` not a non-empty sequence of positive integers, an unknown
            ``distance``, or ``block_size`` not a positive integer.
    """
    if isinstance(ks, (int, bool)) or not isinstance(ks, (tuple, list)) or not ks:
        raise ValueError(f"expected `ks` to be a non-empty tuple of positive integers, got {ks!r}")
    for k in ks:
        checks.check_positive_int(k, "k")
    checks.check_choice(distance, DISTANCES, "distance")
    checks.check_positive_int(block_size, "block_size")
    return tuple(int(k) for k in ks)


def _validate_embeddings(x: Any, labels: Any, name: str, label_name: str) -> None:
    checks.check_rank(x, 2, name, "samples, dim")
    checks.check_rank(labels, 1, label_name, "samples")
    checks.check_same_length(x, labels, name, label_name)
    checks.check_floating(x, name)
    checks.check_integer(labels, label_name)
    checks.check_nonempty(x, name)
    checks.check_finite(x, name)


def validate_retrieval_inputs(
    embeddings: Any,
    labels: Any,
    reference_embeddings: Any,
    reference_labels: Any,
    ks: tuple[int, ...],
) -> None:
    """Check the arrays of :func:`retrieval_metrics` (see its ``Raises``) and each ``k``."""
    _validate_embeddings(embeddings, labels, "embeddings", "labels")
    if (reference_embeddings is None) != (reference_labels is None):
        given = "reference_embeddings" if reference_labels is None else "reference_labels"
        raise ValueError(
            "expected `reference_embeddings` and `reference_labels` to be given together, "
            f"got only `{given}`"
        )
    if reference_embeddings is None:
        checks.check_min_samples(embeddings, 2, "embeddings")
        n_refs = embeddings.shape[0] - 1
    else:
        _validate_embeddings(
            reference_embeddings, reference_labels, "reference_embeddings", "reference_labels"
        )
        checks.check_dim(
            reference_embeddings, 1, embeddings.shape[1], "reference_embeddings", "embedding size"
        )
        checks.check_same_dtype(
            embeddings, reference_embeddings, "embeddings", "reference_embeddings"
        )
        n_refs = reference_embeddings.shape[0]
    for k in ks:
        checks.check_k(k, n_refs, "k", "the number of references per query")


def compute_retrieval(
    embeddings: jax.Array,
    labels: jax.Array,
    reference_embeddings: jax.Array | None,
    reference_labels: jax.Array | None,
    ks: tuple[int, ...],
    distance: str,
    block_size: int,
) -> dict[str, jax.Array]:
    """:func:`retrieval_metrics` without validation (the inputs are assumed checked)."""
    leave_one_out = reference_embeddings is None
    if leave_one_out:
        reference_embeddings, reference_labels = embeddings, labels
    sums, count = retrieval_sums(
        embeddings,
        labels,
        jnp.ones(embeddings.shape[0], dtype=bool),
        reference_embeddings,
        reference_labels,
        jnp.ones(reference_embeddings.shape[0], dtype=bool),
        leave_one_out=leave_one_out,
        ks=ks,
        distance=distance,
        block_size=min(block_size, embeddings.shape[0]),
    )
    return finalize_retrieval(sums, count, ks)


def _example_inputs() -> tuple[jax.Array, jax.Array]:
    key_e, key_l = jax.random.split(jax.random.key(3))
    labels = jax.random.randint(key_l, (24,), 0, 4, dtype=jnp.int32)
    centres = jax.random.normal(key_e, (4, 8), jnp.float32)
    noise = jax.random.normal(jax.random.fold_in(key_e, 1), (24, 8), jnp.float32)
    return centres[labels] + noise, labels


def _example(fn_name: str):
    def example():
        fn = globals()[fn_name]
        return (lambda e, y: fn(e, y, block_size=10)), _example_inputs()

    return example


@register(
    "retrieval_metrics",
    kind="function",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=lambda: (
        lambda e, y: jnp.stack(list(retrieval_metrics(e, y, ks=(1, 4), block_size=10).values())),
        _example_inputs(),
    ),
)
def retrieval_metrics(
    embeddings: Float[Array, "n dim"],
    labels: Int[Array, " n"],
    *,
    reference_embeddings: Float[Array, "m dim"] | None = None,
    reference_labels: Int[Array, " m"] | None = None,
    ks: tuple[int, ...] = (1,),
    distance: str = "euclidean",
    block_size: int = 256,
) -> dict[str, jax.Array]:
    """Recall@K for each ``K`` in ``ks``, precision@1, R-precision and MAP@R in one pass.

    See the module docstring for the conventions (leave-one-out, ``R = 0`` queries, ties).

    Args:
        embeddings: Query embeddings, shape ``(n, dim)``, floating.
        labels: Integer class labels, shape ``(n,)``.
        reference_embeddings: Optional references, shape ``(m, dim)``, same dtype; without them
            each sample queries all the others.
        reference_labels: Integer labels of the references, shape ``(m,)``.
        ks: The ``K`` of each Recall@K, each at most the number of references per query
            (``n - 1`` or ``m``).
        distance: ``"euclidean"`` (default) or ``"cosine"``.
        block_size: Queries ranked at a time; memory is ``O(block_size × references)``.

    Returns:
        A dict with keys ``"recall@K"`` for each ``K``, ``"precision_at_1"``, ``"r_precision"``
        and ``"map_at_r"``; scalars in the embeddings' dtype.

    Raises:
        ValueError: Wrong ranks, lengths or embedding sizes, empty or non-finite embeddings,
            fewer than 2 samples for leave-one-out, references without labels (or the reverse),
            a ``K`` larger than the number of references per query, bad ``ks``, ``distance`` or
            ``block_size``.
        TypeError: Non-floating embeddings, non-integer labels, or different embedding dtypes.

    References:
        Musgrave, Belongie and Lim, 2020, "A Metric Learning Reality Check", arXiv:2003.08505
        (R-precision and MAP@R).
    """
    ks = validate_retrieval_config(ks, distance, block_size)
    validate_retrieval_inputs(embeddings, labels, reference_embeddings, reference_labels, ks)
    return compute_retrieval(
        embeddings, labels, reference_embeddings, reference_labels, ks, distance, block_size
    )


def _single(
    key: str,
    embeddings: jax.Array,
    labels: jax.Array,
    reference_embeddings: jax.Array | None,
    reference_labels: jax.Array | None,
    ks: tuple[int, ...],
    distance: str,
    block_size: int,
) -> jax.Array:
    return retrieval_metrics(
        embeddings,
        labels,
        reference_embeddings=reference_embeddings,
        reference_labels=reference_labels,
        ks=ks,
        distance=distance,
        block_size=block_size,
    )[key]


@register(
    "recall_at_k",
    kind="function",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_example("recall_at_k"),
)
def recall_at_k(
    embeddings: Float[Array, "n dim"],
    labels: Int[Array, " n"],
    *,
    k: int = 1,
    reference_embeddings: Float[Array, "m dim"] | None = None,
    reference_labels: Int[Array, " m"] | None = None,
    distance: str = "euclidean",
    block_size: int = 256,
) -> jax.Array:
    """Recall@K: the fraction of queries with a relevant reference among their ``k`` nearest.

    Arguments, conventions and errors as :func:`retrieval_metrics` (with ``ks=(k,)``).

    Returns:
        A scalar in the embeddings' dtype.
    """
    return _single(
        f"recall@{k}",
        embeddings,
        labels,
        reference_embeddings,
        reference_labels,
        (k,),
        distance,
        block_size,
    )


@register(
    "precision_at_1",
    kind="function",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_example("precision_at_1"),
)
def precision_at_1(
    embeddings: Float[Array, "n dim"],
    labels: Int[Array, " n"],
    *,
    reference_embeddings: Float[Array, "m dim"] | None = None,
    reference_labels: Int[Array, " m"] | None = None,
    distance: str = "euclidean",
    block_size: int = 256,
) -> jax.Array:
    """Precision@1: the fraction of queries whose nearest reference is relevant.

    Arguments, conventions and errors as :func:`retrieval_metrics`.

    Returns:
        A scalar in the embeddings' dtype.
    """
    return _single(
        "precision_at_1",
        embeddings,
        labels,
        reference_embeddings,
        reference_labels,
        (1,),
        distance,
        block_size,
    )


@register(
    "r_precision",
    kind="function",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_example("r_precision"),
)
def r_precision(
    embeddings: Float[Array, "n dim"],
    labels: Int[Array, " n"],
    *,
    reference_embeddings: Float[Array, "m dim"] | None = None,
    reference_labels: Int[Array, " m"] | None = None,
    distance: str = "euclidean",
    block_size: int = 256,
) -> jax.Array:
    """R-precision: the mean fraction of relevant references among each query's ``R`` nearest.

    Arguments, conventions and errors as :func:`retrieval_metrics`.

    Returns:
        A scalar in the embeddings' dtype.
    """
    return _single(
        "r_precision",
        embeddings,
        labels,
        reference_embeddings,
        reference_labels,
        (1,),
        distance,
        block_size,
    )


@register(
    "map_at_r",
    kind="function",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_example("map_at_r"),
)
def map_at_r(
    embeddings: Float[Array, "n dim"],
    labels: Int[Array, " n"],
    *,
    reference_embeddings: Float[Array, "m dim"] | None = None,
    reference_labels: Int[Array, " m"] | None = None,
    distance: str = "euclidean",
    block_size: int = 256,
) -> jax.Array:
    """MAP@R: mean average precision over each query's ``R`` nearest references.

    .. math::
        \\mathrm{AP@R} = \\frac{1}{R} \\sum_{i=1}^{R} P(i)\\, \\mathrm{rel}(i)

    Arguments, conventions and errors as :func:`retrieval_metrics`.

    Returns:
        A scalar in the embeddings' dtype.
    """
    return _single(
        "map_at_r",
        embeddings,
        labels,
        reference_embeddings,
        reference_labels,
        (1,),
        distance,
        block_size,
    )
