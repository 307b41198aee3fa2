"""Shared pieces of the pair and triplet losses (contrastive, triplet, NTXent, SupCon, ...)."""

from __future__ import annotations

from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp

from calibrax.learning.base import BaseMetricLossFunction
from calibrax.learning.base import LossTerm
from calibrax.learning.distances.base_distance import BaseDistance
from calibrax.learning.distances.lp_distance import LpDistance
from calibrax.learning.reducers.base_reducer import accumulation_dtype
from calibrax.learning.tuples import pair_weights


def working(embeddings: jax.Array) -> jax.Array:
    """The embeddings in the dtype the loss is computed in: float32 for float16/bfloat16 inputs
    (exponentials of scaled similarities and pair counts overflow half precision)."""
    return embeddings.astype(accumulation_dtype(embeddings.dtype))


def neg_big(dtype: Any) -> jax.Array:
    """The most negative finite value of ``dtype``: pytorch-metric-learning's masked-out value."""
    return jnp.asarray(jnp.finfo(dtype).min, dtype)


def masked_logsumexp(x: jax.Array, keep: jax.Array, *, add_one: bool, axis: int = 1) -> jax.Array:
    """``log(sum(exp(x[keep])) (+ 1))`` along ``axis`` (kept dim), 0 where nothing is kept.

    pytorch-metric-learning's ``lmu.logsumexp``: masked entries become the dtype's most negative
    finite value, not ``-inf``, so every gradient stays finite.
    """
    masked = jnp.where(keep, x, neg_big(x.dtype))
    if add_one:
        shape = list(masked.shape)
        shape[axis] = 1
        masked = jnp.concatenate([masked, jnp.zeros(shape, masked.dtype)], axis=axis)
    out = jax.nn.logsumexp(masked, axis=axis, keepdims=True)
    return jnp.where(jnp.any(keep, axis=axis, keepdims=True), out, jnp.zeros_like(out))


def torch_softplus(x: jax.Array) -> jax.Array:
    """``torch.nn.functional.softplus`` (beta 1, threshold 20: linear above 20)."""
    linear = x > 20
    return jnp.where(linear, x, jnp.log1p(jnp.exp(jnp.where(linear, jnp.zeros_like(x), x))))


class DistanceLoss(BaseMetricLossFunction):
    """A loss built on a pairwise distance matrix: holds ``distance`` and ``reducer``."""

    def __init__(self, *, distance: BaseDistance | None = None, reducer: Any = None) -> None:
        super().__init__(reducer=reducer)
        self.distance = distance if distance is not None else self.default_distance()

    def default_distance(self) -> BaseDistance:
        """The distance used when none is given (Euclidean on normalised embeddings)."""
        return LpDistance()


class GenericPairLoss(DistanceLoss):
    """Pair losses: the distance matrix and the selected pairs as weights.

    As pytorch-metric-learning's ``GenericPairLoss``, the loss is 0 when there is at most one
    positive and at most one negative pair. Subclasses implement :meth:`pair_terms`.

    Speed: over all pairs (no miner) the matrix and the pair masks are symmetric, so the
    gradient w.r.t. the matrix can be made symmetric too, and the backward pass of the
    inner-product matmul is one matmul instead of two
    (:meth:`~calibrax.learning.BaseDistance.self_matrix_symmetric_grad`). Losses whose pair
    values are an elementwise function of the matrix (``mirror = False``) have a symmetric
    gradient as they stand; row-wise losses (a log-sum-exp per anchor...) are evaluated along rows
    and along columns and the two halves averaged: the same value, and a symmetric gradient, at
    the cost of a second pass of elementwise work (cheaper than transposing a (B, B) array).
    """

    mirror: ClassVar[bool] = True

    def pairs(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        *,
        symmetric: bool = False,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(mat, pos_weights, neg_weights)``: (B, B) each, in the working dtype.

        With ``symmetric`` (only for all pairs, and only when the caller's gradient w.r.t.
        ``mat`` is symmetric) the matrix comes from ``self_matrix_symmetric_grad``.
        """
        emb = working(embeddings)
        if symmetric and indices_tuple is None:
            mat = self.distance.self_matrix_symmetric_grad(emb)
        else:
            mat = self.distance(emb)
        if indices_tuple is None:
            # All pairs straight from the labels, as booleans that fuse into their consumers; one
            # count of same-label pairs gives both totals (positives exclude the diagonal).
            batch = labels.shape[0]
            same = labels[:, None] == labels[None, :]
            index = jnp.arange(batch)
            n_same = jnp.sum(same, dtype=jnp.int32)
            enough = (n_same - batch > 1) | (batch * batch - n_same > 1)
            one, zero = jnp.ones((), mat.dtype), jnp.zeros((), mat.dtype)
            pos = jnp.where(enough & same & (index[:, None] != index[None, :]), one, zero)
            neg = jnp.where(enough & ~same, one, zero)
            return mat, pos, neg
        pos, neg = pair_weights(indices_tuple, labels)
        enough = (jnp.sum(pos) > 1) | (jnp.sum(neg) > 1)
        pos = jnp.where(enough, pos, 0).astype(mat.dtype)
        neg = jnp.where(enough, neg, 0).astype(mat.dtype)
        return mat, pos, neg

    def pair_terms(
        self, mat: jax.Array, pos: jax.Array, neg: jax.Array, axis: int
    ) -> dict[str, LossTerm]:
        """The loss terms from the (B, B) matrix and pair weights, anchors along ``1 - axis``:
        ``axis=1`` reduces each anchor's row, ``axis=0`` is the mirror image (each anchor's
        column), used only with symmetric ``mat``, ``pos`` and ``neg``."""
        raise NotImplementedError

    def compute_terms(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any
    ) -> dict[str, LossTerm]:
        symmetric = indices_tuple is None
        mat, pos, neg = self.pairs(embeddings, labels, indices_tuple, symmetric=symmetric)
        if not (symmetric and self.mirror):
            return self.pair_terms(mat, pos, neg, axis=1)
        rows = self.pair_terms(mat, pos, neg, axis=1)
        cols = self.pair_terms(mat, pos, neg, axis=0)
        terms = {f"{k}/rows": t._replace(scale=0.5 * t.scale) for k, t in rows.items()}
        terms.update({f"{k}/cols": t._replace(scale=0.5 * t.scale) for k, t in cols.items()})
        return terms


def loss_example(factory: Any) -> Any:
    """A registry ``example``: ``factory()`` builds the loss; args are 8 embeddings, 3 classes."""

    def example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
        embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
        labels = jnp.array([0, 0, 1, 1, 2, 2, 0, 1], jnp.int32)

        def fn(e: jax.Array, l: jax.Array) -> jax.Array:
            return factory()(e, l)

        return fn, (embeddings, labels)

    return example
