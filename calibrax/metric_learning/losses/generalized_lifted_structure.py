"""GeneralizedLiftedStructureLoss: log-sum-exp over each anchor's positives and negatives."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.losses._pair_base import GenericPairLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import masked_logsumexp

__all__ = ["GeneralizedLiftedStructureLoss"]


@register(
    "generalized_lifted_structure_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: GeneralizedLiftedStructureLoss()),
)
class GeneralizedLiftedStructureLoss(GenericPairLoss):
    r"""Generalised lifted structure loss, as pytorch-metric-learning's.

    For each anchor ``a`` with positive pairs ``P(a)`` and negative pairs ``N(a)``:

    .. math::
        L_a = \Big[\log \sum_{p \in P(a)} e^{d_{ap} - m_{pos}}
            + \log \sum_{n \in N(a)} e^{m_{neg} - d_{an}}\Big]_+

    (an empty sum contributes 0), averaged over all anchors (default
    :class:`~calibrax.metric_learning.MeanReducer`).

    Args:
        neg_margin: Default 1.
        pos_margin: Default 0.
        distance: Default :class:`~calibrax.metric_learning.LpDistance` (normalised embeddings).
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    References:
        Hermans et al., 2017, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv:1703.07737, page 4.
    """

    def __init__(
        self,
        *,
        neg_margin: float = 1.0,
        pos_margin: float = 0.0,
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
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin

    def pair_terms(
        self,
        mat: Float[Array, "batch batch"],
        pos: Float[Array, "batch batch"],
        neg: Float[Array, "batch batch"],
        axis: int,
    ) -> dict[str, LossTerm]:
        pos_loss = masked_logsumexp(
            self.distance.margin(mat, self.pos_margin), pos > 0, add_one=False, axis=axis
        )
        neg_loss = masked_logsumexp(
            self.distance.margin(self.neg_margin, mat), neg > 0, add_one=False, axis=axis
        )
        losses = jnp.reshape(jax.nn.relu(pos_loss + neg_loss), (-1,))
        return {"loss": LossTerm(losses, jnp.ones_like(losses))}
