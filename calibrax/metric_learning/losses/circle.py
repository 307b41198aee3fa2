"""CircleLoss: pair similarities re-weighted by how far they are from their optimum."""

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
from calibrax.metric_learning.losses._pair_base import masked_logsumexp
from calibrax.metric_learning.losses._pair_base import torch_softplus
from calibrax.metric_learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer

__all__ = ["CircleLoss"]


@register(
    "circle_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: CircleLoss()),
)
class CircleLoss(GenericPairLoss):
    r"""Circle loss (pair-wise labels), as pytorch-metric-learning's ``CircleLoss``.

    With cosine similarities, ``O_p = 1 + m``, ``O_n = -m``, ``Δ_p = 1 - m``, ``Δ_n = m``:

    .. math::
        L_a = \mathrm{softplus}\Big(\log \sum_{p} e^{-\gamma [O_p - s_{ap}]_+ (s_{ap} - Δ_p)}
            + \log \sum_{n} e^{\gamma [s_{an} - O_n]_+ (s_{an} - Δ_n)}\Big)

    where the weights ``[.]_+`` are constants for the gradient (as in the paper and
    pytorch-metric-learning). Anchors without a positive or a negative pair give 0; the default
    reducer averages the non-zero anchor losses.

    Args:
        m: The relaxation margin (default 0.4).
        gamma: The scale (default 80).
        distance: Must be :class:`~calibrax.metric_learning.CosineSimilarity` (the default).
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Default :class:`~calibrax.metric_learning.AvgNonZeroReducer`.

    Raises:
        ValueError: If ``distance`` is not a ``CosineSimilarity``.

    References:
        Sun et al., 2020, "Circle Loss: A Unified Perspective of Pair Similarity Optimization",
        arXiv:2002.10857.
    """

    def __init__(
        self,
        *,
        m: float = 0.4,
        gamma: float = 80.0,
        distance: BaseDistance | None = None,
        reducer: Any = None,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
    ) -> None:
        if distance is not None and not isinstance(distance, CosineSimilarity):
            raise ValueError(
                f"expected `distance` to be a CosineSimilarity, got {type(distance).__name__}"
            )
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
        )
        self.m = m
        self.gamma = gamma

    def default_reducer(self) -> Any:
        """Mean of the non-zero anchor losses, as in pytorch-metric-learning."""
        return AvgNonZeroReducer()

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, the only distance the loss accepts."""
        return CosineSimilarity()

    def pair_terms(
        self,
        mat: Float[Array, "batch batch"],
        pos: Float[Array, "batch batch"],
        neg: Float[Array, "batch batch"],
        axis: int,
    ) -> dict[str, LossTerm]:
        pos_mask, neg_mask = pos > 0, neg > 0
        fixed = jax.lax.stop_gradient(mat)
        op, on, delta_p, delta_n = 1 + self.m, -self.m, 1 - self.m, self.m
        logits_p = -self.gamma * jax.nn.relu(op - fixed) * (mat - delta_p)
        logits_n = self.gamma * jax.nn.relu(fixed - on) * (mat - delta_n)
        lse_p = masked_logsumexp(logits_p, pos_mask, add_one=False, axis=axis)
        lse_n = masked_logsumexp(logits_n, neg_mask, add_one=False, axis=axis)
        losses = jnp.reshape(torch_softplus(lse_p + lse_n), (-1,))
        rows = jnp.any(pos_mask, axis=axis) & jnp.any(neg_mask, axis=axis)
        losses = jnp.where(rows, losses, jnp.zeros_like(losses))
        return {"loss": LossTerm(losses, jnp.ones_like(losses))}
