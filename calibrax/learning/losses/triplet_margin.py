"""TripletMarginLoss: the anchor-positive distance should beat the anchor-negative one by a
margin."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.learning.distances.base_distance import BaseDistance
from calibrax.learning.losses._pair_base import DistanceLoss
from calibrax.learning.losses._pair_base import loss_example
from calibrax.learning.losses._pair_base import torch_softplus
from calibrax.learning.losses._pair_base import working
from calibrax.learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from calibrax.learning.reducers.mean_reducer import MeanReducer
from calibrax.learning.reducers.sum_reducer import SumReducer
from calibrax.learning.reducers.threshold_reducer import ThresholdReducer
from calibrax.learning.tuples import TripletMask
from calibrax.learning.tuples import anchor_block_size
from calibrax.learning.tuples import triplet_mask

__all__ = ["TripletMarginLoss"]


@register(
    "triplet_margin_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=loss_example(lambda: TripletMarginLoss()),
)
class TripletMarginLoss(DistanceLoss):
    r"""Triplet margin loss over all (or the mined) triplets, as pytorch-metric-learning's.

    .. math::
        L_{apn} = [d_{ap} - d_{an} + m]_+

    (``softplus`` instead of ``[.]_+`` with ``smooth_loss``; with ``swap``, ``d_an`` is replaced
    by ``d_pn`` where that is smaller). pytorch-metric-learning's default ``triplets_per_anchor=
    "all"``: every triplet of the batch.

    Memory: all B²(B-1) triplets are evaluated without a (B, B, B) array. For the plain hinge
    over all triplets (or a pair miner's) with a mean, sum or threshold reducer, each anchor's
    negatives are sorted once and the hinge sums come from prefix sums and ``searchsorted``:
    O(B² log B) time, O(B²) memory. Otherwise (swap, smooth loss, margin-mined triplets, other
    reducers) the anchors are processed in blocks (``jax.lax.map``; a block of ``k`` anchors holds ``k`` (B, B) [positive, negative]
    slices, with ``k·B² <= 4M``), each block adds its partial sums to the reducer
    (:meth:`~calibrax.learning.BaseReducer.partial`), and the block function is rematerialised
    (``jax.checkpoint``) so the backward pass keeps no per-block residuals either. Peak memory is
    O(B²); time is O(B³).

    Args:
        margin: Default 0.05.
        swap: Use the positive-negative distance when it is smaller (default False).
        smooth_loss: ``softplus`` instead of the hinge (default False).
        distance: Default :class:`~calibrax.learning.LpDistance` (normalised embeddings).
        reducer: Default :class:`~calibrax.learning.AvgNonZeroReducer`.

    References:
        Schroff et al., 2015, "FaceNet: A Unified Embedding for Face Recognition and Clustering",
        arXiv:1503.03832. Balntas et al., 2016, "Learning local feature descriptors with triplets
        and shallow convolutional neural networks" (the swap), BMVC.
    """

    def __init__(
        self,
        *,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        super().__init__(distance=distance, reducer=reducer)
        self.margin = margin
        self.swap = swap
        self.smooth_loss = smooth_loss

    def default_reducer(self) -> Any:
        """Mean of the non-zero triplet losses, as in pytorch-metric-learning."""
        return AvgNonZeroReducer()

    def compute_loss(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any,
        reducer: Any,
    ) -> jax.Array:
        mat = self.distance(working(embeddings))
        triplets = triplet_mask(indices_tuple, labels, mat.dtype)
        fast = not (self.swap or self.smooth_loss or triplets.bounded) and type(reducer) in (
            MeanReducer,
            SumReducer,
            ThresholdReducer,
            AvgNonZeroReducer,
        )
        if fast:
            return self._sorted_hinge(mat, triplets, reducer)
        return self._blocked(mat, triplets, reducer)

    def _sorted_hinge(self, mat: jax.Array, triplets: TripletMask, reducer: Any) -> jax.Array:
        """Hinge over every (positive, negative) combination of each anchor in O(B² log B).

        With ``D`` oriented so that larger = farther apart and ``t = D_ap + margin``, the anchor's
        sum over its negatives of ``[t - D_an]_+`` is ``k t - (sum of the k smallest D_an)``, ``k``
        the number of negatives below ``t``: sort each anchor's negatives once, take prefix sums,
        and look ``t`` up with ``searchsorted``. A threshold reducer's band ``low < t - D_an <
        high`` is the slice between two look-ups.
        """
        far = -mat if self.distance.is_inverted else mat
        inf = jnp.asarray(jnp.inf, far.dtype)
        neg_sorted = jnp.sort(jnp.where(triplets.neg, far, inf), axis=1)
        finite = jnp.where(jnp.isfinite(neg_sorted), neg_sorted, jnp.zeros_like(neg_sorted))
        prefix = jnp.concatenate(
            [jnp.zeros((far.shape[0], 1), far.dtype), jnp.cumsum(finite, axis=1)], axis=1
        )
        t = far + self.margin  # [a, p]
        search = jax.vmap(jnp.searchsorted, in_axes=(0, 0, None))
        low = reducer.low if isinstance(reducer, ThresholdReducer) else None
        high = reducer.high if isinstance(reducer, ThresholdReducer) else None
        # Positive hinge values t - x, within the band: x < t - max(low, 0) ...
        below = search(neg_sorted, t, "left")
        positive_floor = max(0.0, low) if low is not None else 0.0
        upper = search(neg_sorted, t - positive_floor, "left") if positive_floor else below
        # ... and not t - x >= high.
        lower = search(neg_sorted, t - high, "right") if high is not None else jnp.zeros_like(upper)
        lower = jnp.minimum(lower, upper)
        take = jnp.take_along_axis
        count = (upper - lower).astype(far.dtype)
        band_sum = take(prefix, upper, axis=1) - take(prefix, lower, axis=1)
        valid = triplets.pos.astype(far.dtype)
        total = jnp.sum(valid * (count * t - band_sum))
        n_neg = jnp.sum(triplets.neg, axis=1, keepdims=True, dtype=jnp.int32)
        if isinstance(reducer, ThresholdReducer):
            # Zero hinges (x >= t) pass the filter when 0 is inside (low, high).
            zeros_pass = (low is None or low < 0) and (high is None or high > 0)
            if zeros_pass:
                count = count + (n_neg - below).astype(far.dtype)
            denominator = jnp.sum(valid * count)
        else:
            denominator = jnp.sum(valid * n_neg.astype(far.dtype))
        return reducer.finalize(total, denominator)

    def _blocked(self, mat: jax.Array, triplets: TripletMask, reducer: Any) -> jax.Array:
        """Any reducer, swap, smooth loss and mined (bounded) triplets: anchor blocks."""
        distance = self.distance

        def one_anchor(a: jax.Array) -> tuple[jax.Array, jax.Array]:
            valid = triplets.anchor_slice(a)  # [p, n]
            ap = mat[a][:, None]
            an = jnp.broadcast_to(mat[a][None, :], mat.shape)
            if self.swap:
                an = jnp.maximum(an, mat) if distance.is_inverted else jnp.minimum(an, mat)
            violation = distance.margin(ap, an) + self.margin
            loss = torch_softplus(violation) if self.smooth_loss else jax.nn.relu(violation)
            return reducer.partial(loss, valid.astype(loss.dtype))

        batch = mat.shape[0]
        totals, counts = jax.lax.map(
            jax.checkpoint(one_anchor), jnp.arange(batch), batch_size=anchor_block_size(batch)
        )
        return reducer.finalize(jnp.sum(totals), jnp.sum(counts))
