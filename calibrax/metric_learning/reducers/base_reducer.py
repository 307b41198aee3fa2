"""The reducer interface: fixed-shape loss values and weights in, one scalar out."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

__all__ = ["BaseReducer", "accumulation_dtype", "safe_mean"]


def accumulation_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """float32 for half-precision inputs (counts of B² pairs overflow float16), else ``dtype``."""
    if jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return jnp.dtype(dtype)


def safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """``total / count``, or exactly 0 (with zero gradients) when ``count`` is 0."""
    nonzero = count > 0
    return jnp.where(nonzero, total / jnp.where(nonzero, count, 1), jnp.zeros_like(total))


@dataclasses.dataclass(frozen=True)
class BaseReducer:
    """Turns loss values and their weights (0 = not a valid element/pair/triplet) into a scalar.

    Weights count how often a value takes part (pytorch-metric-learning keeps duplicate mined pairs,
    each counted once). A reduction is split into :meth:`partial` (a sum and a count over any block
    of values) and :meth:`finalize`, so a loss over all triplets can stream anchor blocks and add
    the partial sums without holding a (B, B, B) array. Sums run in float32 for float16/bfloat16
    values; the result has the values' dtype. With no valid value the result is exactly 0 with zero
    gradients.
    """

    def partial(self, values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(weighted sum of the counted values, their total weight)`` over one block."""
        raise NotImplementedError

    def finalize(self, total: jax.Array, count: jax.Array) -> jax.Array:
        """The scalar from the partial sums added over all blocks (mean by default)."""
        return safe_mean(total, count)

    def __call__(self, values: jax.Array, weights: jax.Array) -> jax.Array:
        """Reduce ``values`` weighted by ``weights`` (same shape) to a scalar."""
        acc = accumulation_dtype(values.dtype)
        total, count = self.partial(values.astype(acc), jnp.asarray(weights).astype(acc))
        return self.finalize(total, count).astype(values.dtype)

    @staticmethod
    def _masked_sums(
        values: jax.Array, weights: jax.Array, keep: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        w = jnp.where(keep, weights, jnp.zeros_like(weights)).astype(values.dtype)
        kept = jnp.where(keep, values, jnp.zeros_like(values))
        return jnp.sum(kept * w), jnp.sum(w)
