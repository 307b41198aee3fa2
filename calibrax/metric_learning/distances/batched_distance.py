"""BatchedDistance: a distance computed ``batch_size`` query rows at a time."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.metric_learning.distances.base_distance import BaseDistance

__all__ = ["BatchedDistance"]


@dataclasses.dataclass(frozen=True)
class BatchedDistance:
    """A distance evaluated in blocks of query rows, as pytorch-metric-learning's.

    PML's ``BatchedDistance(distance, iter_fn, batch_size)`` computes the (query, ref) matrix
    ``batch_size`` rows at a time and hands each block to ``iter_fn(mat, s, e)`` (a side-effecting
    callback, typically writing top-k results into preallocated tensors), so the full matrix
    never exists. Here:

    - ``bd(query, ref)`` with ``iter_fn`` behaves like PML: ``iter_fn(mat, s, e)`` per block
      (``mat`` a JAX array of rows ``s:e``), returns None. Without ``iter_fn`` it returns the
      full matrix, assembled from the blocks (PML raises there).
    - :meth:`blocks` yields ``(s, e, mat)`` for a Python loop.
    - :meth:`accumulate` is the functional, ``jax.jit``-able form: ``fn(carry, mat, rows)`` folds
      over the blocks with ``jax.lax.scan`` (the last block padded; ``rows`` holds each block
      row's query index, -1 for padding), so memory is O(batch_size x n_ref) under jit too.

    Attributes not defined here (``is_inverted``, ``margin``, ``smallest``...) are the wrapped
    distance's, as in PML.

    Args:
        distance: The wrapped :class:`~calibrax.metric_learning.BaseDistance`.
        iter_fn: Optional callback ``iter_fn(mat, s, e)``.
        batch_size: Query rows per block (default 32, as PML).

    Raises:
        TypeError: If ``distance`` is not a calibrax distance or ``iter_fn`` is not callable.
        ValueError: If ``batch_size`` is not a positive integer.
    """

    distance: BaseDistance
    iter_fn: Callable[[jax.Array, int, int], Any] | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.distance, BaseDistance):
            raise TypeError(
                "expected `distance` to be a calibrax.metric_learning distance, got "
                f"{type(self.distance).__name__}"
            )
        if self.iter_fn is not None and not callable(self.iter_fn):
            raise TypeError(f"expected `iter_fn` to be callable, got {type(self.iter_fn).__name__}")
        checks.check_positive_int(self.batch_size, "batch_size")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("distance", "iter_fn", "batch_size"):
            raise AttributeError(name)
        return getattr(self.distance, name)

    def _check(self, query: Any, ref: Any) -> tuple[jax.Array, jax.Array]:
        checks.check_rank(query, 2, "query", "batch, embedding_dim")
        if ref is not None:
            checks.check_rank(ref, 2, "ref", "batch, embedding_dim")
            checks.check_dim(ref, 1, query.shape[1], "ref", "embedding size")
        query = jnp.asarray(query)
        return query, query if ref is None else jnp.asarray(ref)

    def blocks(self, query: Any, ref: Any = None) -> Iterator[tuple[int, int, jax.Array]]:
        """``(s, e, distance(query[s:e], ref))`` for consecutive blocks of query rows."""
        query, ref = self._check(query, ref)
        for s in range(0, query.shape[0], self.batch_size):
            e = min(s + self.batch_size, query.shape[0])
            yield s, e, self.distance(query[s:e], ref)

    def __call__(self, query: Any, ref: Any = None) -> jax.Array | None:
        """PML's call: ``iter_fn(mat, s, e)`` per block (returns None); without ``iter_fn``, the
        full (n_query, n_ref) matrix."""
        if self.iter_fn is None:
            return jnp.concatenate([mat for _, _, mat in self.blocks(query, ref)], axis=0)
        for s, e, mat in self.blocks(query, ref):
            self.iter_fn(mat, s, e)
        return None

    def accumulate(
        self,
        fn: Callable[[Any, jax.Array, jax.Array], Any],
        init: Any,
        query: Any,
        ref: Any = None,
    ) -> Any:
        """Fold ``carry = fn(carry, mat, rows)`` over the blocks (``jax.lax.scan``; jit-able).

        ``mat`` is (batch_size, n_ref); ``rows`` (batch_size,) int32 holds the query index of
        each row, -1 for the padding rows of the last block (their ``mat`` rows are those of an
        all-zero query and must be ignored by ``fn``).
        """
        query, ref = self._check(query, ref)
        n, b = query.shape[0], self.batch_size
        n_blocks = -(-n // b)
        pad = n_blocks * b - n
        q = jnp.pad(query, ((0, pad), (0, 0))).reshape(n_blocks, b, query.shape[1])
        rows = jnp.arange(n_blocks * b, dtype=jnp.int32)
        rows = jnp.where(rows < n, rows, -1).reshape(n_blocks, b)

        def step(carry: Any, block: tuple[jax.Array, jax.Array]) -> tuple[Any, None]:
            qb, rb = block
            return fn(carry, self.distance(qb, ref), rb), None

        carry, _ = jax.lax.scan(step, init, (q, rows))
        return carry
