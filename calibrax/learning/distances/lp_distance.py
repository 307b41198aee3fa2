"""LpDistance: the L``p`` distance between embeddings (Euclidean by default)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.learning.distances.base_distance import BaseDistance
from calibrax.learning.distances.base_distance import plain_gram
from calibrax.learning.distances.base_distance import safe_abs
from calibrax.learning.distances.base_distance import safe_pow
from calibrax.learning.distances.base_distance import safe_sqrt

__all__ = ["LpDistance"]


@dataclasses.dataclass(frozen=True)
class LpDistance(BaseDistance):
    """L``p`` distance matrix, as pytorch-metric-learning's ``LpDistance`` (``torch.cdist``).

    For ``p=2`` the matrix comes from one matmul, ``|x|² + |y|² - 2 x·y``, in O(n·m) memory.
    Squared distances within rounding error of zero (below ``4 eps (|x|² + |y|²)``) are set to
    exactly 0, so identical embeddings are at distance 0 and the gradient there is 0, as
    ``torch.cdist``'s is (the square root's derivative is infinite at 0). Other ``p`` use the
    explicit differences, O(n·m·dim) memory.

    Args:
        normalize_embeddings: L``p``-normalise each embedding first (default True).
        p: The norm's order (default 2).
        power: Exponent applied to each distance (default 1).

    Example:
        >>> import jax.numpy as jnp
        >>> from calibrax.learning import LpDistance
        >>> x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
        >>> print(LpDistance(normalize_embeddings=False)(x))
        [[0. 5.]
         [5. 0.]]
    """

    is_inverted = False

    def compute_mat(self, query: jax.Array, ref: jax.Array, gram: Any = plain_gram) -> jax.Array:
        if self.p == 2:
            sq_q = jnp.sum(query * query, axis=1)
            sq_r = jnp.sum(ref * ref, axis=1)
            scale = sq_q[:, None] + sq_r[None, :]
            sq = scale - 2 * gram(query, ref)
            tol = 4 * float(jnp.finfo(query.dtype).eps) * scale
            sq = jnp.where(sq > tol, sq, jnp.zeros_like(sq))
            if self.power == 2:
                return sq
            return safe_sqrt(sq)
        diff = safe_abs(query[:, None, :] - ref[None, :, :])
        if self.p == math.inf:
            return jnp.max(diff, axis=-1)
        return safe_pow(jnp.sum(safe_pow(diff, self.p), axis=-1), 1.0 / self.p)

    def _apply_power(self, mat: jax.Array) -> jax.Array:
        if self.p == 2 and self.power == 2:
            return mat
        return safe_pow(mat, self.power)
