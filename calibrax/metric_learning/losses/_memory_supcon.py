"""SupConLoss against a frozen reference set (CrossBatchMemory), fused and blocked.

The companion of ``_memory_contrastive`` for :class:`~calibrax.metric_learning.SupConLoss` with
its default cosine similarity and reducer, over all pairs: the reference rows are taken in column
blocks (``_memory_blocks``); each block's similarities update every anchor's running log-sum-exp
(an online maximum and a rescaled sum of exponentials) and its sums over the positives, and the
block's similarities are kept. The backward pass turns them into the softmax weights with the
final log-normalisers and multiplies with the reference rows: two matmuls in all, and no gradient
for the reference set (a memory bank is not trained).
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

__all__ = ["memory_supcon_loss"]


def _forward(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    masks: MemoryMasks,
    temperature: float,
    keep_blocks: bool,
) -> tuple[jax.Array, Any]:
    """The loss and, with ``keep_blocks``, the residuals of the backward pass (each block's
    scaled similarities among them)."""
    dtype = xn.dtype
    batch = xn.shape[0]
    low = jnp.asarray(jnp.finfo(dtype).min, dtype)
    zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)

    def block(carry: Any, r: Any, rl: Any, rv: Any, first: Any) -> tuple[Any, Any]:
        # Per anchor: the running maximum over its pairs, the sum of exp(s - maximum) (rescaled
        # when the maximum grows), the sum of s over its positives and their number.
        top, total, pos_sum, n_pos = carry
        s = (xn @ r.T) / temperature
        pos, neg = memory_masks(labels, rl, rv, masks.anchors, masks.own, first)
        kept = pos | neg
        new_top = jnp.maximum(top, jnp.max(jnp.where(kept, s, low), axis=1))
        e = jnp.where(kept, jnp.exp(jnp.where(kept, s - new_top[:, None], zero)), zero)
        total = total * jnp.exp(top - new_top) + jnp.sum(e, axis=1)
        pos_sum = pos_sum + jnp.sum(jnp.where(pos, s, zero), axis=1)
        n_pos = n_pos + jnp.sum(jnp.where(pos, one, zero), axis=1)
        return (new_top, total, pos_sum, n_pos), (s if keep_blocks else None)

    init = (jnp.full((batch,), low, dtype),) + 3 * (jnp.zeros((batch,), dtype),)
    width = block_columns(batch, ref.shape[0])
    (top, total, pos_sum, n_pos), sims = scan_blocks(
        ref, ref_labels, masks.ref_valid, width, block, init
    )
    # Each row's count is a whole number below 2^24 (exact in float32); the total is int32.
    n_pos_total = jnp.sum(n_pos.astype(jnp.int32), dtype=jnp.int32)
    enough, n_neg_total = masks.pair_totals(n_pos_total)
    both = enough & (n_pos_total > 0) & (n_neg_total > 0)
    has_kept = total > 0
    lse = jnp.where(has_kept, top + jnp.log(jnp.where(has_kept, total, one)), zero)
    tiny = jnp.finfo(dtype).tiny
    values = -(pos_sum - n_pos * lse) / (n_pos + tiny)
    # AvgNonZeroReducer over the anchors (only when there are a positive and a negative pair).
    counted = both & masks.anchors & (values > 0)
    count = jnp.sum(counted, dtype=jnp.int32)
    scale = jnp.where(count > 0, 1 / jnp.maximum(count, 1).astype(dtype), zero)
    loss = jnp.sum(jnp.where(counted, values, zero)) * scale
    # d loss / d s_aj = w_a (rho_a softmax_a(j) - [j in P(a)] / |P(a)|), w_a the anchor's weight
    # and rho_a = |P(a)| / (|P(a)| + tiny) (0 without a positive).
    weight = jnp.where(counted, scale, zero)
    soft_w = weight * n_pos / (n_pos + tiny)
    pos_w = weight / (n_pos + tiny)
    return loss, (xn, ref, ref_labels, labels, masks, sims, lse, soft_w, pos_w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _loss(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    masks: MemoryMasks,
    temperature: float,
) -> jax.Array:
    return _forward(xn, ref, labels, ref_labels, masks, temperature, False)[0]


def _loss_fwd(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    masks: MemoryMasks,
    temperature: float,
) -> tuple[jax.Array, Any]:
    return _forward(xn, ref, labels, ref_labels, masks, temperature, True)


def _loss_bwd(temperature: float, res: Any, g: jax.Array) -> tuple[Any, ...]:
    xn, ref, ref_labels, labels, masks, sims, lse, soft_w, pos_w = res
    zero = jnp.zeros((), xn.dtype)
    # s = (x r) / temperature: the cotangent of the product is that of s over the temperature.
    soft_w, pos_w = g * soft_w / temperature, g * pos_w / temperature

    def block(acc: Any, r: Any, rl: Any, rv: Any, first: Any, s: Any) -> tuple[Any, None]:
        pos, neg = memory_masks(labels, rl, rv, masks.anchors, masks.own, first)
        kept = pos | neg
        p = jnp.where(kept, jnp.exp(jnp.where(kept, s - lse[:, None], zero)), zero)
        cot = soft_w[:, None] * p - jnp.where(pos, pos_w[:, None], zero)
        return acc + cot @ r, None

    width = block_columns(xn.shape[0], ref.shape[0])
    d_xn, _ = scan_blocks(ref, ref_labels, masks.ref_valid, width, block, jnp.zeros_like(xn), sims)
    # The reference set gets no gradient (frozen).
    return d_xn, None, None, None, None


_loss.defvjp(_loss_fwd, _loss_bwd)


def memory_supcon_loss(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    *,
    ref_mask: jax.Array | None,
    query_mask: jax.Array | None,
    self_index: jax.Array | None,
    temperature: float,
) -> jax.Array:
    """SupConLoss (cosine similarity, AvgNonZeroReducer, all pairs) of ``xn`` against the frozen
    reference rows ``ref``, both already L2-normalised.

    Args:
        xn: (B, D) anchors, in the working dtype.
        ref: (M, D) reference rows, same dtype; no gradient is computed for them.
        labels: (B,) int32 labels of the anchors.
        ref_labels: (M,) int32 labels of the reference rows.
        ref_mask: (M,) bool, the reference rows in use, or None for all.
        query_mask: (B,) bool, the rows that are anchors, or None for all.
        self_index: (B,) int32, each anchor's own reference row (not a pair), or None.
        temperature: SupConLoss's ``temperature``.

    Returns:
        The scalar loss: the mean over the anchors with a non-zero loss, 0 unless there is a
        positive and a negative pair and at least two of one kind. Differentiable, in reverse mode,
        w.r.t. ``xn`` only (a ``jax.custom_vjp``: ``jax.jvp`` raises).
    """
    masks = MemoryMasks.of(labels, ref_labels, ref_mask, query_mask, self_index)
    return _loss(xn, jax.lax.stop_gradient(ref), labels, ref_labels, masks, float(temperature))
