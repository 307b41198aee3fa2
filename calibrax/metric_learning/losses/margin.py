"""MarginLoss: distances of positive pairs below, of negative pairs above, a learnable boundary
beta."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.base import ref_matrix
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.losses._pair_base import DistanceLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.reducers.base_reducer import safe_mean
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import triplet_mask

__all__ = ["MarginLoss"]


class FixedBeta(nnx.Variable):
    """A boundary ``beta`` that is not trained (``learn_beta=False``): not an ``nnx.Param``."""


@register(
    "margin_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: MarginLoss(learn_beta=True, nu=0.1)),
)
class MarginLoss(DistanceLoss):
    r"""Margin loss with a (learnable) boundary ``β``, as pytorch-metric-learning's
    ``MarginLoss``.

    Over all (or the mined) triplets ``(a, p, n)``, with ``β_a`` the anchor's boundary:

    .. math::
        L = \frac{\sum_{apn} [d_{ap} - β_a + m]_+ + [β_a - d_{an} + m]_+}{\#\{\text{non-zero
            terms}\}} + ν \cdot R(β)

    (the divisor counts the non-zero positive and negative terms; the loss is 0 when it is 0). With
    ``learn_beta``, ``R(β) = β`` for one shared boundary, or the mean of ``β_a`` over the triplets
    divided the same way for per-class boundaries (``num_classes``). Each triplet term depends on
    one pair only, so the loss needs only per-pair triplet counts: O(B²) memory.

    Args:
        margin: Default 0.2.
        nu: Weight of the ``β`` regulariser (default 0).
        beta: Initial boundary (default 1.2), stored in float32 as in pytorch-metric-learning.
        learn_beta: Make ``β`` an ``nnx.Param`` (default False).
        num_classes: One ``β`` per class (default ``None``: one shared ``β``).
        distance: Default :class:`~calibrax.metric_learning.LpDistance` (normalised embeddings).
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.

    Raises:
        ValueError: If ``num_classes`` is not a positive integer, or (eagerly) labels fall outside
            ``[0, num_classes)``.

    References:
        Wu et al., 2017, "Sampling Matters in Deep Embedding Learning", arXiv:1706.07567.
    """

    supports_ref = True
    requires_labels = False

    def __init__(
        self,
        *,
        margin: float = 0.2,
        nu: float = 0.0,
        beta: float = 1.2,
        learn_beta: bool = False,
        num_classes: int | None = None,
        distance: BaseDistance | None = None,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
    ) -> None:
        super().__init__(
            distance=distance,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
        )
        if num_classes is not None:
            checks.check_positive_int(num_classes, "num_classes")
        self.margin = margin
        self.nu = nu
        self.learn_beta = learn_beta
        self.num_classes = num_classes
        init = jnp.full((num_classes or 1,), float(beta), jnp.float32)
        self.beta = nnx.Param(init) if learn_beta else FixedBeta(init)

    def validate_inputs(
        self,
        embeddings: Any,
        labels: Any,
        indices_tuple: Any = None,
        ref_emb: Any = None,
        ref_labels: Any = None,
    ) -> Any:
        """Check the inputs, and that labels index the per-class boundaries (per-class
        boundaries need labels, also with an ``indices_tuple``)."""
        if self.num_classes is not None and labels is None:
            raise ValueError("MarginLoss with num_classes requires `labels`, got None")
        out = super().validate_inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if self.num_classes is not None:
            checks.check_labels_in_range(labels, self.num_classes)
        return out

    def compute_loss(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any,
        reducer: Any,
        ref: Reference | None = None,
    ) -> jax.Array:
        mat = ref_matrix(self.distance, working(embeddings), ref)
        pos_count, neg_count = triplet_mask(indices_tuple, labels, mat.dtype, ref).pair_counts()
        pos_count = pos_count.astype(mat.dtype)
        neg_count = neg_count.astype(mat.dtype)
        beta = self.beta[...]
        if not self.learn_beta:
            beta = jax.lax.stop_gradient(beta)
        beta = beta.astype(mat.dtype)
        anchor_beta = (beta[labels] if self.num_classes is not None else beta[:1])[:, None]
        margin = self.distance.margin
        pos_loss = jax.nn.relu(margin(mat, anchor_beta) + self.margin)
        neg_loss = jax.nn.relu(margin(anchor_beta, mat) + self.margin)
        total = jnp.sum(pos_count * pos_loss) + jnp.sum(neg_count * neg_loss)
        divisor = jnp.sum(jnp.where(pos_loss > 0, pos_count, 0)) + jnp.sum(
            jnp.where(neg_loss > 0, neg_count, 0)
        )
        loss = safe_mean(total, divisor)
        if self.learn_beta:
            triplets_per_anchor = jnp.sum(pos_count, axis=1)
            if self.num_classes is None:
                any_triplet = jnp.sum(triplets_per_anchor) > 0
                reg = jnp.where(any_triplet, beta[0] * self.nu, jnp.zeros((), beta.dtype))
            else:
                reg = safe_mean(jnp.sum(triplets_per_anchor * anchor_beta[:, 0]) * self.nu, divisor)
            loss = loss + reg
        return loss
