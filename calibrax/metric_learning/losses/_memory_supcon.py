"""SupConLoss against a frozen reference set (CrossBatchMemory), fused and blocked.

The companion of ``_memory_contrastive`` for :class:`~calibrax.metric_learning.SupConLoss` with
its default cosine similarity and reducer, over all pairs: the reference rows are taken in column
blocks (``block_columns``); each block's similarities update every anchor's running log-sum-exp
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

from calibrax.metric_learning.losses._memory_contrastive import block_columns

__all__ = ["memory_supcon_loss"]


def _masks(
    labels: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    anchors: jax.Array,
    own: jax.Array,
    first: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(B, block) ``(pos, kept)``: the positive pairs, and every pair (positive or negative) of
    the block's columns, as the label masks of a Reference."""
    same = labels[:, None] == ref_labels[None, :]
    valid = anchors[:, None] & ref_valid[None, :]
    column = first + jnp.arange(ref_labels.shape[0], dtype=own.dtype)
    is_own = column[None, :] == own[:, None]
    pos = same & valid & ~is_own
    kept = valid & ~(same & is_own)
    return pos, kept


def _scan_blocks(
    ref: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    width: int,
    fn: Any,
    carry: Any,
    extra: tuple[jax.Array, ...] = (),
) -> tuple[Any, list[Any]]:
    """Run ``fn(carry, r, rl, rv, first, *extra_block) -> (carry, out)`` over the column blocks
    of ``width`` rows (a scan over the full blocks, then the remainder); ``extra`` are arrays
    already split the same way (a stack for the full blocks, then the remainder)."""
    size, dim = ref.shape
    n_full = size // width
    stop = n_full * width
    outs: list[Any] = []
    k = 0
    if n_full > 0:

        def body(c: Any, block: Any) -> tuple[Any, Any]:
            r, rl, rv, idx, *more = block
            return fn(c, r, rl, rv, idx * width, *more)

        blocks = (
            ref[:stop].reshape(n_full, width, dim),
            ref_labels[:stop].reshape(n_full, width),
            ref_valid[:stop].reshape(n_full, width),
            jnp.arange(n_full, dtype=jnp.int32),
            *(e[0] for e in extra),
        )
        carry, out = jax.lax.scan(body, carry, blocks)
        outs.append(out)
        k = 1
    if stop < size:
        carry, out = fn(
            carry,
            ref[stop:],
            ref_labels[stop:],
            ref_valid[stop:],
            jnp.int32(stop),
            *(e[k] for e in extra),
        )
        outs.append(out)
    return carry, outs


def _forward(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    anchors: jax.Array,
    own: jax.Array,
    own_valid: jax.Array,
    temperature: float,
    keep_blocks: bool,
) -> tuple[jax.Array, Any]:
    dtype = xn.dtype
    batch = xn.shape[0]
    width = block_columns(batch, ref.shape[0])
    low = jnp.asarray(jnp.finfo(dtype).min, dtype)
    zero = jnp.zeros((), dtype)

    def block(carry: Any, r: Any, rl: Any, rv: Any, first: Any) -> tuple[Any, Any]:
        top, total, pos_sum, n_pos = carry
        s = (xn @ r.T) / temperature
        pos, kept = _masks(labels, rl, rv, anchors, own, first)
        new_top = jnp.maximum(top, jnp.max(jnp.where(kept, s, low), axis=1))
        e = jnp.where(kept, jnp.exp(jnp.where(kept, s - new_top[:, None], zero)), zero)
        total = total * jnp.exp(top - new_top) + jnp.sum(e, axis=1)
        pos_sum = pos_sum + jnp.sum(jnp.where(pos, s, zero), axis=1)
        n_pos = n_pos + jnp.sum(jnp.where(pos, 1.0, 0.0).astype(dtype), axis=1)
        return (new_top, total, pos_sum, n_pos), (s if keep_blocks else None)

    init = (
        jnp.full((batch,), low, dtype),
        jnp.zeros((batch,), dtype),
        jnp.zeros((batch,), dtype),
        jnp.zeros((batch,), dtype),
    )
    (top, total, pos_sum, n_pos), sims = _scan_blocks(
        ref, ref_labels, ref_valid, width, block, init
    )
    # Row counts are whole numbers below 2^24 (exact in float32); the totals are int32.
    n_pos_rows = n_pos.astype(jnp.int32)
    n_pos_total = jnp.sum(n_pos_rows, dtype=jnp.int32)
    n_same = n_pos_total + jnp.sum(own_valid, dtype=jnp.int32)
    n_pairs = jnp.sum(anchors, dtype=jnp.int32) * jnp.sum(ref_valid, dtype=jnp.int32)
    n_neg_total = n_pairs - n_same
    enough = (n_pos_total > 1) | (n_neg_total > 1)
    both = enough & (n_pos_total > 0) & (n_neg_total > 0)
    has_kept = total > 0
    lse = jnp.where(has_kept, top + jnp.log(jnp.where(has_kept, total, 1.0)), zero)
    tiny = jnp.finfo(dtype).tiny
    values = -(pos_sum - n_pos * lse) / (n_pos + tiny)
    counted = both & anchors & (values > 0)
    count = jnp.sum(counted, dtype=jnp.int32)
    scale = jnp.where(count > 0, 1 / jnp.maximum(count, 1).astype(dtype), zero)
    loss = jnp.sum(jnp.where(counted, values, zero)) * scale
    # d loss / d s_aj = w_a (rho_a softmax_a(j) - [j in P(a)] / |P(a)|), w_a the anchor's weight.
    weight = jnp.where(counted, scale, zero)
    res = (
        xn,
        ref,
        sims,
        labels,
        ref_labels,
        ref_valid,
        anchors,
        own,
        lse,
        weight * n_pos / (n_pos + tiny),
        weight / (n_pos + tiny),
    )
    return loss, res


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _loss(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    anchors: jax.Array,
    own: jax.Array,
    own_valid: jax.Array,
    temperature: float,
) -> jax.Array:
    return _forward(
        xn, ref, labels, ref_labels, ref_valid, anchors, own, own_valid, temperature, False
    )[0]


def _loss_fwd(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    anchors: jax.Array,
    own: jax.Array,
    own_valid: jax.Array,
    temperature: float,
) -> tuple[jax.Array, Any]:
    return _forward(
        xn, ref, labels, ref_labels, ref_valid, anchors, own, own_valid, temperature, True
    )


def _loss_bwd(temperature: float, res: Any, g: jax.Array) -> tuple[Any, ...]:
    xn, ref, sims, labels, ref_labels, ref_valid, anchors, own, lse, soft_w, pos_w = res
    dtype = xn.dtype
    zero = jnp.zeros((), dtype)
    soft_w, pos_w = g * soft_w / temperature, g * pos_w / temperature
    width = block_columns(xn.shape[0], ref.shape[0])

    def block(acc: Any, r: Any, rl: Any, rv: Any, first: Any, s: Any) -> tuple[Any, None]:
        pos, kept = _masks(labels, rl, rv, anchors, own, first)
        p = jnp.where(kept, jnp.exp(jnp.where(kept, s - lse[:, None], zero)), zero)
        cot = soft_w[:, None] * p - jnp.where(pos, pos_w[:, None], zero)
        return acc + cot @ r, None

    d_xn, _ = _scan_blocks(
        ref, ref_labels, ref_valid, width, block, jnp.zeros_like(xn), extra=(sims,)
    )
    return (d_xn, jnp.zeros_like(ref), None, None, None, None, None, None)


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
        positive and a negative pair and at least two of one kind. Differentiable in reverse mode
        w.r.t. ``xn`` only (a ``jax.custom_vjp``: ``jax.jvp`` raises).
    """
    batch, size = xn.shape[0], ref.shape[0]
    ref_valid = jnp.ones((size,), bool) if ref_mask is None else ref_mask
    anchors = jnp.ones((batch,), bool) if query_mask is None else query_mask
    if self_index is None:
        own = jnp.full((batch,), -1, jnp.int32)
        own_valid = jnp.zeros((batch,), bool)
    else:
        own = self_index.astype(jnp.int32)
        inside = (own >= 0) & (own < size)
        slot = jnp.clip(own, 0, size - 1)
        own_valid = inside & anchors & ref_valid[slot] & (ref_labels[slot] == labels)
    return _loss(
        xn,
        jax.lax.stop_gradient(ref),
        labels,
        ref_labels,
        ref_valid,
        anchors,
        own,
        own_valid,
        float(temperature),
    )
