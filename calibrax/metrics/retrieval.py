"""Retrieval metrics as classes: Recall@K, precision@1, R-precision, MAP@R.

- ``RecallAtK``, ``PrecisionAt1``, ``RPrecision``, ``MAPAtR``: ``MetricProtocol`` classes where
  ``predictions`` are the embeddings and ``targets`` their integer labels (leave-one-out).
- ``StreamingRetrieval``: a buffer of declared capacity ``max_samples`` (fixed shapes, so
  ``update`` runs under ``nnx.jit``) and a count; ``compute`` ranks every stored sample against all
  the others with the same core as :func:`calibrax.functional.retrieval_metrics`.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from calibrax.core import checks
from calibrax.core.base import Metric
from calibrax.core.base import StatefulMetric
from calibrax.core.registry import register
from calibrax.core.state import MetricState
from calibrax.functional import retrieval as R

__all__ = ["MAPAtR", "PrecisionAt1", "RPrecision", "RecallAtK", "StreamingRetrieval"]


def _inputs() -> tuple[jax.Array, jax.Array]:
    key_e, key_l = jax.random.split(jax.random.key(6))
    labels = jax.random.randint(key_l, (20,), 0, 4, dtype=jnp.int32)
    centres = jax.random.normal(key_e, (4, 6), jnp.float32)
    return centres[labels] + jax.random.normal(key_l, (20, 6), jnp.float32), labels


def _metric_example(factory):
    def example():
        return (lambda e, y: factory()(e, y)), _inputs()

    return example


@jax.jit
def _append_rows(
    buffer: jax.Array,
    stored: jax.Array,
    count: jax.Array,
    embeddings: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Write the ``valid`` rows after the first ``count`` rows of the buffer; count them all."""
    offsets = jnp.cumsum(valid.astype(jnp.int32)) - 1
    # Invalid rows and rows past the capacity go to an out-of-range index and are dropped.
    rows = jnp.where(valid, count + offsets, buffer.shape[0])
    buffer = buffer.at[rows].set(embeddings.astype(buffer.dtype), mode="drop")
    stored = stored.at[rows].set(labels.astype(stored.dtype), mode="drop")
    return buffer, stored, count + jnp.sum(valid, dtype=jnp.int32)


class _RetrievalMetric(Metric):
    """``MetricProtocol`` shell: ``predictions`` are embeddings, ``targets`` integer labels."""

    _key: ClassVar[str]
    higher_is_better = True

    def __init__(
        self, *, ks: tuple[int, ...] = (1,), distance: str = "euclidean", block_size: int = 256
    ) -> None:
        ks = R.validate_retrieval_config(ks, distance, block_size)
        super().__init__(ks=ks, distance=distance, block_size=block_size)

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Check the embeddings, labels and ``k`` (see :func:`calibrax.functional.retrieval_metrics`).

        Raises:
            ValueError: If inputs are incompatible.
            TypeError: If a dtype is wrong.
        """
        R.validate_retrieval_inputs(predictions, targets, None, None, self.config["ks"])

    def _compute(self, predictions: jax.Array, targets: jax.Array, **config: Any) -> jax.Array:
        return R.compute_retrieval(predictions, targets, None, None, **config)[self._key]


@register(
    "RecallAtK",
    kind="metric",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_metric_example(lambda: RecallAtK(k=3, block_size=8)),
)
class RecallAtK(_RetrievalMetric):
    """Recall@K in the leave-one-out setting (see :func:`calibrax.functional.recall_at_k`).

    Args:
        k: How many neighbours count, at most the number of samples minus one.
        distance: ``"euclidean"`` (default) or ``"cosine"``.
        block_size: Queries ranked at a time.

    Raises:
        ValueError: A malformed setting (at construction); bad inputs or a too large ``k`` (at
            compute).
    """

    name = "recall_at_k"

    def __init__(self, *, k: int = 1, distance: str = "euclidean", block_size: int = 256) -> None:
        super().__init__(ks=(k,), distance=distance, block_size=block_size)
        self._key = f"recall@{k}"


@register(
    "PrecisionAt1",
    kind="metric",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_metric_example(lambda: PrecisionAt1(block_size=8)),
)
class PrecisionAt1(_RetrievalMetric):
    """Precision@1, leave-one-out (see :func:`calibrax.functional.precision_at_1`).

    Args:
        distance: ``"euclidean"`` (default) or ``"cosine"``.
        block_size: Queries ranked at a time.
    """

    name = "precision_at_1"
    _key = "precision_at_1"

    def __init__(self, *, distance: str = "euclidean", block_size: int = 256) -> None:
        super().__init__(distance=distance, block_size=block_size)


@register(
    "RPrecision",
    kind="metric",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_metric_example(lambda: RPrecision(block_size=8)),
)
class RPrecision(_RetrievalMetric):
    """R-precision, leave-one-out (see :func:`calibrax.functional.r_precision`).

    Args:
        distance: ``"euclidean"`` (default) or ``"cosine"``.
        block_size: Queries ranked at a time.
    """

    name = "r_precision"
    _key = "r_precision"

    def __init__(self, *, distance: str = "euclidean", block_size: int = 256) -> None:
        super().__init__(distance=distance, block_size=block_size)


@register(
    "MAPAtR",
    kind="metric",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_metric_example(lambda: MAPAtR(block_size=8)),
)
class MAPAtR(_RetrievalMetric):
    """MAP@R, leave-one-out (see :func:`calibrax.functional.map_at_r`).

    Args:
        distance: ``"euclidean"`` (default) or ``"cosine"``.
        block_size: Queries ranked at a time.
    """

    name = "map_at_r"
    _key = "map_at_r"

    def __init__(self, *, distance: str = "euclidean", block_size: int = 256) -> None:
        super().__init__(distance=distance, block_size=block_size)


def _streaming_example():
    def fn(e: jax.Array, y: jax.Array) -> jax.Array:
        metric = StreamingRetrieval(max_samples=32, dim=e.shape[1], ks=(1, 3), block_size=8)
        metric.update(embeddings=e[:7], labels=y[:7])
        metric.update(embeddings=e[7:], labels=y[7:])
        return jnp.stack(list(metric.compute().values()))

    return fn, _inputs()


@register(
    "StreamingRetrieval",
    kind="stateful_metric",
    tier=0,
    domain="retrieval",
    higher_is_better=True,
    example=_streaming_example,
)
class StreamingRetrieval(StatefulMetric):
    """Streaming Recall@K, precision@1, R-precision and MAP@R over a fixed-capacity buffer.

    ``update(*, embeddings, labels, **kwargs)`` appends a batch (other keywords are ignored);
    ``compute()`` ranks every stored sample against all the others (leave-one-out) and returns the
    dict of :func:`calibrax.functional.retrieval_metrics`. The result does not depend on how the
    samples were split into batches.

    Capacity: the buffer holds ``max_samples`` rows. Eagerly, an ``update`` that would overflow it
    raises. Under ``jax.jit`` / ``nnx.jit`` it cannot raise: rows past the capacity are dropped
    but still counted, and ``compute`` then raises (eagerly) or returns NaN (under jit), so an
    overflow never gives a wrong number.

    Args:
        max_samples: Capacity of the buffer (at least 2).
        dim: Embedding size.
        ks: The ``K`` of each Recall@K.
        distance: ``"euclidean"`` (default) or ``"cosine"``.
        block_size: Queries ranked at a time in ``compute``; memory is
            ``O(block_size × max_samples)``.
        dtype: Dtype of the stored embeddings.
        label_dtype: Integer dtype of the stored labels.

    Raises:
        ValueError: A malformed setting (at construction); bad inputs or an overflow (at update);
            fewer than 2 samples, an overflow or a too large ``k`` (at compute).
    """

    name = "retrieval"
    higher_is_better = True

    def __init__(
        self,
        *,
        max_samples: int,
        dim: int,
        ks: tuple[int, ...] = (1,),
        distance: str = "euclidean",
        block_size: int = 256,
        dtype: Any = jnp.float32,
        label_dtype: Any = jnp.int32,
    ) -> None:
        checks.check_positive_int(max_samples, "max_samples")
        if max_samples < 2:
            raise ValueError(f"expected `max_samples` to be at least 2, got {max_samples}")
        checks.check_positive_int(dim, "dim")
        self.ks = R.validate_retrieval_config(ks, distance, block_size)
        self.distance = distance
        self.block_size = min(block_size, max_samples)
        self.max_samples = max_samples
        self.embeddings = MetricState(jnp.zeros((max_samples, dim), dtype))
        self.labels = MetricState(jnp.zeros((max_samples,), label_dtype))
        self.count = MetricState(jnp.zeros((), jnp.int32))

    def _append(self, embeddings: jax.Array, labels: jax.Array, valid: jax.Array) -> None:
        buffer, stored, count = _append_rows(
            self.embeddings[...], self.labels[...], self.count[...], embeddings, labels, valid
        )
        self.embeddings[...] = buffer
        self.labels[...] = stored
        self.count[...] = count

    def _check_capacity(self, count: Any, where: str) -> None:
        if checks.is_concrete(count) and int(count) > self.max_samples:
            raise ValueError(
                f"expected at most max_samples={self.max_samples} samples {where}, got "
                f"{int(count)}; construct the metric with a larger `max_samples`"
            )

    def update(
        self,
        *,
        embeddings: jax.Array,
        labels: jax.Array,
        mask: jax.Array | None = None,
        **kwargs: Any,
    ) -> None:
        """Append a batch of ``embeddings`` ``(batch, dim)`` and integer ``labels`` ``(batch,)``.

        Args:
            embeddings: Floating ``(batch, dim)``.
            labels: Integer ``(batch,)``.
            mask: Optional ``(batch,)`` bool / 0-1 vector; only kept rows are appended, in order.
            **kwargs: Ignored (other metrics' inputs in ``nnx.MultiMetric``).

        Raises:
            ValueError: Wrong shapes or embedding size, NaN/Inf, or (eagerly) an overflow.
            TypeError: Non-floating embeddings or non-integer labels.
        """
        del kwargs
        rows = self._rows(embeddings, mask)
        if rows is None:
            return
        checks.check_rank(embeddings, 2, "embeddings", "batch, dim")
        checks.check_rank(labels, 1, "labels", "batch")
        checks.check_same_length(embeddings, labels, "embeddings", "labels")
        checks.check_dim(
            embeddings, 1, self.embeddings[...].shape[1], "embeddings", "embedding size"
        )
        checks.check_floating(embeddings, "embeddings")
        checks.check_integer(labels, "labels")
        checks.check_finite(rows.select(embeddings)[0], "embeddings")
        keep = rows.keep if rows.keep is not None else jnp.ones(embeddings.shape[0], dtype=bool)
        count = self.count[...]
        if checks.is_concrete(count) and checks.is_concrete(keep):
            self._check_capacity(int(count) + int(np.sum(keep)), "after this update")
        self._append(embeddings, labels, keep)

    def merge(self, other: StatefulMetric) -> None:
        """Append ``other``'s stored samples after this metric's.

        Raises:
            TypeError: If ``other`` is a different metric class.
            ValueError: If the buffers differ in shape or dtype, or (eagerly) on overflow.
        """
        self._check_mergeable(other)
        count = self.count[...] + other.count[...]
        self._check_capacity(count, "after merging")
        valid = jnp.arange(self.max_samples, dtype=jnp.int32) < other.count[...]
        self._append(other.embeddings[...], other.labels[...], valid)
        # A counted overflow on either side stays counted, so compute can refuse it.
        self.count[...] = count

    def reduce(self, axis_name: str) -> None:
        """Not supported: a buffer is not a sum; gather the metrics and :meth:`merge` them.

        Raises:
            NotImplementedError: Always.
        """
        raise NotImplementedError(
            "StreamingRetrieval keeps a buffer, not additive statistics: gather the per-device "
            "metrics and combine them with `merge`"
        )

    def compute(self) -> dict[str, jax.Array]:
        """Rank every stored sample against the others; the dict of ``retrieval_metrics``.

        Raises:
            ValueError: (eagerly) fewer than 2 samples, an overflow, or a ``k`` larger than the
                number of samples minus one.
        """
        count = self.count[...]
        checks.check_accumulated(count, 2)
        self._check_capacity(count, "accumulated")
        if checks.is_concrete(count):
            for k in self.ks:
                checks.check_k(k, int(count) - 1, "k", "the number of references per query")
        valid = jnp.arange(self.max_samples, dtype=jnp.int32) < count
        embeddings = self.embeddings[...]
        sums, used = R.retrieval_sums(
            embeddings,
            self.labels[...],
            valid,
            embeddings,
            self.labels[...],
            valid,
            leave_one_out=True,
            ks=self.ks,
            distance=self.distance,
            block_size=self.block_size,
        )
        results = R.finalize_retrieval(sums, used, self.ks)
        ok = count <= self.max_samples
        return {key: jnp.where(ok, value, jnp.nan) for key, value in results.items()}
