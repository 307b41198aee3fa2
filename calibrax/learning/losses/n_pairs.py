"""NPairsLoss: one positive pair per class, each anchor classified against every class's
positive."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.learning.base import LossTerm
from calibrax.learning.distances.base_distance import BaseDistance
from calibrax.learning.distances.dot_product_similarity import DotProductSimilarity
from calibrax.learning.losses._pair_base import DistanceLoss
from calibrax.learning.losses._pair_base import loss_example
from calibrax.learning.losses._pair_base import neg_big
from calibrax.learning.losses._pair_base import working
from calibrax.learning.tuples import pair_weights

__all__ = ["NPairsLoss"]


@register(
    "n_pairs_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=loss_example(lambda: NPairsLoss()),
)
class NPairsLoss(DistanceLoss):
    r"""N-pairs loss, as pytorch-metric-learning's ``NPairsLoss``.

    One positive pair ``(a_c, p_c)`` is taken per class ``c``: the first in row-major order (the
    lowest anchor index that has a positive, and its lowest positive), as pytorch-metric-learning
    does for all pairs. Then each anchor is classified among the selected positives:

    .. math::
        L_c = -\log \frac{e^{s(a_c, p_c)}}{\sum_{c'} e^{s(a_c, p_{c'})}}

    averaged over the classes (default :class:`~calibrax.learning.MeanReducer`). Distances are
    negated. With a miner's :class:`~calibrax.learning.PairMask` the pair per class is again the
    first selected one in row-major order (pytorch-metric-learning uses the miner's list order).

    Args:
        distance: Default :class:`~calibrax.learning.DotProductSimilarity` (normalised).
        reducer: Default :class:`~calibrax.learning.MeanReducer`.

    References:
        Sohn, 2016, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective",
        NeurIPS.
    """

    def default_distance(self) -> BaseDistance:
        """Dot-product similarity, as in pytorch-metric-learning."""
        return DotProductSimilarity()

    def compute_terms(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any,
    ) -> dict[str, LossTerm]:
        emb = working(embeddings)
        if indices_tuple is None:
            return self._all_pairs_terms(emb, labels)
        pos, _ = pair_weights(indices_tuple, labels)
        has_pos = pos > 0
        row_has = jnp.any(has_pos, axis=1)
        index = jnp.arange(labels.shape[0])
        earlier = (
            (labels[:, None] == labels[None, :])
            & (index[None, :] < index[:, None])
            & row_has[None, :]
        )
        selected = row_has & ~jnp.any(earlier, axis=1)
        positive = jnp.argmax(has_pos, axis=1)
        mat = self.distance(emb, emb[positive])
        logits = mat if self.distance.is_inverted else -mat
        masked = jnp.where(selected[None, :], logits, neg_big(logits.dtype))
        losses = jax.nn.logsumexp(masked, axis=1) - jnp.diagonal(logits)
        losses = jnp.where(selected, losses, jnp.zeros_like(losses))
        return {"loss": LossTerm(losses, selected.astype(losses.dtype))}

    def _all_pairs_terms(self, emb: jax.Array, labels: jax.Array) -> dict[str, LossTerm]:
        """All pairs without a (B, B) array: the selected pair of a class is its two lowest
        indices, found with a stable sort of the labels, and the at most ``B // 2`` selected pairs
        are packed into fixed-size arrays, so the logits are (B // 2, B // 2)."""
        batch = labels.shape[0]
        size = max(1, batch // 2)
        order = jnp.argsort(labels, stable=True)
        sorted_labels = labels[order]
        first = jnp.concatenate([jnp.ones((1,), bool), sorted_labels[1:] != sorted_labels[:-1]])
        has_next = jnp.concatenate([sorted_labels[1:] == sorted_labels[:-1], jnp.zeros((1,), bool)])
        (where,) = jnp.nonzero(first & has_next, size=size, fill_value=0)
        valid = jnp.arange(size, dtype=jnp.int32) < jnp.sum(first & has_next, dtype=jnp.int32)
        anchors = emb[order[where]]
        positives = emb[order[jnp.minimum(where + 1, batch - 1)]]
        mat = self.distance(anchors, positives)
        logits = mat if self.distance.is_inverted else -mat
        masked = jnp.where(valid[None, :], logits, neg_big(logits.dtype))
        losses = jax.nn.logsumexp(masked, axis=1) - jnp.diagonal(logits)
        losses = jnp.where(valid, losses, jnp.zeros_like(losses))
        return {"loss": LossTerm(losses, valid.astype(losses.dtype))}
