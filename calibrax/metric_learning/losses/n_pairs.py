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
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.dot_product_similarity import DotProductSimilarity
from calibrax.metric_learning.losses._pair_base import DistanceLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import neg_big
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.tuples import pair_weights

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

    averaged over the classes (default :class:`~calibrax.metric_learning.MeanReducer`). Distances are
    negated. With a miner's :class:`~calibrax.metric_learning.PairMask` the pair per class is again the
    first selected one in row-major order (pytorch-metric-learning uses the miner's list order).

    Args:
        distance: Default :class:`~calibrax.metric_learning.DotProductSimilarity` (normalised).
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

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
        ref: Any = None,
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
        indices, found with a stable sort of the labels, and the selected pairs are packed at the
        front of fixed-size arrays.

        At most ``B // 2`` classes can have a pair, but a batch usually has far fewer (``B / k``
        with ``k`` samples per class). The logits are computed at the smallest width of
        :func:`_bucket_widths` (32, 64, 128, ... up to ``B // 2``) that holds every selected
        pair, picked at run time by ``lax.switch``: at most twice the pairs there are, instead
        of ``B // 2`` always. Every width gives the same values (padding is masked out).
        """
        batch = labels.shape[0]
        size = max(1, batch // 2)
        order = jnp.argsort(labels, stable=True)
        sorted_labels = labels[order]
        first = jnp.concatenate([jnp.ones((1,), bool), sorted_labels[1:] != sorted_labels[:-1]])
        has_next = jnp.concatenate([sorted_labels[1:] == sorted_labels[:-1], jnp.zeros((1,), bool)])
        starts = first & has_next
        (where,) = jnp.nonzero(starts, size=size, fill_value=0)
        n_pairs = jnp.sum(starts, dtype=jnp.int32)
        anchor_index = order[where]
        positive_index = order[jnp.minimum(where + 1, batch - 1)]

        def at_width(width: int) -> Any:
            def losses_and_weights(x: jax.Array) -> tuple[jax.Array, jax.Array]:
                valid = jnp.arange(width, dtype=jnp.int32) < n_pairs
                mat = self.distance(x[anchor_index[:width]], x[positive_index[:width]])
                logits = mat if self.distance.is_inverted else -mat
                masked = jnp.where(valid[None, :], logits, neg_big(logits.dtype))
                losses = jax.nn.logsumexp(masked, axis=1) - jnp.diagonal(logits)
                losses = jnp.where(valid, losses, jnp.zeros_like(losses))
                pad = (0, size - width)
                return jnp.pad(losses, pad), jnp.pad(valid.astype(losses.dtype), pad)

            return losses_and_weights

        widths = _bucket_widths(size)
        if len(widths) == 1:
            losses, weights = at_width(size)(emb)
        else:
            # The first width >= n_pairs (a compare and a sum; searchsorted is a while loop).
            index = jnp.sum(jnp.asarray(widths[:-1], jnp.int32) < n_pairs, dtype=jnp.int32)
            losses, weights = jax.lax.switch(index, [at_width(w) for w in widths], emb)
        return {"loss": LossTerm(losses, weights)}


def _bucket_widths(size: int) -> tuple[int, ...]:
    """The widths the all-pairs logits are computed at: powers of two from 32 below ``size``,
    then ``size``."""
    widths = []
    width = 32
    while width < size:
        widths.append(width)
        width *= 2
    return (*widths, size)
