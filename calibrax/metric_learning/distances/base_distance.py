"""The distance interface shared by LpDistance, CosineSimilarity and DotProductSimilarity."""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype

__all__ = [
    "BaseDistance",
    "gram_cross_block",
    "gram_symmetric_cotangent",
    "inner_products",
    "plain_gram",
    "safe_abs",
    "safe_pow",
    "safe_sqrt",
    "symmetric_gram",
    "transposed_times",
]


def safe_abs(x: jax.Array) -> jax.Array:
    """``|x|`` with derivative ``sign(x)``, 0 at 0 as in torch (``jnp.abs``'s is 1 there)."""
    return jnp.where(x != 0, jnp.abs(x), jnp.zeros_like(x))


def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` for ``x >= 0`` with a zero (not NaN/Inf) gradient where ``x == 0``."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, jnp.ones_like(x))), 0)


def safe_pow(x: jax.Array, exponent: float) -> jax.Array:
    """``x ** exponent`` for ``x >= 0`` with a zero gradient where ``x == 0``."""
    if exponent == 1:
        return x
    positive = x > 0
    return jnp.where(positive, jnp.where(positive, x, jnp.ones_like(x)) ** exponent, 0)


# From this many rows, x @ x.T is assembled from the upper blocks of a 4 x 4 split (see
# symmetric_gram).
_GRAM_BLOCK_ROWS = 1024
_GRAM_BLOCKS = 4


def symmetric_gram(x: jax.Array) -> jax.Array:
    """``x @ x.T``; from 1024 rows, built from the 10 upper blocks of a 4 x 4 split, each lower
    block the transpose of its mirror (5/8 of the multiply-adds: 2.03 ms against 2.40 ms at
    1024 x 128 float32 on one CPU core, the assembly included). The entries are the same dot
    products up to their summation order, and the result is exactly symmetric."""
    n = x.shape[0]
    if n < _GRAM_BLOCK_ROWS:
        return x @ x.T
    size = -(-n // _GRAM_BLOCKS)
    parts = [x[i : i + size] for i in range(0, n, size)]
    upper = {(i, j): parts[i] @ parts[j].T for i in range(len(parts)) for j in range(i, len(parts))}
    rows = [
        jnp.concatenate(
            [upper[i, j] if j >= i else upper[j, i].T for j in range(len(parts))], axis=1
        )
        for i in range(len(parts))
    ]
    return jnp.concatenate(rows, axis=0)


@jax.custom_vjp
def gram_symmetric_cotangent(x: jax.Array) -> jax.Array:
    """``x @ x.T`` for a caller whose cotangent w.r.t. the result is symmetric.

    The gradient of ``x @ x.T`` is ``(g + g.T) @ x``, two matmuls as autodiff writes it (or a
    transpose of a (B, B) array, as slow on CPU). When ``g`` is symmetric it is ``2 g @ x``: one
    matmul. Only for callers that guarantee a symmetric ``g`` (an elementwise function of the
    matrix with symmetric masks, or a row-wise loss averaged with its column-wise mirror); any
    other use gives a wrong gradient. The forward product is :func:`symmetric_gram`.
    """
    return symmetric_gram(x)


def _gram_symmetric_cotangent_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return symmetric_gram(x), x


def _gram_symmetric_cotangent_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    return (2 * (g @ x),)


gram_symmetric_cotangent.defvjp(_gram_symmetric_cotangent_fwd, _gram_symmetric_cotangent_bwd)


@jax.custom_vjp
def gram_cross_block(query: jax.Array, ref: jax.Array) -> jax.Array:
    """``query @ ref.T`` for two different row blocks, differentiated without a large transpose.

    Autodiff writes the cotangent of ``ref`` as ``g.T @ query``, which XLA on CPU turns into a
    dot contracting ``g``'s leading dimension: it transposes ``g`` first, as slow as the product
    itself. Here it is ``(query.T @ g).T``: only the thin (n, dim) and (dim, m) arrays are
    transposed, and an optimisation barrier stops XLA from folding the transposes back into the
    dot. The values are those of autodiff up to rounding.
    """
    return query @ ref.T


def _gram_cross_block_fwd(query: jax.Array, ref: jax.Array) -> tuple[jax.Array, Any]:
    return query @ ref.T, (query, ref)


def transposed_times(g: jax.Array, query: jax.Array) -> jax.Array:
    """``g.T @ query`` computed as ``(query.T @ g).T`` behind optimisation barriers, so XLA on CPU
    transposes only the thin arrays, never ``g`` (see :func:`gram_cross_block`)."""
    query_t = jax.lax.optimization_barrier(query.T)
    return jax.lax.optimization_barrier(query_t @ g).T


def _gram_cross_block_bwd(res: Any, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    query, ref = res
    return g @ ref, transposed_times(g, query)


gram_cross_block.defvjp(_gram_cross_block_fwd, _gram_cross_block_bwd)


def plain_gram(query: jax.Array, ref: jax.Array) -> jax.Array:
    """``query @ ref.T``, differentiated by autodiff."""
    return query @ ref.T


def inner_products(query: jax.Array, ref: jax.Array, mode: str = "plain") -> jax.Array:
    """``query @ ref.T`` with the backward pass chosen by ``mode``.

    - ``"plain"``: autodiff, for any caller.
    - ``"symmetric"``: ``ref`` is ``query`` and the caller's cotangent is symmetric:
      :func:`gram_symmetric_cotangent` (one backward matmul).
    - ``"cross"``: two different row blocks: :func:`gram_cross_block` (no large transpose).
    - ``"query"``: ``ref`` carries no gradient (autodiff then computes none for it).
    """
    if mode == "symmetric":
        return gram_symmetric_cotangent(query)
    if mode == "cross":
        return gram_cross_block(query, ref)
    return plain_gram(query, ref)


@dataclasses.dataclass(frozen=True)
class BaseDistance:
    """A pairwise distance or similarity between rows of two embedding matrices.

    Follows pytorch-metric-learning's ``BaseDistance``: embeddings are optionally L``p``-normalised
    (``x / max(||x||_p, 1e-12)``), the (query, ref) matrix is computed, then raised to ``power``.
    ``is_inverted`` is True for similarities (larger = closer) and flips :meth:`margin`,
    :meth:`smallest` and :meth:`largest`. ``is_symmetric`` is False for a distance whose
    self-matrix is not symmetric (:class:`~calibrax.metric_learning.SNRDistance`): the losses then
    skip their shortcuts that assume ``d(x, y) = d(y, x)``.

    The matrix is computed in float32 for float16/bfloat16 inputs and returned in the input dtype.

    Args:
        normalize_embeddings: L``p``-normalise each embedding first.
        p: The norm's order (a positive number or ``math.inf``).
        power: Exponent applied to every entry of the matrix.

    Raises:
        ValueError: If ``p`` or ``power`` is not positive.
    """

    normalize_embeddings: bool = True
    p: float = 2
    power: float = 1
    is_inverted: ClassVar[bool] = False
    is_symmetric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.p > 0:
            raise ValueError(f"expected `p` to be positive, got {self.p!r}")
        if not self.power > 0:
            raise ValueError(f"expected `power` to be positive, got {self.power!r}")

    def norm(self, x: jax.Array) -> jax.Array:
        """The L``p`` norm of each row, with a zero gradient at the zero vector."""
        if self.p == math.inf:
            return jnp.max(safe_abs(x), axis=-1)
        if self.p == 2:
            # The common case in fewer elementwise passes (the same values and gradients).
            return safe_sqrt(jnp.sum(x * x, axis=-1))
        return safe_pow(jnp.sum(safe_pow(safe_abs(x), self.p), axis=-1), 1.0 / self.p)

    def normalize(self, x: jax.Array) -> jax.Array:
        """Rows divided by ``max(norm, eps)`` (eps 1e-12, or the dtype's smallest normal)."""
        eps = max(1e-12, float(jnp.finfo(x.dtype).tiny))
        return x / jnp.maximum(self.norm(x), eps)[:, None]

    def maybe_normalize(self, x: jax.Array) -> jax.Array:
        """:meth:`normalize` if ``normalize_embeddings`` else ``x``."""
        return self.normalize(x) if self.normalize_embeddings else x

    def compute_mat(self, query: jax.Array, ref: jax.Array, mode: str = "plain") -> jax.Array:
        """The raw (query, ref) matrix on already normalised rows; ``mode`` picks the backward
        pass of the inner products (see :func:`inner_products`)."""
        raise NotImplementedError

    def __call__(
        self, query: Float[Array, "n dim"], ref: Float[Array, "m dim"] | None = None
    ) -> Float[Array, "n m"]:
        """The (n, m) matrix between the rows of ``query`` and ``ref`` (``ref`` defaults to query).

        Raises:
            ValueError: If an input is not 2-D or their embedding sizes differ.
        """
        checks.check_rank(query, 2, "query", "batch, embedding_dim")
        if ref is not None:
            checks.check_rank(ref, 2, "ref", "batch, embedding_dim")
            checks.check_dim(ref, 1, query.shape[1], "ref", "embedding size")
        return self._matrix(query, ref, "plain")

    def frozen_ref_matrix(
        self, query: Float[Array, "n dim"], ref: Float[Array, "m dim"]
    ) -> Float[Array, "n m"]:
        """``self(query, ref)`` with no gradient w.r.t. ``ref`` (``stop_gradient``), and a
        backward pass that does not compute it (a memory bank: half the backward matmuls)."""
        return self._matrix(query, jax.lax.stop_gradient(ref), "query")

    def self_matrix_symmetric_grad(self, x: Float[Array, "n dim"]) -> Float[Array, "n n"]:
        """``self(x)``, with a backward pass that assumes a symmetric cotangent.

        For losses whose gradient w.r.t. the (n, n) matrix is symmetric by construction: the
        inner products go through :func:`gram_symmetric_cotangent`, whose backward pass is one matmul
        instead of two. Any other caller must use ``self(x)``.
        """
        return self._matrix(x, None, "symmetric")

    def normalized_block_matrix(
        self, query: jax.Array, ref: jax.Array, mode: str = "plain"
    ) -> jax.Array:
        """The (query, ref) matrix of rows already passed through :meth:`maybe_normalize` (and
        cast to the working dtype), with ``power`` applied: one block of a matrix computed in
        blocks. ``mode`` picks the backward pass (see :func:`inner_products`); with
        ``"symmetric"``, ``ref`` must be ``query``."""
        mat = self.compute_mat(query, ref, mode)
        if self.power != 1:
            mat = self._apply_power(mat)
        return mat

    def _matrix(self, query: jax.Array, ref: jax.Array | None, mode: str) -> jax.Array:
        dtype = query.dtype
        acc = accumulation_dtype(dtype)
        q = self.maybe_normalize(query.astype(acc))
        r = q if ref is None else self.maybe_normalize(ref.astype(acc))
        return self.normalized_block_matrix(q, r, mode).astype(dtype)

    def _apply_power(self, mat: jax.Array) -> jax.Array:
        return safe_pow(mat, self.power)

    def margin(self, x: Any, y: Any) -> Any:
        """How far ``x`` is beyond ``y`` in the 'farther apart' direction (``x - y``, or ``y - x``
        for similarities)."""
        return y - x if self.is_inverted else x - y

    def smallest(self, x: jax.Array, axis: int | None = None, where: Any = None) -> jax.Array:
        """The closest value (min distance, or max similarity) along ``axis``."""
        if self.is_inverted:
            return jnp.max(x, axis=axis, where=where, initial=-jnp.inf)
        return jnp.min(x, axis=axis, where=where, initial=jnp.inf)

    def largest(self, x: jax.Array, axis: int | None = None, where: Any = None) -> jax.Array:
        """The farthest value (max distance, or min similarity) along ``axis``."""
        if self.is_inverted:
            return jnp.min(x, axis=axis, where=where, initial=jnp.inf)
        return jnp.max(x, axis=axis, where=where, initial=-jnp.inf)
