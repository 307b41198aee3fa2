"""TupletMarginLoss: a softmax over each positive pair and its anchor's negatives, with an
angular margin on the positive."""

from __future__ import annotations

import math
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
from calibrax.metric_learning.losses._weight_losses import safe_arccos
from calibrax.metric_learning.tuples import Reference

__all__ = ["TupletMarginLoss"]


@register(
    "tuplet_margin_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: TupletMarginLoss()),
)
class TupletMarginLoss(GenericPairLoss):
    r"""Tuplet margin loss, as pytorch-metric-learning's ``TupletMarginLoss``.

    For each positive pair ``(a, p)`` with angle ``θ_{ap}`` (cosine similarity ``cos θ``), over
    the anchor's negative pairs ``n``:

    .. math::
        L_{ap} = \log\Big(1 + \sum_n e^{s (\cos θ_{an} - \cos(θ_{ap} - m))}\Big)

    with the margin ``m`` given in degrees. The pair losses are averaged (default
    :class:`~calibrax.metric_learning.MeanReducer`); a positive pair whose anchor has no negative
    counts as 0. The loss is 0 if there is no positive or no negative pair. Mined pairs count as
    often as they are selected, in the sum over negatives too.

    Differs from pytorch-metric-learning where ``cos θ_{ap}`` is 1 (or rounds above 1): ``acos``
    there has an infinite (or NaN) derivative, which turns PML's gradient (and value) into NaN;
    here the angle is clipped to ``[0, π]`` with a zero derivative at the ends.

    Args:
        margin: The angular margin in degrees (default 5.73, i.e. 0.1 rad).
        scale: The scale ``s`` (default 64).
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity` (the only one
            accepted).
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    Raises:
        ValueError: If ``distance`` is not a :class:`~calibrax.metric_learning.CosineSimilarity`.

    References:
        Yu and Tao, 2019, "Deep Metric Learning with Tuplet Margin Loss", ICCV.
    """

    def __init__(
        self,
        *,
        margin: float = 5.73,
        scale: float = 64.0,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        if distance is not None and not isinstance(distance, CosineSimilarity):
            raise ValueError(
                f"expected `distance` to be a CosineSimilarity, got {type(distance).__name__}"
            )
        super().__init__(distance=distance, reducer=reducer)
        self.margin = math.radians(margin)
        self.scale = scale

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, the only distance the loss accepts."""
        return CosineSimilarity()

    def compute_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        reducer: Any,
        ref: Reference | None = None,
    ) -> jax.Array:
        """The pair loss (against ``ref``'s embeddings when given), NaN when ``embeddings`` or
        the reference embeddings hold NaN/Inf (under jit, where the eager check cannot run,
        masked comparisons would otherwise drop them and give a plausible number)."""
        loss = super().compute_loss(embeddings, labels, indices_tuple, reducer, ref=ref)
        finite = jnp.all(jnp.isfinite(embeddings))
        if ref is not None:
            finite = finite & jnp.all(jnp.isfinite(ref.embeddings))
        return jnp.where(finite, loss, jnp.full_like(loss, jnp.nan))

    def pair_terms(
        self,
        mat: Float[Array, "batch batch"],
        pos: Float[Array, "batch batch"],
        neg: Float[Array, "batch batch"],
        axis: int,
    ) -> dict[str, LossTerm]:
        has_neg = neg > 0
        # log(sum_n count_an e^{s cos_an}) per anchor, as one shifted log-sum-exp.
        x = self.scale * mat + jnp.log(jnp.where(has_neg, neg, jnp.ones_like(neg)))
        x = jnp.where(has_neg, x, neg_big(x.dtype))
        shift = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
        shift = jnp.where(jnp.any(has_neg, axis=axis, keepdims=True), shift, 0)
        total = jnp.sum(jnp.where(has_neg, jnp.exp(x - shift), 0), axis=axis, keepdims=True)
        anchor_has_neg = total > 0
        lse = jnp.log(jnp.where(anchor_has_neg, total, 1)) + shift
        positive = jnp.cos(safe_arccos(mat) - self.margin)
        losses = jnp.where(
            anchor_has_neg, jax.nn.softplus(lse - self.scale * positive), jnp.zeros_like(mat)
        )
        return {"loss": LossTerm(losses, pos)}
