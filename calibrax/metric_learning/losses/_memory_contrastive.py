"""ContrastiveLoss against a frozen reference set (CrossBatchMemory), fused and blocked.

The general pair-loss path builds the (B, M) distance matrix, the two (B, M) pair masks, the two
(B, M) loss arrays and their reductions, and autodiff then walks the same chain back: about a
dozen passes over (B, M) arrays, which for a memory of 8192 slots cost four times the two matmuls.
Here, for the default setting of :class:`~calibrax.metric_learning.ContrastiveLoss` inside
:class:`~calibrax.metric_learning.CrossBatchMemory` (all pairs, Euclidean distance, the mean of
the non-zero pair losses), the reference rows are taken in column blocks of about 256 K pairs (``_memory_blocks``): each
block's inner products, distances, masks and the four sums of the two reducers are computed while
the block is in cache, and the block's coefficients of the gradient (``±1 / (2 d)`` on the pairs
whose loss is non-zero) are kept. The backward pass scales them by the reducers' divisors (known
only once every block is done) and multiplies them with the reference rows: two matmuls in all,
as for the matrix alone, and no gradient for the reference set (a memory bank is not trained).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.metric_learning.losses._memory_blocks import MemoryMasks
from calibrax.metric_learning.losses._memory_blocks import block_columns
from calibrax.metric_learning.losses._memory_blocks import memory_masks
from calibrax.metric_learning.losses._memory_blocks import scan_blocks

__all__ = ["memory_contrastive_loss"]


def _forward(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    masks: MemoryMasks,
    margins: tuple[float, float],
    keep_coefficients: bool,
) -> tuple[jax.Array, Any]:
    """The loss and, with ``keep_coefficients``, the residuals of the backward pass.

    Each block gives (sum of the counted positive losses, their count, sum of the counted
    negative losses, their count, number of positive pairs) and, kept, its (B, block) gradient
    coefficients: ``1 / (2 d)`` on the counted positive pairs, ``-1 / (2 d)`` on the counted
    negative pairs, 0 elsewhere (also where the distance was rounded to 0: its gradient is 0).
    """
    pos_margin, neg_margin = margins
    dtype = xn.dtype
    zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)
    tolerance = 4 * float(jnp.finfo(dtype).eps)
    sq_x = jnp.sum(xn * xn, axis=1)

    def block(carry: Any, r: Any, rl: Any, rv: Any, first: Any) -> tuple[Any, Any]:
        # The distance exactly as LpDistance's (``_l2_matrix``): |x|^2 + |r|^2 - 2 x.r, the
        # rounding-level values set to 0.
        scale = sq_x[:, None] + jnp.sum(r * r, axis=1)[None, :]
        sq = scale - 2 * (xn @ r.T)
        keep = sq > tolerance * scale
        dist = jnp.sqrt(jnp.where(keep, sq, zero))
        pos, neg = memory_masks(labels, rl, rv, masks.anchors, masks.own, first)
        # One signed array carries both terms: d - pos_margin (> 0) on the positive pairs with
        # a non-zero loss, d - neg_margin (< 0, minus the loss) on such negative pairs, 0
        # elsewhere; the sums are then simple reductions of one array.
        signed = jnp.where(
            pos & (dist > pos_margin),
            dist - pos_margin,
            jnp.where(neg & (dist < neg_margin), dist - neg_margin, zero),
        )
        sums = jnp.stack(
            [
                jnp.sum(jnp.maximum(signed, zero)),
                -jnp.sum(jnp.minimum(signed, zero)),
                jnp.sum(jnp.where(signed > 0, one, zero)),
                jnp.sum(jnp.where(signed < 0, one, zero)),
                jnp.sum(jnp.where(pos, one, zero)),
            ]
        )
        # The counts of a block are whole numbers below 2^24: exact, and added as int32.
        values, counts = carry
        carry = (values + sums[:2], counts + sums[2:].astype(jnp.int32))
        if not keep_coefficients:
            return carry, None
        # d(term)/d(squared distance) before the divisors: ±1 / (2 d), 0 where d was set to 0.
        coef = jnp.where(keep, jnp.sign(signed) * (0.5 / jnp.where(keep, dist, one)), zero)
        return carry, coef

    init = (jnp.zeros((2,), dtype), jnp.zeros((3,), jnp.int32))
    width = block_columns(xn.shape[0], ref.shape[0])
    (values, counts), coefs = scan_blocks(ref, ref_labels, masks.ref_valid, width, block, init)
    enough, _ = masks.pair_totals(counts[2])
    # Each term: its mean over the counted pairs (0 without one); the loss is 0 without enough
    # pairs (pytorch-metric-learning's GenericPairLoss).
    pos_count, neg_count = counts[0], counts[1]
    pos_scale = jnp.where(
        enough & (pos_count > 0), 1 / jnp.maximum(pos_count, 1).astype(dtype), zero
    )
    neg_scale = jnp.where(
        enough & (neg_count > 0), 1 / jnp.maximum(neg_count, 1).astype(dtype), zero
    )
    loss = values[0] * pos_scale + values[1] * neg_scale
    return loss, (xn, ref, ref_labels, masks.ref_valid, coefs, pos_scale, neg_scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _loss(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    masks: MemoryMasks,
    margins: tuple[float, float],
) -> jax.Array:
    return _forward(xn, ref, labels, ref_labels, masks, margins, False)[0]


def _loss_fwd(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    masks: MemoryMasks,
    margins: tuple[float, float],
) -> tuple[jax.Array, Any]:
    return _forward(xn, ref, labels, ref_labels, masks, margins, True)


def _loss_bwd(margins: tuple[float, float], res: Any, g: jax.Array) -> tuple[Any, ...]:
    del margins
    xn, ref, ref_labels, ref_valid, coefs, pos_scale, neg_scale = res
    pos_scale, neg_scale = g * pos_scale, g * neg_scale

    def block(acc: Any, r: Any, rl: Any, rv: Any, first: Any, coef: Any) -> tuple[Any, None]:
        # u = dL/d(squared distance): each coefficient times its term's divisor.
        u = jnp.where(coef > 0, pos_scale * coef, neg_scale * coef)
        return (acc[0] + u @ r, acc[1] + jnp.sum(u, axis=1)), None

    init = (jnp.zeros_like(xn), jnp.zeros(xn.shape[:1], xn.dtype))
    width = block_columns(xn.shape[0], ref.shape[0])
    (u_ref, u_sum), _ = scan_blocks(ref, ref_labels, ref_valid, width, block, init, coefs)
    # d(squared distance)/dx_i = 2 (x_i - r_j); the reference set gets no gradient (frozen).
    return 2 * (xn * u_sum[:, None] - u_ref), None, None, None, None


_loss.defvjp(_loss_fwd, _loss_bwd)


def memory_contrastive_loss(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    *,
    ref_mask: jax.Array | None,
    query_mask: jax.Array | None,
    self_index: jax.Array | None,
    pos_margin: float,
    neg_margin: float,
) -> jax.Array:
    """ContrastiveLoss (Euclidean distance, AvgNonZeroReducer, all pairs) of ``xn`` against the
    frozen reference rows ``ref``, both already normalised (if the distance normalises).

    Args:
        xn: (B, D) anchors, in the working dtype.
        ref: (M, D) reference rows, same dtype; no gradient is computed for them.
        labels: (B,) int32 labels of the anchors.
        ref_labels: (M,) int32 labels of the reference rows.
        ref_mask: (M,) bool, the reference rows in use, or None for all.
        query_mask: (B,) bool, the rows that are anchors, or None for all.
        self_index: (B,) int32, each anchor's own reference row (not a positive), or None.
        pos_margin: ContrastiveLoss's ``pos_margin``.
        neg_margin: ContrastiveLoss's ``neg_margin``.

    Returns:
        The scalar loss: the mean of the non-zero positive-pair losses plus that of the non-zero
        negative-pair losses, 0 unless there are at least two positive or two negative pairs.
        Differentiable w.r.t. ``xn`` only, in reverse mode (a ``jax.custom_vjp``: ``jax.jvp``
        raises).
    """
    masks = MemoryMasks.of(labels, ref_labels, ref_mask, query_mask, self_index)
    return _loss(
        xn,
        jax.lax.stop_gradient(ref),
        labels,
        ref_labels,
        masks,
        (float(pos_margin), float(neg_margin)),
    )
