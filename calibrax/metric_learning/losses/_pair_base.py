"""Shared pieces of the pair and triplet losses (contrastive, triplet, NTXent, SupCon, ...)."""

from __future__ import annotations

from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp

from calibrax.metric_learning.base import BaseMetricLossFunction
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.base import ref_matrix
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.lp_distance import LpDistance
from calibrax.metric_learning.reducers.base_reducer import BaseReducer
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import all_pairs
from calibrax.metric_learning.tuples import pair_weights


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

    def __init__(
        self,
        *,
        distance: BaseDistance | None = None,
        reducer: Any = None,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
    ) -> None:
        super().__init__(
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
        )
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
    (:meth:`~calibrax.metric_learning.BaseDistance.self_matrix_symmetric_grad`). Losses whose pair
    values are an elementwise function of the matrix (``mirror = False``) have a symmetric
    gradient as they stand; row-wise losses (a log-sum-exp per anchor...) are evaluated along rows
    and along columns and the two halves averaged: the same value, and a symmetric gradient, at
    the cost of a second pass of elementwise work (cheaper than transposing a (B, B) array).
    Elementwise losses above 256 samples go further and evaluate only the blocks on and above
    the diagonal (:meth:`_upper_block_loss`); a loss may also write out its own backward pass
    (SupCon does).
    """

    mirror: ClassVar[bool] = True
    supports_ref: ClassVar[bool] = True
    requires_labels: ClassVar[bool] = False

    def pairs(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        *,
        symmetric: bool = False,
        ref: Reference | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(mat, pos_weights, neg_weights)``: (B, M) each, in the working dtype.

        With ``symmetric`` (only for all pairs of the batch with itself, and only when the
        caller's gradient w.r.t. ``mat`` is symmetric) the matrix comes from
        ``self_matrix_symmetric_grad``. With a reference set ``ref`` the matrix is between the
        batch (rows) and ``ref.embeddings`` (columns), and all pairs are every same-label
        (positive) and different-label (negative) pair, ``(i, i)`` included.
        """
        emb = working(embeddings)
        if ref is not None:
            mat = ref_matrix(self.distance, emb, ref)
            pos, neg = pair_weights(indices_tuple, labels, ref)
            # The counts in the matrix's (float) dtype: XLA on CPU sums a (B, M) int32 array in
            # a slow windowed loop. A float sum of whole numbers >= 0 exceeds 1 exactly when the
            # count does (partial sums never round below 2 once they reach it).
            pos, neg = pos.astype(mat.dtype), neg.astype(mat.dtype)
            enough = (jnp.sum(pos) > 1) | (jnp.sum(neg) > 1)
            zero = jnp.zeros((), mat.dtype)
            return mat, jnp.where(enough, pos, zero), jnp.where(enough, neg, zero)
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
        """The loss terms from the (B, M) matrix and pair weights, anchors along ``1 - axis``:
        ``axis=1`` reduces each anchor's row, ``axis=0`` is the mirror image (each anchor's
        column), used only with symmetric ``mat``, ``pos`` and ``neg`` (the batch as its own
        reference set, all pairs). With a reference set, rows are the batch and columns
        ``ref_emb``."""
        raise NotImplementedError

    def compute_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        reducer: Any,
        ref: Reference | None = None,
    ) -> jax.Array:
        """As :meth:`BaseMetricLossFunction.compute_loss`; over all pairs of the batch with itself,
        losses whose pair values are elementwise in the matrix (``mirror = False``) are evaluated
        on the upper block triangle only (:meth:`_upper_block_loss`)."""
        batch = embeddings.shape[0]
        if ref is None and indices_tuple is None and getattr(reducer, "anchor_weighted", False):
            # Per-anchor weights (ClassWeightedReducer, PerAnchorReducer) make the gradient w.r.t.
            # the matrix asymmetric: all pairs as an explicit mask, without the symmetric paths.
            indices_tuple = all_pairs(labels)
        if (
            ref is None
            and indices_tuple is None
            and not self.mirror
            and self.distance.is_symmetric
            and streams(reducer)
        ):
            block = pair_block_size(batch)
            if block < batch:
                return self._upper_block_loss(embeddings, labels, reducer, block)
        return super().compute_loss(embeddings, labels, indices_tuple, reducer, ref=ref)

    def _upper_block_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        reducer: Any,
        block: int,
        block_terms: Any = None,
    ) -> jax.Array:
        """All pairs of an elementwise pair loss from the blocks on and above the diagonal.

        The matrix and the pair masks are symmetric and each pair's value depends on its own
        entry only, so the pairs of an off-diagonal block (I, J) stand for those of (J, I): they
        are counted twice (weight 2 in the reducer's partial sums), and a diagonal block counts
        once. This computes 10 of the 16 blocks of a 4 x 4 grid (the forward matmul and the
        elementwise work shrink alike), and each block's elementwise passes run on 256 KiB that
        stay in cache. Diagonal blocks take the one-matmul symmetric backward pass
        (``mode="symmetric"``), the others ``mode="cross"`` (see
        :func:`~calibrax.metric_learning.distances.base_distance.inner_products`). The loss is 0
        when there is at most one positive and at most one negative pair, as in
        :meth:`pairs`. ``block_terms(mat, pos, neg)`` gives a block's terms when the pair values
        need more than their own entry (IntraPairVariance: the means over all pairs, computed
        beforehand); by default :meth:`pair_terms` along rows.
        """
        if block_terms is None:

            def block_terms(mat: jax.Array, pos: jax.Array, neg: jax.Array) -> Any:
                return self.pair_terms(mat, pos, neg, axis=1)

        emb = working(embeddings)
        acc = emb.dtype
        x = self.distance.maybe_normalize(emb)
        batch = x.shape[0]
        starts = range(0, batch, block)
        sums: dict[str, list[Any]] = {}
        scales: dict[str, float] = {}
        n_same = jnp.zeros((), jnp.int32)
        one, zero = jnp.ones((), acc), jnp.zeros((), acc)
        for i, a in enumerate(starts):
            xa, la = x[a : a + block], labels[a : a + block]
            for b in starts[i:]:
                e = b + block
                lb = labels[b:e]
                same = la[:, None] == lb[None, :]
                if a == b:
                    mat = self.distance.normalized_block_matrix(xa, xa, "symmetric")
                    index = jnp.arange(la.shape[0])
                    pos = same & (index[:, None] != index[None, :])
                    weight = 1.0
                else:
                    mat = self.distance.normalized_block_matrix(xa, x[b:e], "cross")
                    pos = same
                    weight = 2.0
                n_same = n_same + int(weight) * jnp.sum(same, dtype=jnp.int32)
                terms = block_terms(mat, jnp.where(pos, one, zero), jnp.where(same, zero, one))
                for name, term in terms.items():
                    if term.reduced:
                        raise NotImplementedError(
                            "an elementwise pair loss (mirror = False) returns unreduced terms"
                        )
                    s, c = reducer.partial(
                        term.values.astype(acc), (weight * term.weights).astype(acc)
                    )
                    prev = sums.setdefault(name, [jnp.zeros((), acc), jnp.zeros((), acc)])
                    prev[0], prev[1] = prev[0] + s, prev[1] + c
                    scales[name] = term.scale
        total = jnp.zeros((), acc)
        for name, (s, c) in sums.items():
            total = total + scales[name] * reducer.finalize(s, c).astype(acc)
        enough = (n_same - batch > 1) | (batch * batch - n_same > 1)
        return jnp.where(enough, total, jnp.zeros_like(total))

    def compute_terms(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        ref: Reference | None = None,
    ) -> dict[str, LossTerm]:
        # The shortcuts over all pairs need d(x, y) = d(y, x) (not so for SNRDistance).
        symmetric = indices_tuple is None and ref is None and self.distance.is_symmetric
        mat, pos, neg = self.pairs(embeddings, labels, indices_tuple, symmetric=symmetric, ref=ref)
        if not (symmetric and self.mirror):
            return self.pair_terms(mat, pos, neg, axis=1)
        rows = self.pair_terms(mat, pos, neg, axis=1)
        cols = self.pair_terms(mat, pos, neg, axis=0)
        terms = {f"{k}/rows": t._replace(scale=0.5 * t.scale) for k, t in rows.items()}
        terms.update({f"{k}/cols": t._replace(scale=0.5 * t.scale) for k, t in cols.items()})
        return terms


def pair_block_size(batch: int) -> int:
    """Rows per block of the upper-triangle evaluation of an elementwise pair loss (the whole batch,
    i.e. no blocking, for small batches). A (256, 256) float32 block is 256 KiB: it stays in a
    core's L2 cache through the chain of elementwise passes XLA emits for it."""
    return batch if batch <= 256 else 256


def streams(reducer: Any) -> bool:
    """Whether ``reducer`` can reduce block by block (a BaseReducer that implements ``partial``)."""
    return isinstance(reducer, BaseReducer) and type(reducer).partial is not BaseReducer.partial


def loss_example(factory: Any) -> Any:
    """A registry ``example``: ``factory()`` builds the loss; args are 8 embeddings, 3 classes."""

    def example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
        embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
        labels = jnp.array([0, 0, 1, 1, 2, 2, 0, 1], jnp.int32)

        def fn(e: jax.Array, l: jax.Array) -> jax.Array:
            return factory()(e, l)

        return fn, (embeddings, labels)

    return example
