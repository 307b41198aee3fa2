"""NTXentLoss: the normalised temperature-scaled cross entropy (InfoNCE) over positive pairs."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.losses._pair_base import GenericPairLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import neg_big

__all__ = ["NTXentLoss"]


@register(
    "ntxent_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: NTXentLoss()),
)
class NTXentLoss(GenericPairLoss):
    r"""NT-Xent (InfoNCE) loss, as pytorch-metric-learning's ``NTXentLoss``.

    For each positive pair ``(a, p)``, with similarities ``s`` divided by the temperature ``τ``:

    .. math::
        L_{ap} = -\log \frac{e^{s_{ap}/τ}}{e^{s_{ap}/τ} + \sum_{n} e^{s_{an}/τ}}

    over the anchor's negative pairs ``n``; distances are negated. The pair losses are averaged
    (default :class:`~calibrax.metric_learning.MeanReducer`). The loss is 0 if there is no positive or no
    negative pair.

    Args:
        temperature: Default 0.07.
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity`.
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    References:
        Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual
        Representations", arXiv:2002.05709.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.07,
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
        self.temperature = temperature

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
        sim = mat if self.distance.is_inverted else -mat
        sim = sim / self.temperature
        has_neg = neg > 0
        # Per-anchor shift of the negatives, then per-pair shift max(s_ap, max_n s_an) as in
        # pytorch-metric-learning: sum_n e^{s_an - m_ap} = e^{M_a - m_ap} sum_n e^{s_an - M_a}.
        big = neg_big(sim.dtype)
        row_max = jax.lax.stop_gradient(
            jnp.max(jnp.where(has_neg, sim, big), axis=axis, keepdims=True)
        )
        pair_max = jax.lax.stop_gradient(jnp.maximum(sim, row_max))
        neg_sum = jnp.sum(
            jnp.where(has_neg, neg * jnp.exp(jnp.where(has_neg, sim, row_max) - row_max), 0),
            axis=axis,
            keepdims=True,
        )
        numerator = jnp.exp(sim - pair_max)
        denominator = neg_sum * jnp.exp(row_max - pair_max) + numerator
        tiny = jnp.finfo(sim.dtype).tiny
        losses = -jnp.log(numerator / denominator + tiny)
        both = jnp.any(pos > 0) & jnp.any(has_neg)
        return {"loss": LossTerm(losses, jnp.where(both, pos, jnp.zeros_like(pos)))}
