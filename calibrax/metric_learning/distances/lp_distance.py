"""LpDistance: the L``p`` distance between embeddings (Euclidean by default)."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.base_distance import safe_abs
from calibrax.metric_learning.distances.base_distance import safe_pow
from calibrax.metric_learning.distances.base_distance import symmetric_gram
from calibrax.metric_learning.distances.base_distance import transposed_times

__all__ = ["LpDistance"]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _l2_matrix(query: jax.Array, ref: jax.Array, mode: str, squared: bool) -> jax.Array:
    """The (squared if ``squared``) Euclidean distance matrix, 0 where rounding-level.

    The backward pass is written out: with ``u = ∂L/∂(squared distance)`` (``g / (2 d)`` for
    distances, 0 where the distance was set to 0), the cotangents are
    ``2 (q · rowsum(u) - u @ r)`` and ``2 (r · colsum(u) - uᵀ @ q)``: one elementwise pass over
    the matrix and the matmuls of ``mode`` (see
    :func:`~calibrax.metric_learning.distances.base_distance.inner_products`), instead of the chain of
    selects autodiff emits for the clamp and the square root.
    """
    return _l2_matrix_fwd(query, ref, mode, squared)[0]


def _l2_matrix_fwd(
    query: jax.Array, ref: jax.Array, mode: str, squared: bool
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    sq_q = jnp.sum(query * query, axis=1)
    sq_r = jnp.sum(ref * ref, axis=1)
    scale = sq_q[:, None] + sq_r[None, :]
    # The batch against itself: the symmetric product from its upper blocks (symmetric_gram).
    sq = scale - 2 * (symmetric_gram(query) if mode == "symmetric" else query @ ref.T)
    keep = sq > 4 * float(jnp.finfo(query.dtype).eps) * scale
    sq = jnp.where(keep, sq, jnp.zeros_like(sq))
    out = sq if squared else jnp.sqrt(sq)
    # Kept entries are above a positive tolerance, the others exactly 0: ``out > 0`` is ``keep``.
    return out, (query, ref, out)


def _l2_matrix_bwd(
    mode: str, squared: bool, res: tuple[jax.Array, ...], g: jax.Array
) -> tuple[jax.Array, jax.Array]:
    query, ref, out = res
    keep = out > 0
    zero = jnp.zeros_like(g)
    if squared:
        u = jnp.where(keep, g, zero)
    else:
        u = jnp.where(keep, g / jnp.where(keep, 2 * out, jnp.ones_like(out)), zero)
    if mode == "symmetric":
        # ref is query and u is symmetric: both roles give the same cotangent.
        d_query = 4 * (query * jnp.sum(u, axis=1)[:, None] - u @ query)
        return d_query, jnp.zeros_like(ref)
    if mode == "query":
        # ref is frozen (stop_gradient by the caller): its cotangent is not computed.
        d_query = 2 * (query * jnp.sum(u, axis=1)[:, None] - u @ ref)
        return d_query, jnp.zeros_like(ref)
    d_query = 2 * (query * jnp.sum(u, axis=1)[:, None] - u @ ref)
    d_ref = 2 * (ref * jnp.sum(u, axis=0)[:, None] - transposed_times(u, query))
    return d_query, d_ref


_l2_matrix.defvjp(_l2_matrix_fwd, _l2_matrix_bwd)


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
        >>> from calibrax.metric_learning import LpDistance
        >>> x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
        >>> print(LpDistance(normalize_embeddings=False)(x))
        [[0. 5.]
         [5. 0.]]
    """

    is_inverted = False

    def compute_mat(self, query: jax.Array, ref: jax.Array, mode: str = "plain") -> jax.Array:
        if self.p == 2:
            return _l2_matrix(query, ref, mode, self.power == 2)
        diff = safe_abs(query[:, None, :] - ref[None, :, :])
        if self.p == math.inf:
            return jnp.max(diff, axis=-1)
        return safe_pow(jnp.sum(safe_pow(diff, self.p), axis=-1), 1.0 / self.p)

    def _apply_power(self, mat: jax.Array) -> jax.Array:
        if self.p == 2 and self.power == 2:
            return mat
        return safe_pow(mat, self.power)
