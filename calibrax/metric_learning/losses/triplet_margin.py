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
from calibrax.metric_learning.base import ref_matrix
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.losses._pair_base import DistanceLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import torch_softplus
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from calibrax.metric_learning.reducers.mean_reducer import MeanReducer
from calibrax.metric_learning.reducers.sum_reducer import SumReducer
from calibrax.metric_learning.reducers.threshold_reducer import ThresholdReducer
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import TripletList
from calibrax.metric_learning.tuples import TripletMask
from calibrax.metric_learning.tuples import anchor_block_size
from calibrax.metric_learning.tuples import triplet_mask

__all__ = ["TripletMarginLoss"]


@register(
    "triplet_margin_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
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
    (:meth:`~calibrax.metric_learning.BaseReducer.partial`), and the block function is rematerialised
    (``jax.checkpoint``) so the backward pass keeps no per-block residuals either. Peak memory is
    O(B²); time is O(B³).

    With ``ref_emb``, triplets are (batch anchor, reference positive, reference negative);
    ``swap=True`` is then refused (the positive-negative distance would need the reference set
    against itself; pytorch-metric-learning indexes the batch rows with reference indices
    there). A padded ``(a, p, n)`` index tuple is evaluated entry by entry (gathers).

    Args:
        margin: Default 0.05.
        swap: Use the positive-negative distance when it is smaller (default False).
        smooth_loss: ``softplus`` instead of the hinge (default False).
        distance: Default :class:`~calibrax.metric_learning.LpDistance` (normalised embeddings).
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Default :class:`~calibrax.metric_learning.AvgNonZeroReducer`.

    References:
        Schroff et al., 2015, "FaceNet: A Unified Embedding for Face Recognition and Clustering",
        arXiv:1503.03832. Balntas et al., 2016, "Learning local feature descriptors with triplets
        and shallow convolutional neural networks" (the swap), BMVC.
    """

    supports_ref = True
    requires_labels = False

    def __init__(
        self,
        *,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
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
        ref: Reference | None = None,
    ) -> jax.Array:
        emb = working(embeddings)
        if ref is None:
            mat = self.distance(emb)
        else:
            if self.swap:
                raise ValueError(
                    "swap=True is not supported with ref_emb: the positive-negative distance "
                    "needs the reference set against itself (pytorch-metric-learning indexes the "
                    "batch rows with reference indices there)"
                )
            mat = ref_matrix(self.distance, emb, ref)
        triplets = triplet_mask(indices_tuple, labels, mat.dtype, ref)
        if isinstance(triplets, TripletList):
            return self._listed(mat, triplets, reducer)
        counted = triplets.pos.dtype != jnp.bool_  # triplets repeated by pair counts
        fast = not (self.swap or self.smooth_loss or triplets.bounded or counted) and type(
            reducer
        ) in (
            MeanReducer,
            SumReducer,
            ThresholdReducer,
            AvgNonZeroReducer,
        )
        if fast and (not isinstance(reducer, ThresholdReducer) or _no_band(reducer)):
            return self._hinge_counts(mat, triplets, reducer)
        if fast:
            return self._sorted_hinge(mat, triplets, reducer)
        return self._blocked(mat, triplets, reducer)

    def _hinge_counts(self, mat: jax.Array, triplets: TripletMask, reducer: Any) -> jax.Array:
        """Hinge over every (positive, negative) combination of each anchor, mean/sum reducers and
        the mean of the non-zero values, with :func:`_row_hinge_sums` (sorts of values only)."""
        far = -mat if self.distance.is_inverted else mat
        inf = jnp.asarray(jnp.inf, far.dtype)
        t = jnp.where(triplets.pos, far + self.margin, -inf)
        x = jnp.where(triplets.neg, far, inf)
        total, count = _row_hinge_sums(t, x)
        if isinstance(reducer, ThresholdReducer):  # low = 0: the number of non-zero hinges
            denominator = jnp.sum(count)
        else:
            n_pos = jnp.sum(triplets.pos, axis=1, dtype=jnp.int32)
            n_neg = jnp.sum(triplets.neg, axis=1, dtype=jnp.int32)
            denominator = jnp.sum(n_pos * n_neg).astype(far.dtype)
        return reducer.finalize(jnp.sum(total), denominator)

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

    def _violation(self, ap: jax.Array, an: jax.Array) -> jax.Array:
        violation = self.distance.margin(ap, an) + self.margin
        return torch_softplus(violation) if self.smooth_loss else jax.nn.relu(violation)

    def _listed(self, mat: jax.Array, triplets: TripletList, reducer: Any) -> jax.Array:
        """An explicit list of triplets: one gathered value per entry, padding weighted 0."""
        a, p, n = triplets.safe()
        ap, an = mat[a, p], mat[a, n]
        if self.swap:
            # The batch is the reference set here (swap with ref_emb is refused above).
            pn = mat[p, n]
            an = jnp.maximum(an, pn) if self.distance.is_inverted else jnp.minimum(an, pn)
        loss = self._violation(ap, an)
        return reducer(loss, triplets.valid.astype(loss.dtype))

    def _blocked(self, mat: jax.Array, triplets: TripletMask, reducer: Any) -> jax.Array:
        """Any reducer, swap, smooth loss and mined (bounded) triplets: anchor blocks."""
        distance = self.distance
        width = mat.shape[1]

        def one_anchor(a: jax.Array) -> tuple[jax.Array, jax.Array]:
            valid = triplets.anchor_slice(a)  # [p, n]
            ap = mat[a][:, None]
            an = jnp.broadcast_to(mat[a][None, :], (width, width))
            if self.swap:
                an = jnp.maximum(an, mat) if distance.is_inverted else jnp.minimum(an, mat)
            violation = distance.margin(ap, an) + self.margin
            loss = torch_softplus(violation) if self.smooth_loss else jax.nn.relu(violation)
            # ClassWeightedReducer / MultipleReducers: the reducer of this anchor.
            red = reducer.at_anchor(a) if hasattr(reducer, "at_anchor") else reducer
            return red.partial(loss, valid.astype(loss.dtype))

        batch = mat.shape[0]
        totals, counts = jax.lax.map(
            jax.checkpoint(one_anchor),
            jnp.arange(batch),
            batch_size=anchor_block_size(batch, width=width),
        )
        return reducer.finalize(jnp.sum(totals), jnp.sum(counts))


def _no_band(reducer: ThresholdReducer) -> bool:
    """True for the mean of the non-zero values: ``low`` 0 and no ``high``."""
    return reducer.low == 0 and reducer.high is None


def _sort_rows(x: jax.Array) -> jax.Array:
    """``jnp.sort(x, axis=1)`` for float32/float64 without NaN (no gradient): the floats are
    sorted as order-preserving integers, which XLA's CPU sort handles several times faster."""
    itype = {4: jnp.int32, 8: jnp.int64}[x.dtype.itemsize]
    flip = jnp.asarray(jnp.iinfo(itype).max, itype)
    keys = jax.lax.bitcast_convert_type(x, itype)
    keys = jnp.where(keys < 0, keys ^ flip, keys)
    keys = jax.lax.sort(keys, dimension=1, is_stable=False)
    keys = jnp.where(keys < 0, keys ^ flip, keys)
    return jax.lax.bitcast_convert_type(keys, x.dtype)


def _count_below(sorted_rows: jax.Array, queries: jax.Array, side: str) -> jax.Array:
    """Per row, how many entries of ``sorted_rows`` are below each query (``side`` as
    ``jnp.searchsorted``)."""
    return jax.vmap(lambda s, q: jnp.searchsorted(s, q, side=side))(sorted_rows, queries)


@jax.custom_vjp
def _row_hinge_sums(t: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row ``a``: ``sum_{p, n} [t_ap - x_an]_+`` and the (B, B) counts ``#{n: x_an < t_ap}``.

    ``t = -inf`` marks a non-positive, ``x = +inf`` a non-negative. The sorted negatives' prefix
    sums give the value; the gradient is ``#{n: x_an < t_ap}`` w.r.t. ``t_ap`` and
    ``-#{p: t_ap > x_an}`` w.r.t. ``x_an``, both counts from a sort of values, O(B² log B) and
    no (B, B, B) array.
    """
    return _row_hinge_sums_fwd(t, x)[0]


def _row_hinge_sums_fwd(t: jax.Array, x: jax.Array) -> tuple[Any, Any]:
    x_sorted = _sort_rows(x)
    finite = jnp.where(jnp.isfinite(x_sorted), x_sorted, jnp.zeros_like(x_sorted))
    prefix = jnp.concatenate([jnp.zeros((x.shape[0], 1), x.dtype), jnp.cumsum(finite, axis=1)], 1)
    count = _count_below(x_sorted, t, "left")  # 0 where t = -inf
    below_sum = jnp.take_along_axis(prefix, count, axis=1)
    counted = count > 0
    hinge = jnp.where(counted, count.astype(t.dtype) * jnp.where(counted, t, 0) - below_sum, 0)
    return (jnp.sum(hinge, axis=1), count.astype(t.dtype)), (t, x, count)


def _row_hinge_sums_bwd(res: Any, g: Any) -> tuple[jax.Array, jax.Array]:
    t, x, count = res
    g_total = g[0][:, None]
    t_sorted = _sort_rows(t)
    above = t.shape[1] - _count_below(t_sorted, x, "right")  # #{p: t_ap > x_an}
    above = jnp.where(jnp.isfinite(x), above, 0)
    return g_total * count.astype(t.dtype), -g_total * above.astype(x.dtype)


_row_hinge_sums.defvjp(_row_hinge_sums_fwd, _row_hinge_sums_bwd)
