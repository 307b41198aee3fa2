"""SupConLoss: supervised contrastive loss, the mean log-probability of each anchor's positives."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core.registry import register
from calibrax.learning.base import LossTerm
from calibrax.learning.distances.base_distance import BaseDistance
from calibrax.learning.distances.cosine_similarity import CosineSimilarity
from calibrax.learning.losses._pair_base import GenericPairLoss
from calibrax.learning.losses._pair_base import loss_example
from calibrax.learning.losses._pair_base import masked_logsumexp
from calibrax.learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer

__all__ = ["SupConLoss"]


@register(
    "supcon_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=loss_example(lambda: SupConLoss()),
)
class SupConLoss(GenericPairLoss):
    r"""Supervised contrastive loss, as pytorch-metric-learning's ``SupConLoss``.

    For anchor ``a`` with positives ``P(a)`` and all its pairs ``A(a)`` (positive or negative),
    similarities divided by the temperature ``τ``:

    .. math::
        L_a = -\frac{1}{|P(a)|} \sum_{p \in P(a)} \Big(s_{ap} - \log \sum_{k \in A(a)}
        e^{s_{ak}}\Big)

    averaged over the anchors with a non-zero loss (default
    :class:`~calibrax.learning.AvgNonZeroReducer`). The loss is 0 if there is no positive or no
    negative pair.

    Args:
        temperature: Default 0.1.
        distance: Default :class:`~calibrax.learning.CosineSimilarity`.
        reducer: Default :class:`~calibrax.learning.AvgNonZeroReducer`.

    References:
        Khosla et al., 2020, "Supervised Contrastive Learning", arXiv:2004.11362.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        super().__init__(distance=distance, reducer=reducer)
        self.temperature = temperature

    def default_reducer(self) -> Any:
        """Mean of the non-zero anchor losses, as in pytorch-metric-learning."""
        return AvgNonZeroReducer()

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
        sim = sim - jax.lax.stop_gradient(jnp.max(sim, axis=axis, keepdims=True))
        pos_mask = (pos > 0).astype(sim.dtype)
        denominator = masked_logsumexp(sim, (pos > 0) | (neg > 0), add_one=False, axis=axis)
        log_prob = sim - denominator
        tiny = jnp.finfo(sim.dtype).tiny
        mean_log_prob_pos = jnp.sum(pos_mask * log_prob, axis=axis) / (
            jnp.sum(pos_mask, axis=axis) + tiny
        )
        both = jnp.any(pos > 0) & jnp.any(neg > 0)
        weights = jnp.where(both, jnp.ones_like(mean_log_prob_pos), 0)
        return {"loss": LossTerm(-mean_log_prob_pos, weights)}
