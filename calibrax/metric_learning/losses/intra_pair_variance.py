"""IntraPairVarianceLoss: penalise pairs whose similarity strays from their kind's mean."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.distances.dot_product_similarity import DotProductSimilarity
from calibrax.metric_learning.losses._mined import NonFiniteIsNaN
from calibrax.metric_learning.losses._mined import nan_unless_finite
from calibrax.metric_learning.losses._pair_base import GenericPairLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import pair_block_size
from calibrax.metric_learning.losses._pair_base import streams
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.reducers.base_reducer import safe_mean
from calibrax.metric_learning.tuples import Reference

__all__ = ["IntraPairVarianceLoss"]


@register(
    "intra_pair_variance_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: IntraPairVarianceLoss()),
)
class IntraPairVarianceLoss(NonFiniteIsNaN, GenericPairLoss):
    r"""Intra-pair variance loss, as pytorch-metric-learning 2.9's ``IntraPairVarianceLoss``.

    With similarities :math:`s` (cosine by default) and :math:`\mu_+`, :math:`\mu_-` the means over
    the positive and the negative pairs (each mined pair counted as often as it was mined):

    .. math::
        L_{ap} = [(1 - \epsilon_+)\,\mu_+ - s_{ap}]_+^2, \qquad
        L_{an} = [s_{an} - (1 + \epsilon_-)\,\mu_-]_+^2,

    each kind averaged over its pairs (default :class:`~calibrax.metric_learning.MeanReducer`) and
    the two added. For a distance (not a similarity) the two directions swap:
    ``[d_ap - (1 + eps_pos) mu_pos]_+^2`` and ``[(1 - eps_neg) mu_neg - d_an]_+^2``. The loss is 0
    when there is at most one positive and at most one negative pair.

    Args:
        pos_eps: Relative slack below the positive mean. Default 0.01.
        neg_eps: Relative slack above the negative mean. Default 0.01.
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity`.
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`, per kind of pair.

    References:
        Yu & Tao, 2019, "Deep Metric Learning with Tuplet Margin Loss", ICCV (the intra-pair
        variance term).
    """

    def __init__(
        self,
        *,
        pos_eps: float = 0.01,
        neg_eps: float = 0.01,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        super().__init__(distance=distance, reducer=reducer)
        self.pos_eps = float(pos_eps)
        self.neg_eps = float(neg_eps)

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, as in pytorch-metric-learning."""
        return CosineSimilarity()

    def compute_terms(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        ref: Reference | None = None,
    ) -> dict[str, LossTerm]:
        """Over all pairs of the batch with itself the gradient w.r.t. the symmetric matrix is
        symmetric (elementwise terms and means over symmetric masks), so the matrix takes the
        one-matmul backward pass. With a reference set ``ref`` the (B, M) matrix and pairs come
        from :meth:`GenericPairLoss.pairs` (every same-label pair is positive)."""
        symmetric = indices_tuple is None and ref is None
        mat, pos, neg = self.pairs(embeddings, labels, indices_tuple, symmetric=symmetric, ref=ref)
        return self.mat_terms(mat, pos, neg)

    def compute_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        reducer: Any,
        ref: Reference | None = None,
    ) -> jax.Array:
        """As :meth:`GenericPairLoss.compute_loss`; over all pairs of the batch with itself and an
        inner-product similarity (the default cosine), above 256 samples, the two means come in
        closed form from the class sums of the embeddings (:meth:`all_pair_means`, O(B d)), and
        the pair terms, elementwise given the means, from the blocks of the similarity matrix on
        and above the diagonal (:meth:`GenericPairLoss._upper_block_loss`): 10 of 16 blocks of
        the forward product, each block's elementwise work in cache. NaN if ``embeddings`` hold
        NaN/Inf, as on the other paths (:class:`NonFiniteIsNaN`)."""
        batch = embeddings.shape[0]
        if (
            ref is None
            and indices_tuple is None
            and self.closed_form_means()
            and streams(reducer)
            and not getattr(reducer, "anchor_weighted", False)
            and pair_block_size(batch) < batch
        ):
            means = self.all_pair_means(embeddings, labels)

            def block_terms(mat: jax.Array, pos: jax.Array, neg: jax.Array) -> Any:
                return self.mat_terms(mat, pos, neg, means=means)

            loss = self._upper_block_loss(
                embeddings, labels, reducer, pair_block_size(batch), block_terms
            )
            return nan_unless_finite(loss, embeddings)
        return super().compute_loss(embeddings, labels, indices_tuple, reducer, ref=ref)

    def closed_form_means(self) -> bool:
        """Whether the similarity is a plain inner product (of normalised or raw embeddings),
        whose sums over pairs follow from sums of embeddings."""
        return isinstance(self.distance, DotProductSimilarity) and self.distance.power == 1

    def all_pair_means(self, embeddings: jax.Array, labels: jax.Array) -> tuple[jax.Array, ...]:
        """``(mu_pos, mu_neg)`` over all pairs of the batch with itself, for an inner-product
        similarity: with ``s_c`` the sum of class ``c``'s embeddings and ``s`` of all, row ``i``'s
        positive pairs sum to ``x_i . (s_c - x_i)`` and its negative pairs to ``x_i . (s -
        s_c)`` (each per-row sum directly, not a difference of large totals). The classes are
        found by sorting the labels once. Not gated on there being enough pairs: the caller
        zeroes the loss then."""
        x = self.distance.maybe_normalize(working(embeddings))
        batch = labels.shape[0]
        order = jnp.argsort(labels, stable=True)
        ordered = labels[order]
        new_class = (ordered[1:] != ordered[:-1]).astype(jnp.int32)
        segment = jnp.cumsum(jnp.concatenate([jnp.zeros((1,), jnp.int32), new_class]))
        class_sums = jax.ops.segment_sum(
            x[order], segment, num_segments=batch, indices_are_sorted=True
        )
        sizes = jax.ops.segment_sum(
            jnp.ones((batch,), jnp.int32), segment, num_segments=batch, indices_are_sorted=True
        )
        # Row i's class, through its position in the sorted order.
        rank = jnp.zeros((batch,), jnp.int32).at[order].set(jnp.arange(batch, dtype=jnp.int32))
        own = segment[rank]
        own_sum = class_sums[own]
        pos_sum = jnp.sum(x * (own_sum - x))
        neg_sum = jnp.sum(x * (jnp.sum(x, axis=0)[None, :] - own_sum))
        n_same = jnp.sum(sizes[own])
        pos_mean = safe_mean(pos_sum, (n_same - batch).astype(x.dtype))
        neg_mean = safe_mean(neg_sum, (batch * batch - n_same).astype(x.dtype))
        return pos_mean, neg_mean

    def mat_terms(
        self,
        mat: jax.Array,
        pos: jax.Array,
        neg: jax.Array,
        means: tuple[jax.Array, jax.Array] | None = None,
    ) -> dict[str, LossTerm]:
        """The two terms from a (query, reference) matrix and its pair counts (``means``: the
        two means, when ``mat`` is only a block of the matrix)."""
        sim = self.distance.is_inverted
        if means is None:
            pos_mean = safe_mean(jnp.sum(pos * mat), jnp.sum(pos))
            neg_mean = safe_mean(jnp.sum(neg * mat), jnp.sum(neg))
        else:
            pos_mean, neg_mean = means
        if sim:
            pos_var = (1 - self.pos_eps) * pos_mean - mat
            neg_var = mat - (1 + self.neg_eps) * neg_mean
        else:
            pos_var = mat - (1 + self.pos_eps) * pos_mean
            neg_var = (1 - self.neg_eps) * neg_mean - mat
        return {
            "pos_loss": LossTerm(jnp.square(jax.nn.relu(pos_var)), pos),
            "neg_loss": LossTerm(jnp.square(jax.nn.relu(neg_var)), neg),
        }
