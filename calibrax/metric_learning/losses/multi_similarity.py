"""MultiSimilarityLoss: soft weighting of positive and negative pairs around a base similarity."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.losses._pair_base import GenericPairLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import masked_logsumexp

__all__ = ["MultiSimilarityLoss"]


@register(
    "multi_similarity_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: MultiSimilarityLoss()),
)
class MultiSimilarityLoss(GenericPairLoss):
    r"""Multi-similarity loss, as pytorch-metric-learning's ``MultiSimilarityLoss``.

    For anchor ``a`` with positive pairs ``P(a)`` and negative pairs ``N(a)`` (similarity ``s``):

    .. math::
        L_a = \frac{1}{\alpha}\log\Big(1 + \sum_{p \in P(a)} e^{-\alpha (s_{ap} - \lambda)}\Big)
            + \frac{1}{\beta}\log\Big(1 + \sum_{n \in N(a)} e^{\beta (s_{an} - \lambda)}\Big)

    averaged over all anchors (default :class:`~calibrax.metric_learning.MeanReducer`). For distances the
    signs are mirrored.

    Args:
        alpha: Weight of positive pairs (default 2).
        beta: Weight of negative pairs (default 50).
        base: The shift ``λ`` (default 0.5).
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity`.
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    References:
        Wang et al., 2019, "Multi-Similarity Loss with General Pair Weighting for Deep Metric
        Learning", arXiv:1904.06627.
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        distance: BaseDistance | None = None,
        reducer: Any = None,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
    ) -> None:
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
        )
        self.alpha = alpha
        self.beta = beta
        self.base = base

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, as in pytorch-metric-learning."""
        return CosineSimilarity()

    def pair_terms(
        self,
        mat: Float[Array, "batch batch"],
        pos: Float[Array, "batch batch"],
        neg: Float[Array, "batch batch"],
        axis: int,
    ) -> dict[str, LossTerm]:
        pos_exp = self.distance.margin(mat, self.base)
        neg_exp = self.distance.margin(self.base, mat)
        pos_loss = masked_logsumexp(self.alpha * pos_exp, pos > 0, add_one=True, axis=axis)
        neg_loss = masked_logsumexp(self.beta * neg_exp, neg > 0, add_one=True, axis=axis)
        losses = jnp.reshape(pos_loss / self.alpha + neg_loss / self.beta, (-1,))
        return {"loss": LossTerm(losses, jnp.ones_like(losses))}
