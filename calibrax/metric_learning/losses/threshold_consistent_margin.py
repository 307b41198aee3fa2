"""ThresholdConsistentMarginLoss: penalise positive pairs below ``margin_plus`` and negative pairs
above ``margin_minus`` in cosine similarity."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._standard_call import StandardDistanceLoss
from calibrax.metric_learning.reducers.base_reducer import safe_mean
from calibrax.metric_learning.tuples import pair_weights

__all__ = ["ThresholdConsistentMarginLoss"]


@register(
    "threshold_consistent_margin_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=loss_example(lambda: ThresholdConsistentMarginLoss()),
)
class ThresholdConsistentMarginLoss(StandardDistanceLoss):
    r"""Threshold-consistent margin (TCM) loss, as pytorch-metric-learning's
    ``ThresholdConsistentMarginLoss``.

    Over the positive pairs with cosine similarity ``s ≤ m^+`` and the negative pairs with
    ``s ≥ m^-`` (all pairs, or the mined ones counted as often as selected):

    .. math::
        L = λ^+ \frac{\sum_{s_{ap} ≤ m^+} (m^+ - s_{ap})}{\#\{s_{ap} ≤ m^+\}}
          + λ^- \frac{\sum_{s_{an} ≥ m^-} (s_{an} - m^-)}{\#\{s_{an} ≥ m^-\}}

    each part 0 when it has no pair. The loss is already a scalar: ``reducer`` is not applied (as
    in pytorch-metric-learning, where this loss returns an "already reduced" value), and the
    cosine similarity ignores the distance's ``power``, as pytorch-metric-learning's does.

    With ``ref_emb``, the pairs join each embedding with each reference embedding (all pairs;
    mined tuples are then not accepted). pytorch-metric-learning 2.9 indexes the batch, not the
    reference set, with the reference indices in that case (a bug); this uses the references.

    Args:
        lambda_plus: ``λ^+`` (default 1).
        lambda_minus: ``λ^-`` (default 1).
        margin_plus: ``m^+`` (default 0.9).
        margin_minus: ``m^-`` (default 0.5).
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity` (the only one
            accepted).
        reducer: Accepted for a uniform signature; not applied (see above).

    Raises:
        ValueError: If ``distance`` is not a :class:`~calibrax.metric_learning.CosineSimilarity`;
            at call time, if ``labels`` are missing or ``indices_tuple`` comes with ``ref_emb``.

    References:
        Zhang et al., 2023, "Threshold-Consistent Margin Loss for Open-World Deep Metric
        Learning", arXiv:2307.04047.
    """

    uses_ref = True
    uses_indices_tuple = True

    def __init__(
        self,
        *,
        lambda_plus: float = 1.0,
        lambda_minus: float = 1.0,
        margin_plus: float = 0.9,
        margin_minus: float = 0.5,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        if distance is not None and not isinstance(distance, CosineSimilarity):
            raise ValueError(
                f"expected `distance` to be a CosineSimilarity, got {type(distance).__name__}"
            )
        super().__init__(distance=distance, reducer=reducer)
        self.lambda_plus = lambda_plus
        self.lambda_minus = lambda_minus
        self.margin_plus = margin_plus
        self.margin_minus = margin_minus

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, the only distance the loss accepts."""
        return CosineSimilarity()

    def validate_full(
        self, embeddings: Any, labels: Any, indices_tuple: Any, ref_emb: Any, ref_labels: Any
    ) -> None:
        """The common checks, then: no ``indices_tuple`` together with ``ref_emb``."""
        super().validate_full(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if ref_emb is not None and indices_tuple is not None:
            raise ValueError(
                "expected `indices_tuple` to be None when `ref_emb` is given "
                "(ThresholdConsistentMarginLoss uses every query-reference pair), "
                f"got {type(indices_tuple).__name__}"
            )

    def compute_full(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any,
        ref_emb: Float[Array, "n_ref dim"] | None,
        ref_labels: Int[Array, " n_ref"] | None,
        reducer: Any,
    ) -> jax.Array:
        unit = CosineSimilarity()
        query = working(embeddings)
        if ref_emb is None:
            sims = unit(query)
            pos, neg = pair_weights(indices_tuple, labels)
        else:
            sims = unit(query, working(ref_emb).astype(query.dtype))
            same = labels[:, None] == ref_labels[None, :]
            pos, neg = same.astype(jnp.int32), (~same).astype(jnp.int32)
        zero = jnp.zeros_like(sims)
        pos_in = jnp.where(sims <= self.margin_plus, pos.astype(sims.dtype), zero)
        neg_in = jnp.where(sims >= self.margin_minus, neg.astype(sims.dtype), zero)
        pos_part = safe_mean(jnp.sum(pos_in * (self.margin_plus - sims)), jnp.sum(pos_in))
        neg_part = safe_mean(jnp.sum(neg_in * (sims - self.margin_minus)), jnp.sum(neg_in))
        return self.lambda_plus * pos_part + self.lambda_minus * neg_part
