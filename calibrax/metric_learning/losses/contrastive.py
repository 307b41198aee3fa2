"""ContrastiveLoss: pull positive pairs within ``pos_margin``, push negatives beyond
``neg_margin``."""

from __future__ import annotations

from typing import Any

import jax
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.lp_distance import LpDistance
from calibrax.metric_learning.losses._memory_blocks import fused_memory_rows
from calibrax.metric_learning.losses._memory_contrastive import memory_contrastive_loss
from calibrax.metric_learning.losses._pair_base import GenericPairLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from calibrax.metric_learning.tuples import Reference

__all__ = ["ContrastiveLoss"]


@register(
    "contrastive_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: ContrastiveLoss()),
)
class ContrastiveLoss(GenericPairLoss):
    r"""Contrastive loss over all (or the mined) pairs, as pytorch-metric-learning's.

    .. math::
        L_{pos} = [d_{ap} - m_{pos}]_+, \qquad L_{neg} = [m_{neg} - d_{an}]_+

    (margins mirrored for similarities). Each of the two terms is reduced on its own (default:
    :class:`~calibrax.metric_learning.AvgNonZeroReducer`, the mean of the non-zero pair losses) and the
    two are added.

    Inside :class:`~calibrax.metric_learning.CrossBatchMemory` (a frozen reference set, all pairs),
    with the default distance (Euclidean, ``p=2``, ``power=1``) and reducer, the loss is computed
    by a fused, blocked kernel with its own backward pass (``jax.custom_vjp``): the same values and
    gradients w.r.t. the batch, several times faster, but ``jax.jvp`` of the loss raises (second
    derivatives differentiate the written-out backward pass and match the general path's). Every
    other setting, and any call without a memory, goes through the general pair-loss path (also
    reverse-mode only: the distance matrix has a written-out one-matmul backward pass).

    Args:
        pos_margin: Default 0.
        neg_margin: Default 1.
        distance: Default :class:`~calibrax.metric_learning.LpDistance` (normalised embeddings).
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Default :class:`~calibrax.metric_learning.AvgNonZeroReducer`.

    References:
        Hadsell et al., 2006, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR.

    Example:
        >>> import jax.numpy as jnp
        >>> from calibrax.metric_learning import ContrastiveLoss
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
        >>> print(round(float(ContrastiveLoss()(x, jnp.array([0, 0, 1]))), 4))
        1.4142
    """

    # Pair values are elementwise in the matrix: the gradient is symmetric without mirroring.
    mirror = False

    def __init__(
        self,
        *,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
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
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def default_reducer(self) -> Any:
        """Mean of the non-zero pair losses, as in pytorch-metric-learning."""
        return AvgNonZeroReducer()

    def compute_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        reducer: Any,
        ref: Reference | None = None,
    ) -> jax.Array:
        """As :meth:`GenericPairLoss.compute_loss`; against a frozen reference set (a memory
        bank) over all pairs, with the Euclidean distance and the default reducer, the fused
        kernel of ``_memory_contrastive`` (``jax.jvp`` of it raises)."""
        distance = self.distance
        rows = fused_memory_rows(distance, embeddings, indices_tuple, reducer, ref)
        if (
            rows is not None
            and type(distance) is LpDistance
            and distance.p == 2
            and distance.power == 1
        ):
            return memory_contrastive_loss(
                *rows,
                labels,
                ref.labels,
                ref_mask=ref.mask,
                query_mask=ref.query_mask,
                self_index=ref.self_index,
                pos_margin=self.pos_margin,
                neg_margin=self.neg_margin,
            )
        return super().compute_loss(embeddings, labels, indices_tuple, reducer, ref=ref)

    def pair_terms(
        self,
        mat: Float[Array, "batch batch"],
        pos: Float[Array, "batch batch"],
        neg: Float[Array, "batch batch"],
        axis: int,
    ) -> dict[str, LossTerm]:
        margin = self.distance.margin
        pos_loss = jax.nn.relu(margin(mat, self.pos_margin))
        neg_loss = jax.nn.relu(margin(self.neg_margin, mat))
        return {
            "pos_loss": LossTerm(pos_loss, pos),
            "neg_loss": LossTerm(neg_loss, neg),
        }
