"""ContrastiveLoss against a frozen reference set (CrossBatchMemory), fused and blocked.

The general pair-loss path builds the (B, M) distance matrix, the two (B, M) pair masks, the two
(B, M) loss arrays and their reductions, and autodiff then walks the same chain back: about a
dozen passes over (B, M) arrays, which for a memory of 8192 slots cost four times the two matmuls.
Here, for the default setting of :class:`~calibrax.metric_learning.ContrastiveLoss` inside
:class:`~calibrax.metric_learning.CrossBatchMemory` (all pairs, Euclidean distance, the mean of
the non-zero pair losses), the reference rows are taken in column blocks of about 256 K pairs: each
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

__all__ = ["memory_contrastive_loss"]

# Pairs per column block: a (B, block) float32 array is 1 MiB, within a core's L2 cache.
_BLOCK_PAIRS = 1 << 18
_MIN_BLOCK = 128


def block_columns(batch: int, ref_size: int) -> int:
    """Reference rows per block for ``batch`` anchors: about ``_BLOCK_PAIRS`` pairs, at least
    ``_MIN_BLOCK`` rows, at most the whole reference set."""
    return min(ref_size, max(_MIN_BLOCK, _BLOCK_PAIRS // max(batch, 1)))


def _block(
    xn: jax.Array,
    sq_x: jax.Array,
    anchors: jax.Array,
    own: jax.Array,
    labels: jax.Array,
    ref: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    first: jax.Array,
    margins: tuple[float, float],
    tolerance: float,
    with_coefficients: bool,
) -> tuple[jax.Array, jax.Array | None]:
    """The sums of one column block and, with ``with_coefficients``, its gradient coefficients.

    Returns ``(sums, coef)``: ``sums`` holds (sum of the positive losses, their count, sum of the
    negative losses, their count, number of valid same-label pairs, own slots included); ``coef``
    is the (B, block) ``1 / (2 d)`` on the counted positive pairs, ``-1 / (2 d)`` on the counted
    negative pairs, 0 elsewhere (also where the distance was rounded to 0: its gradient is 0).
    """
    pos_margin, neg_margin = margins
    dtype = xn.dtype
    zero = jnp.zeros((), dtype)
    # The distance exactly as LpDistance's (``_l2_matrix``): |x|^2 + |r|^2 - 2 x.r, rounding-level
    # values set to 0.
    sq_r = jnp.sum(ref * ref, axis=1)
    scale = sq_x[:, None] + sq_r[None, :]
    sq = scale - 2 * (xn @ ref.T)
    keep = sq > tolerance * scale
    dist = jnp.sqrt(jnp.where(keep, sq, zero))
    same = labels[:, None] == ref_labels[None, :]
    valid = anchors[:, None] & ref_valid[None, :]
    column = first + jnp.arange(ref.shape[0], dtype=own.dtype)
    pos = same & valid & (column[None, :] != own[:, None])
    neg = valid & ~same
    # One signed array carries both terms: d - pos_margin (> 0) on the positive pairs whose loss
    # is non-zero, d - neg_margin (< 0, minus the loss) on such negative pairs, 0 elsewhere; the
    # four sums are then simple reductions of one array.
    signed = jnp.where(
        pos & (dist > pos_margin),
        dist - pos_margin,
        jnp.where(neg & (dist < neg_margin), dist - neg_margin, zero),
    )
    one = jnp.ones((), dtype)
    sums = jnp.stack(
        [
            jnp.sum(jnp.maximum(signed, zero)),
            jnp.sum(jnp.where(signed > 0, one, zero)),
            -jnp.sum(jnp.minimum(signed, zero)),
            jnp.sum(jnp.where(signed < 0, one, zero)),
            jnp.sum(jnp.where(same & valid, one, zero)),
        ]
    )
    if not with_coefficients:
        return sums, None
    # d(loss term)/d(squared distance) before the divisors: ±1 / (2 d), 0 where d was set to 0.
    coef = jnp.where(keep, jnp.sign(signed) * (0.5 / jnp.where(keep, dist, one)), zero)
    return sums, coef


def _blocked_sums(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    anchors: jax.Array,
    own: jax.Array,
    margins: tuple[float, float],
    with_coefficients: bool,
) -> tuple[jax.Array, jax.Array, list[jax.Array]]:
    """``(values, counts, coefs)`` over all blocks: ``values`` = (pos sum, neg sum), ``counts``
    = int32 (pos count, neg count, same-label count) (exact: each block's are whole numbers below
    2^24), and the coefficient blocks: one (n, B, block) stack for the full blocks, then the
    remainder block, if any."""
    dtype = xn.dtype
    tolerance = 4 * float(jnp.finfo(dtype).eps)
    sq_x = jnp.sum(xn * xn, axis=1)
    size = ref.shape[0]
    width = block_columns(xn.shape[0], size)
    n_full = size // width
    run = functools.partial(
        _block,
        xn,
        sq_x,
        anchors,
        own,
        labels,
        margins=margins,
        tolerance=tolerance,
        with_coefficients=with_coefficients,
    )

    def split(sums: jax.Array) -> tuple[jax.Array, jax.Array]:
        # (pos sum, neg sum) and the whole-number (pos count, neg count, same-label count).
        return jnp.stack([sums[0], sums[2]]), jnp.stack([sums[1], sums[3], sums[4]]).astype(
            jnp.int32
        )

    values = jnp.zeros((2,), dtype)
    counts = jnp.zeros((3,), jnp.int32)
    coefs: list[jax.Array] = []
    if n_full == 1:
        sums, coef = run(ref[:width], ref_labels[:width], ref_valid[:width], jnp.int32(0))
        values, counts = split(sums)
        coefs.append(coef)
    elif n_full > 1:
        stop = n_full * width

        def body(carry: Any, block: Any) -> tuple[Any, Any]:
            r, rl, rv, k = block
            sums, coef = run(r, rl, rv, k * width)
            v, c = split(sums)
            return (carry[0] + v, carry[1] + c), coef

        blocks = (
            ref[:stop].reshape(n_full, width, ref.shape[1]),
            ref_labels[:stop].reshape(n_full, width),
            ref_valid[:stop].reshape(n_full, width),
            jnp.arange(n_full, dtype=jnp.int32),
        )
        (values, counts), stacked = jax.lax.scan(body, (values, counts), blocks)
        coefs.append(stacked)
    if n_full * width < size:
        start = n_full * width
        sums, coef = run(ref[start:], ref_labels[start:], ref_valid[start:], jnp.int32(start))
        v, c = split(sums)
        values, counts = values + v, counts + c
        coefs.append(coef)
    return values, counts, coefs


def _finish(
    values: jax.Array,
    counts: jax.Array,
    anchors: jax.Array,
    ref_valid: jax.Array,
    own_valid: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(loss, pos_scale, neg_scale)`` from the sums: each term's mean over its counted pairs
    (0 without one), added, and 0 unless there are at least two positive or two negative pairs
    (pytorch-metric-learning's ``GenericPairLoss``); the scales are the factors of the positive
    and negative coefficients in the gradient."""
    pos_count, neg_count, n_same = counts[0], counts[1], counts[2]
    n_pairs = jnp.sum(anchors, dtype=jnp.int32) * jnp.sum(ref_valid, dtype=jnp.int32)
    n_pos = n_same - jnp.sum(own_valid, dtype=jnp.int32)
    n_neg = n_pairs - n_same
    enough = (n_pos > 1) | (n_neg > 1)
    dtype = values.dtype
    zero = jnp.zeros((), dtype)
    pos_scale = jnp.where(
        enough & (pos_count > 0), 1 / jnp.maximum(pos_count, 1).astype(dtype), zero
    )
    neg_scale = jnp.where(
        enough & (neg_count > 0), 1 / jnp.maximum(neg_count, 1).astype(dtype), zero
    )
    return values[0] * pos_scale + values[1] * neg_scale, pos_scale, neg_scale


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
    margins: tuple[float, float],
) -> jax.Array:
    values, counts, _ = _blocked_sums(
        xn, ref, labels, ref_labels, ref_valid, anchors, own, margins, False
    )
    return _finish(values, counts, anchors, ref_valid, own_valid)[0]


def _loss_fwd(
    xn: jax.Array,
    ref: jax.Array,
    labels: jax.Array,
    ref_labels: jax.Array,
    ref_valid: jax.Array,
    anchors: jax.Array,
    own: jax.Array,
    own_valid: jax.Array,
    margins: tuple[float, float],
) -> tuple[jax.Array, Any]:
    values, counts, coefs = _blocked_sums(
        xn, ref, labels, ref_labels, ref_valid, anchors, own, margins, True
    )
    loss, pos_scale, neg_scale = _finish(values, counts, anchors, ref_valid, own_valid)
    return loss, (xn, ref, coefs, pos_scale, neg_scale)


def _loss_bwd(margins: tuple[float, float], res: Any, g: jax.Array) -> tuple[Any, ...]:
    del margins
    xn, ref, coefs, pos_scale, neg_scale = res
    pos_scale, neg_scale = g * pos_scale, g * neg_scale
    width = coefs[0].shape[-1]
    batch, dim = xn.shape

    def scaled(coef: jax.Array) -> jax.Array:
        # u = dL/d(squared distance): the coefficient times its term's divisor.
        return jnp.where(coef > 0, pos_scale * coef, neg_scale * coef)

    def block(u: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
        return u @ r, jnp.sum(u, axis=1)

    u_ref = jnp.zeros((batch, dim), xn.dtype)
    u_sum = jnp.zeros((batch,), xn.dtype)
    start = 0
    for coef in coefs:
        if coef.ndim == 3:
            n_full = coef.shape[0]
            stop = n_full * width

            def body(carry: Any, item: Any) -> tuple[Any, None]:
                c, r = item
                a, s = block(scaled(c), r)
                return (carry[0] + a, carry[1] + s), None

            blocks = ref[:stop].reshape(n_full, width, dim)
            (u_ref, u_sum), _ = jax.lax.scan(body, (u_ref, u_sum), (coef, blocks))
            start = stop
        else:
            a, s = block(scaled(coef), ref[start : start + coef.shape[1]])
            u_ref, u_sum = u_ref + a, u_sum + s
            start += coef.shape[1]
    # d(squared distance)/dx_i = 2 (x_i - r_j); the reference set gets no gradient (frozen).
    d_xn = 2 * (xn * u_sum[:, None] - u_ref)
    return (d_xn, jnp.zeros_like(ref), None, None, None, None, None, None)


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
        Differentiable in reverse mode w.r.t. ``xn`` only (a ``jax.custom_vjp``: ``jax.jvp``
        raises).
    """
    batch, size = xn.shape[0], ref.shape[0]
    ref_valid = jnp.ones((size,), bool) if ref_mask is None else ref_mask
    anchors = jnp.ones((batch,), bool) if query_mask is None else query_mask
    if self_index is None:
        own = jnp.full((batch,), -1, jnp.int32)
        own_valid = jnp.zeros((batch,), bool)
    else:
        own = self_index.astype(jnp.int32)
        # The own pairs the label masks would count as positive: a valid slot with the same
        # label (the count of positive pairs leaves them out).
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
        (float(pos_margin), float(neg_margin)),
    )
