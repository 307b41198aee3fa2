"""LiftedStructureLoss: each positive pair against all negatives of both of its members."""

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
from calibrax.metric_learning.losses._pair_base import neg_big

__all__ = ["LiftedStructureLoss"]


@register(
    "lifted_structure_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: LiftedStructureLoss()),
)
class LiftedStructureLoss(GenericPairLoss):
    r"""Lifted structured loss, as pytorch-metric-learning's ``LiftedStructureLoss``.

    For each positive pair ``(a, p)``, over the negative pairs ``(a, n)`` and ``(p, n)``:

    .. math::
        L_{ap} = \frac{1}{2}\Big[\log\Big(\sum_{(a, n)} e^{m_{neg} - d_{an}}
            + \sum_{(p, n)} e^{m_{neg} - d_{pn}}\Big) + d_{ap} - m_{pos}\Big]_+^2

    averaged over the positive pairs (default :class:`~calibrax.metric_learning.MeanReducer`; each pair is
    counted in both orders, hence the 1/2). The log-sum over the union is ``logaddexp`` of two
    per-row log-sums, so the cost is O(B²) rather than a (pairs × pairs) matrix. The loss is 0 if
    there is no positive or no negative pair.

    With a reference set (``ref_emb``), pairs are (batch row, reference row); as in
    pytorch-metric-learning the negatives of the positive ``p`` are those of the *batch* row
    with index ``p`` (none when ``p >= B``), kept for parity.

    Args:
        neg_margin: Default 1.
        pos_margin: Default 0.
        distance: Default :class:`~calibrax.metric_learning.LpDistance` (normalised embeddings).
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    References:
        Oh Song et al., 2016, "Deep Metric Learning via Lifted Structured Feature Embedding",
        arXiv:1511.06452.
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
        has_neg = neg > 0
        big = neg_big(mat.dtype)
        # A pair selected k times counts k times in the log-sum: add log k.
        terms = self.distance.margin(self.neg_margin, mat) + jnp.log(jnp.where(has_neg, neg, 1))
        row_lse = jax.nn.logsumexp(jnp.where(has_neg, terms, big), axis=axis)
        row_any = jnp.any(has_neg, axis=axis)
        row_lse = jnp.where(row_any, row_lse, big)
        # The negatives of a positive pair (a, p) are those of the anchor rows a and p, each row
        # once even when a == p. As pytorch-metric-learning, p is compared with the anchor indices
        # also when it indexes a reference set: the positive's negatives are then those of the
        # batch row with p's index (none when p >= B). With axis=0 (the mirror image, only for a
        # symmetric square matrix) the same expression holds, as it is symmetric in (a, p).
        width = mat.shape[1]
        other_lse = _fit(row_lse, width, big)
        other_any = _fit(row_any, width, False)
        same_row = jnp.arange(row_lse.shape[0])[:, None] == jnp.arange(width)[None, :]
        pair_lse = jnp.where(
            same_row, row_lse[:, None], jnp.logaddexp(row_lse[:, None], other_lse[None, :])
        )
        pair_any = row_any[:, None] | other_any[None, :]
        pair_lse = jnp.where(pair_any, pair_lse, jnp.zeros_like(pair_lse))
        losses = jax.nn.relu(pair_lse + self.distance.margin(mat, self.pos_margin)) ** 2 / 2
        both = jnp.any(pos > 0) & jnp.any(has_neg)
        return {"loss": LossTerm(losses, jnp.where(both, pos, jnp.zeros_like(pos)))}


def _fit(x: jax.Array, width: int, fill: Any) -> jax.Array:
    """``x`` cut or padded with ``fill`` to length ``width``."""
    if x.shape[0] >= width:
        return x[:width]
    return jnp.concatenate([x, jnp.full((width - x.shape[0],), fill, x.dtype)])
