"""AngularLoss: bound the angle at the negative of the triangle anchor-positive-negative."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from jaxtyping import Bool
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.base import ref_embeddings
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.base_distance import transposed_times
from calibrax.metric_learning.distances.lp_distance import LpDistance
from calibrax.metric_learning.losses._mined import NonFiniteIsNaN
from calibrax.metric_learning.losses._pair_base import DistanceLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._positives import fold_positives
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import pair_weights

__all__ = ["AngularLoss"]


def _slot_terms(
    a_q: jax.Array,
    a_r_rows: jax.Array,
    cos_t: jax.Array,
    keep: jax.Array,
    c2: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(value, weights, denom)`` of one pair per row, with ``kept[i, n] = a_q[i, n] +
    a_r_rows[i, n] - c2 cos_t[i]`` over the row's negatives: ``value = log(1 + sum_n
    exp(kept[i, n]))``, shifted by ``top = max(0, max_n kept)`` (each pair its own shift, as
    pytorch-metric-learning's ``logsumexp(..., add_one=True)``); ``weights = exp(kept - top)``
    (0 off the negatives) and ``denom = exp(-top) + sum_n weights``, so that ``d value / d
    kept = weights / denom``."""
    kept = jnp.where(keep, a_q + a_r_rows - c2 * cos_t[:, None], -jnp.inf)
    top = jax.lax.stop_gradient(jnp.maximum(jnp.max(kept, axis=1), 0))
    weights = jnp.exp(kept - top[:, None])
    denom = jnp.exp(-top) + jnp.sum(weights, axis=1)
    return top + jnp.log(denom), weights, denom


def _at(mat: jax.Array, index: jax.Array) -> jax.Array:
    """``mat[i, index[i]]`` for every row ``i``."""
    return jnp.take_along_axis(mat, index[:, None], axis=1)[:, 0]


def _loop_values(
    a_q: jax.Array,
    a_r: jax.Array,
    cos_qr: jax.Array,
    keep: jax.Array,
    counted: jax.Array,
    c2: float,
) -> jax.Array:
    """``log(1 + sum_n keep[a, n] exp(a_q[a, n] + a_r[p, n] - c2 cos_qr[a, p]))`` for each
    counted pair (a, p), 0 elsewhere: one positive slot of every anchor at a time
    (``fold_positives``), so O(B² g) work and O(B²) memory for at most ``g`` counted pairs per
    anchor."""
    rows = jnp.arange(cos_qr.shape[0])

    def body(out: jax.Array, index: jax.Array, valid: jax.Array) -> jax.Array:
        value, _, _ = _slot_terms(a_q, a_r[index], _at(cos_qr, index), keep, c2)
        # Filler slots (``valid`` False) add 0 to a column that a valid slot may also hold.
        return out.at[rows, index].add(jnp.where(valid, value, 0))

    return fold_positives(counted, body, jnp.zeros_like(cos_qr))


def _loop_grads(
    a_q: jax.Array,
    a_r: jax.Array,
    cos_qr: jax.Array,
    keep: jax.Array,
    counted: jax.Array,
    g: jax.Array,
    c2: float,
    shared: bool,
) -> tuple[jax.Array, ...]:
    """The gradients of :func:`_loop_values` (a ``while_loop`` has no reverse-mode rule): per
    slot again (recomputed, bounded by 1), each pair's ``d value / d kept`` row goes to its
    anchor's row and is scatter-added to its positive's. ``(d_q, d_r)``, or ``(d_q + d_r,)``
    when ``shared``."""

    def d_kept(index: jax.Array, valid: jax.Array) -> jax.Array:
        _, weights, denom = _slot_terms(a_q, a_r[index], _at(cos_qr, index), keep, c2)
        return (jnp.where(valid, _at(g, index), 0) / denom)[:, None] * weights

    def slot(carry: Any, index: jax.Array, valid: jax.Array) -> Any:
        d_q, d_r = carry
        d = d_kept(index, valid)
        return d_q + d, d_r.at[index].add(d)

    def shared_slot(acc: jax.Array, index: jax.Array, valid: jax.Array) -> jax.Array:
        d = d_kept(index, valid)
        return (acc + d).at[index].add(d)

    if shared:
        # ``a_q`` and ``a_r`` are one array (the batch is its own reference set): one
        # accumulator, one fresh (B, B) buffer fewer.
        return (fold_positives(counted, shared_slot, jnp.zeros_like(a_q)),)
    return fold_positives(counted, slot, (jnp.zeros_like(a_q), jnp.zeros_like(a_r)))


# The matrix-product form, for anchors with many positives: its O(B³) work runs in the BLAS
# product, which beats B² elementwise passes per positive slot once an anchor has more than
# about B / 24 positives (B = 1024, 2 classes: 115 ms against 1.2 s; 4 per class: 40 ms for the
# slot loop against 115 ms).


def _matmul_from(n_ref: int) -> int:
    """Above this many counted positives for some anchor, the matmul form is used."""
    return max(32, n_ref // 24)


def _row_max(x: jax.Array) -> jax.Array:
    """Each row's maximum, 0 for a row that is all ``-inf``."""
    top = jnp.max(x, axis=1)
    return jnp.where(jnp.isfinite(top), top, 0)


def _fast_losses(
    a_q: jax.Array,
    a_r: jax.Array,
    cos_qr: jax.Array,
    keep: jax.Array,
    keep_r: jax.Array,
    c2: float,
) -> tuple[jax.Array, jax.Array]:
    """The pair losses from one matmul of shifted exponentials, and where that matmul is safe.

    ``sum_n keep[a, n] exp(u[a, n] + v[p, n])`` is ``e1 @ e2.T`` with ``e1 = keep exp(u -
    max_a)`` and ``e2 = exp(v - max_p)``; it underflows only if no negative is close to both the
    anchor and the positive (raw embeddings of large norm).
    """
    u = jnp.where(keep, a_q, -jnp.inf)
    shift_q = jax.lax.stop_gradient(_row_max(u))
    # A positive p shares the anchor's label, so its negatives are the anchor's: shift by its
    # largest term among them (row p of ``keep_r``), not by its own similarity to itself.
    v = jnp.where(keep_r, a_r, -jnp.inf)
    shift_r = jax.lax.stop_gradient(_row_max(v))
    total = jnp.exp(u - shift_q[:, None]) @ jnp.exp(v - shift_r[:, None]).T
    tiny = float(jnp.finfo(total.dtype).tiny / jnp.finfo(total.dtype).eps)
    safe = total > tiny
    log_total = jnp.log(jnp.where(safe, total, 1)) + shift_q[:, None] + shift_r[None, :]
    return jnp.logaddexp(0, log_total - c2 * cos_qr), safe


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _pair_values(
    a_q: jax.Array,
    a_r: jax.Array,
    cos_qr: jax.Array,
    keep: jax.Array,
    keep_r: jax.Array,
    counted: jax.Array,
    same: jax.Array,
    c2: float,
    shared: bool,
) -> jax.Array:
    """The loss of each counted (anchor, positive) pair, 0 elsewhere: the slot loop, or the
    matmul form when some anchor has more than :func:`_matmul_from` positives (with the loop
    for the pairs it underflows for, and for the pairs whose positive has another label than the
    anchor, ``same`` False: an index tuple may hold such pairs). One custom VJP around both: the backward pass follows the
    saved choice and re-runs the chosen form (rematerialised), so that neither form's residuals
    are kept, or zero-filled, when the other one runs. ``shared``
    (static): ``a_q`` and ``a_r`` are the same array, and its whole gradient is returned for
    ``a_q``."""
    return _pair_values_fwd(a_q, a_r, cos_qr, keep, keep_r, counted, same, c2, shared)[0]


def _use_matmul(counted: jax.Array) -> jax.Array:
    largest = jnp.max(jnp.sum(counted, axis=1, dtype=jnp.int32))
    return largest > _matmul_from(counted.shape[1])


def _pair_values_fwd(
    a_q: jax.Array,
    a_r: jax.Array,
    cos_qr: jax.Array,
    keep: jax.Array,
    keep_r: jax.Array,
    counted: jax.Array,
    same: jax.Array,
    c2: float,
    shared: bool,
) -> tuple[jax.Array, Any]:
    use = _use_matmul(counted)
    fast, safe = jax.lax.cond(
        use,
        lambda: _fast_losses(a_q, a_r, cos_qr, keep, keep_r, c2),
        lambda: (jnp.zeros_like(cos_qr), jnp.zeros_like(counted)),
    )
    # The slot loop takes every pair the matmul form does not give exactly: all of them when it
    # is not used, else the (rare) pairs it underflows for. It stays outside any conditional:
    # with nothing to do it runs no slot, whereas a branch holding exact per-pair blocks costs
    # its temporaries on every call, taken or not.
    # The matrix product holds the negatives both rows share: a pair's own sum only when the
    # positive has the anchor's label (an index tuple may pair other rows).
    safe = safe & same
    by_loop = counted & ~safe
    looped = _loop_values(a_q, a_r, cos_qr, keep, by_loop, c2)
    values = jnp.where(by_loop, looped, jnp.where(counted, fast, 0))
    return values, (a_q, a_r, cos_qr, keep, keep_r, counted, values, use, safe)


def _pair_values_bwd(c2: float, shared: bool, res: Any, g: jax.Array) -> tuple[Any, ...]:
    a_q, a_r, cos_qr, keep, keep_r, counted, values, use, safe = res
    by_loop = counted & ~safe
    g_loop = jnp.where(by_loop, g, 0)
    g_fast = jnp.where(counted & safe, g, 0)

    def fast_grads() -> tuple[jax.Array, ...]:
        def fast_fn(a_q: jax.Array, a_r: jax.Array, cos_qr: jax.Array) -> jax.Array:
            return _fast_losses(a_q, a_r, cos_qr, keep, keep_r, c2)[0]

        d_q, d_r, d_cos = jax.vjp(fast_fn, a_q, a_r, cos_qr)[1](g_fast)
        return ((d_q + d_r,) if shared else (d_q, d_r)), d_cos

    def loop_grads() -> tuple[jax.Array, ...]:
        d_emb = _loop_grads(a_q, a_r, cos_qr, keep, by_loop, g_loop, c2, shared)
        # The d value / d kept[n] of a pair sum to 1 - exp(-value).
        return d_emb, c2 * g_loop * jnp.expm1(-values)

    def both() -> tuple[jax.Array, ...]:
        (d_fast, d_cos_fast), (d_loop, d_cos_loop) = fast_grads(), loop_grads()
        d_emb = tuple(x + y for x, y in zip(d_fast, d_loop, strict=True))
        return d_emb, d_cos_fast + d_cos_loop

    d_emb, d_cos = jax.lax.cond(use, both, loop_grads)
    d_q, d_r = (d_emb[0], None) if shared else d_emb
    return d_q, d_r, d_cos, None, None, None, None


_pair_values.defvjp(_pair_values_fwd, _pair_values_bwd)


# The batch against itself, all pairs (no miner, no reference set): every positive pair (a, p)
# shares its label, hence its negatives, so its sum over the negatives factors through one
# (B, B) array of shifted exponentials ``e[i, n] = keep[i, n] exp(a[i, n] - shift_i)``:
# ``sum_n e[a, n] e[p, n]``, a dot product of two rows, with the exponentials taken once for all
# pairs (not once per pair). Each anchor's positives are found from the labels sorted once
# (no pass over a (B, B) mask per positive slot).


def _class_layout(labels: jax.Array) -> tuple[jax.Array, ...]:
    """``(order, start, count, rank)``: the rows sorted by label (stable), and for each row the
    first sorted position of its label, the size of its class and its own sorted position."""
    n = labels.shape[0]
    order = jnp.argsort(labels, stable=True).astype(jnp.int32)
    ordered = labels[order]
    start = jnp.searchsorted(ordered, labels, side="left").astype(jnp.int32)
    end = jnp.searchsorted(ordered, labels, side="right").astype(jnp.int32)
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return order, start, end - start, rank


def _class_slot(step: jax.Array, layout: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
    """``(column, valid)``: each row's ``step``-th positive (another row of its class), column 0
    where the class has no such member (``valid`` False)."""
    order, start, count, rank = layout
    k = start + step
    k = k + (k >= rank).astype(jnp.int32)
    valid = step < count - 1
    return jnp.where(valid, order[jnp.minimum(k, order.shape[0] - 1)], 0), valid


def _exact_from(dtype: Any, n: int) -> float:
    """Below this, a row product may have lost terms to underflow (``n`` terms flushed to 0
    add at most ``n tiny``): its pair is evaluated exactly instead."""
    info = jnp.finfo(dtype)
    return float(n * info.tiny / info.eps)


# Rows per block of the work that would otherwise hold extra (B, B) temporaries (the exact
# evaluation of underflowing pairs, the full-product form). XLA on CPU allocates one buffer for
# all temporaries of a call; on Linux glibc serves a request above its mmap threshold (which
# grows to at most 32 MiB) with fresh pages every time, and touching them costs more than the
# arithmetic (measured at B = 1024: 60 MiB of temporaries, ~11k page faults and ~20 ms of
# system time per call; 27 MiB, a few hundred).
_BLOCK = 128


def _row_blocks(n: int, body: Any, init: Any) -> Any:
    """Fold ``body(start, fresh, carry)`` over blocks of ``min(n, _BLOCK)`` rows starting at
    ``start``; the last block is moved back to end at row ``n``, and ``fresh`` (block,) marks
    its rows that no earlier block held."""
    block = min(n, _BLOCK)

    def step(k: jax.Array, carry: Any) -> Any:
        start = jnp.minimum(k * block, n - block)
        fresh = start + jnp.arange(block) >= k * block
        return body(start, fresh, carry)

    return jax.lax.fori_loop(0, -(-n // block), step, init)


def _rows(x: jax.Array, start: jax.Array, block: int) -> jax.Array:
    """Rows ``start .. start + block`` of ``x``."""
    return jax.lax.dynamic_slice_in_dim(x, start, block, axis=0)


def _set_rows(x: jax.Array, rows: jax.Array, start: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(x, rows, start, axis=0)


class _SelfPairs:
    """What the forward and the backward pass of :func:`_self_pair_values` share: the cosines,
    the shifted exponentials ``e``, the class layout, and the pairs of one positive slot."""

    def __init__(
        self, cos: jax.Array, r: jax.Array, labels: jax.Array, c1: float, c2: float
    ) -> None:
        self.cos, self.r, self.labels, self.c1, self.c2 = cos, r, labels, c1, c2
        self.n = labels.shape[0]
        self.block = min(self.n, _BLOCK)
        keep = labels[:, None] != labels[None, :]
        a = c1 * cos * r[None, :]
        self.shift = _row_max(jnp.where(keep, a, -jnp.inf))
        self.e = jnp.where(keep, jnp.exp(a - self.shift[:, None]), 0)
        self.layout = _class_layout(labels)
        # A row has a negative unless every label is the same.
        self.has_neg = jnp.broadcast_to(jnp.any(labels != labels[0]), (self.n,))
        self.steps = jnp.where(self.has_neg[0], jnp.max(self.layout[2]) - 1, 0)
        self.rows = jnp.arange(self.n)
        self.exact_from = _exact_from(cos.dtype, self.n)
        # Many positives per anchor (few, large classes): the full product ``e @ e.T`` (O(B³)
        # work in the BLAS product) beats B² elementwise work per positive slot.
        self.dense = self.steps > _matmul_from(self.n)

    def columns(self, step: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(col, valid)``: each row's positive of step ``step``, and whether it is one."""
        col, valid = _class_slot(step, self.layout)
        return col, valid & self.has_neg

    def slot(self, step: jax.Array) -> tuple[jax.Array, ...]:
        """``(col, valid, total, z, fast)`` of step ``step``: each row's positive ``col``, the
        row product ``total``, the pair's log-sum argument ``z`` (its value is ``log(1 +
        e^z)``) and whether ``total`` is free of underflow (``fast``)."""
        col, valid = self.columns(step)
        block, e = self.block, self.e

        def rows(start: jax.Array, fresh: jax.Array, total: jax.Array) -> jax.Array:
            # By blocks of rows: the gathered rows of ``e`` are a small temporary.
            part = jnp.sum(_rows(e, start, block) * e[_rows(col, start, block)], axis=1)
            return _set_rows(total, part, start)

        total = _row_blocks(self.n, rows, jnp.zeros((self.n,), e.dtype))
        cos_p = self.cos[self.rows, col]
        z = jnp.log(jnp.where(total > 0, total, 1)) + self.shift + self.shift[col] - self.c2 * cos_p
        return col, valid, total, z, total > self.exact_from

    def add_products(self, d_a: jax.Array, weight: jax.Array, col: jax.Array) -> jax.Array:
        """``d_a + weight[:, None] * e * e[col]``, by blocks of rows."""
        block, e = self.block, self.e

        def rows(start: jax.Array, fresh: jax.Array, d_a: jax.Array) -> jax.Array:
            w = jnp.where(fresh, _rows(weight, start, block), 0)
            part = w[:, None] * _rows(e, start, block) * e[_rows(col, start, block)]
            return _set_rows(d_a, _rows(d_a, start, block) + part, start)

        return _row_blocks(self.n, rows, d_a)

    def dense_block(self, start: jax.Array) -> tuple[jax.Array, ...]:
        """``(totals, z, counted, slow)`` of the rows of one block against every row, from the
        product of ``e``'s rows with ``e.T``; ``slow``: the counted pairs whose product may have
        underflowed."""
        block, n = self.block, self.n
        totals = _rows(self.e, start, block) @ self.e.T
        z = (
            jnp.log(jnp.where(totals > 0, totals, 1))
            + _rows(self.shift, start, block)[:, None]
            + self.shift[None, :]
            - self.c2 * _rows(self.cos, start, block)
        )
        index = start + jnp.arange(block)
        counted = (
            (_rows(self.labels, start, block)[:, None] == self.labels[None, :])
            & (index[:, None] != jnp.arange(n)[None, :])
            & self.has_neg[0]
        )
        return totals, z, counted, counted & ~(totals > self.exact_from)

    def exact_block(self, start: jax.Array, col: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(value, p)`` of the pair of each row of one block with its ``col``, from the
        pair's own shift (as pytorch-metric-learning's ``logsumexp``): ``p[i, n]`` is ``d
        value / d a[i, n]``."""
        block = self.block
        cos = _rows(self.cos, start, block)
        col = _rows(col, start, block)
        keep = _rows(self.labels, start, block)[:, None] != self.labels[None, :]
        a_row = self.c1 * cos * self.r[None, :]
        a_col = self.c1 * self.cos[col] * self.r[None, :]
        cos_p = cos[jnp.arange(block), col]
        kept = jnp.where(keep, a_row + a_col - self.c2 * cos_p[:, None], -jnp.inf)
        top = jnp.maximum(jnp.max(kept, axis=1), 0)
        w = jnp.exp(kept - top[:, None])
        denom = jnp.exp(-top) + jnp.sum(w, axis=1)
        return top + jnp.log(denom), w / denom[:, None]

    def exact_values(self, col: jax.Array, slow: jax.Array, value: jax.Array) -> jax.Array:
        """``value`` with the pairs (row, ``col``) of the ``slow`` rows evaluated exactly, one
        block of rows at a time (blocks without such a row are skipped)."""

        def body(start: jax.Array, fresh: jax.Array, value: jax.Array) -> jax.Array:
            slow_rows = _rows(slow, start, self.block)

            def exact() -> jax.Array:
                old = _rows(value, start, self.block)
                new = jnp.where(slow_rows, self.exact_block(start, col)[0], old)
                return _set_rows(value, new, start)

            return jax.lax.cond(jnp.any(slow_rows), exact, lambda: value)

        return _row_blocks(self.n, body, value)

    def exact_grads(
        self,
        col: jax.Array,
        slow: jax.Array,
        share: jax.Array,
        sig: jax.Array,
        d_a: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """``d_a`` plus ``share`` times the exact ``d value / d a`` of the pairs (row, ``col``) of
        the ``slow`` rows, and ``sig`` with their exact ``sigmoid(z) = 1 - exp(-value)``."""

        def body(start: jax.Array, fresh: jax.Array, carry: Any) -> Any:
            d_a, sig = carry
            block = self.block
            slow_rows = _rows(slow, start, block) & fresh

            def exact() -> Any:
                value, p = self.exact_block(start, col)
                weight = jnp.where(slow_rows, _rows(share, start, block), 0)
                rows = _rows(d_a, start, block) + weight[:, None] * p
                sig_rows = _rows(sig, start, block)
                sig_rows = jnp.where(slow_rows, -jnp.expm1(-value), sig_rows)
                return _set_rows(d_a, rows, start), _set_rows(sig, sig_rows, start)

            return jax.lax.cond(jnp.any(slow_rows), exact, lambda: (d_a, sig))

        return _row_blocks(self.n, body, (d_a, sig))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _self_pair_values(
    xh: jax.Array, r: jax.Array, labels: jax.Array, c1: float, c2: float
) -> jax.Array:
    """The loss of every counted pair of the batch with itself (0 elsewhere), from the
    normalised embeddings ``xh``, their norms ``r`` and the labels (all pairs, no miner).

    ``sum_n keep[a, n] exp(a[a, n] + a[p, n])`` is ``exp(shift_a + shift_p) sum_n e[a, n] e[p,
    n]`` with ``e[i, n] = keep[i, n] exp(a[i, n] - shift_i)`` the row-shifted exponentials: one
    (B, B) exponential pass, then a row product per positive slot (each anchor's positives from
    the labels sorted once), O(B² g) multiply-adds for ``g`` positives per anchor; above
    :func:`_matmul_from` positives, the full product ``e @ e.T`` instead, by blocks of rows. A
    pair whose row product underflows (raw embeddings of large norm) is evaluated exactly, with
    its own shift (:meth:`_SelfPairs.exact_block`).

    Custom VJP, built for memory as much as for work (see :data:`_BLOCK`): only the cosine
    matrix is kept for the backward pass (``e`` is recomputed), and pair (p, a) has the value of
    (a, p), so each row's gradient gathers both pairs' cotangents from its own positives (no
    scatter, no second accumulator); the cosine matrix's two backward products avoid a (B, B)
    transpose (:func:`transposed_times`).
    """
    return _self_pair_values_fwd(xh, r, labels, c1, c2)[0]


def _self_pair_values_fwd(
    xh: jax.Array, r: jax.Array, labels: jax.Array, c1: float, c2: float
) -> tuple[jax.Array, Any]:
    cos = xh @ xh.T
    pairs = _SelfPairs(cos, r, labels, c1, c2)
    rows, steps = pairs.rows, pairs.steps

    def by_slots() -> jax.Array:
        def body(state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            step, values = state
            col, valid, _, z, fast = pairs.slot(step)
            value = jnp.logaddexp(0, z)
            slow = valid & ~fast
            value = jax.lax.cond(
                jnp.any(slow), lambda: pairs.exact_values(col, slow, value), lambda: value
            )
            # Filler slots (``valid`` False) add 0 to a column that a valid slot may also hold.
            return step + 1, values.at[rows, col].add(jnp.where(valid, value, 0))

        start = (jnp.zeros((), jnp.int32), jnp.zeros_like(cos))
        return jax.lax.while_loop(lambda state: state[0] < steps, body, start)[1]

    def dense() -> jax.Array:
        def block(start: jax.Array, fresh: jax.Array, carry: Any) -> Any:
            values, slow = carry
            _, z, counted, slow_rows = pairs.dense_block(start)
            values = _set_rows(values, jnp.where(counted, jnp.logaddexp(0, z), 0), start)
            return values, _set_rows(slow, slow_rows, start)

        init = (jnp.zeros_like(cos), jnp.zeros(cos.shape, bool))
        values, slow_pairs = _row_blocks(pairs.n, block, init)

        def body(state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            # Only the pairs whose product underflowed are evaluated again, exactly.
            step, values = state
            col, valid = pairs.columns(step)
            slow = valid & slow_pairs[rows, col]

            def exact() -> jax.Array:
                value = pairs.exact_values(col, slow, values[rows, col])
                return values.at[rows, col].set(value)

            return step + 1, jax.lax.cond(jnp.any(slow), exact, lambda: values)

        start = (jnp.zeros((), jnp.int32), values)
        return jax.lax.while_loop(lambda state: state[0] < steps, body, start)[1]

    values = jax.lax.cond(pairs.dense, dense, by_slots)
    return values, (xh, r, labels, cos)


def _self_pair_values_bwd(c1: float, c2: float, res: Any, g: jax.Array) -> tuple[Any, ...]:
    xh, r, labels, cos = res
    pairs = _SelfPairs(cos, r, labels, c1, c2)
    rows, e, steps = pairs.rows, pairs.e, pairs.steps

    def by_slots() -> tuple[jax.Array, jax.Array]:
        def body(state: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
            step, d_a, d_xh = state
            col, valid, total, z, fast = pairs.slot(step)
            # Pair (col, row) is the same sum (same label, same negatives): its cotangent
            # joins here, so that each row only gathers from its own positives.
            share = jnp.where(valid, g[rows, col] + g[col, rows], 0)
            sig = jax.nn.sigmoid(z)
            # d value / d total = sigmoid(z) / total; d total / d e[row, n] = e[col, n].
            weight = jnp.where(fast, share * sig / jnp.where(total > 0, total, 1), 0)
            d_a = pairs.add_products(d_a, weight, col)
            slow = valid & ~fast
            d_a, sig = jax.lax.cond(
                jnp.any(slow),
                lambda: pairs.exact_grads(col, slow, share, sig, d_a),
                lambda: (d_a, sig),
            )
            # value depends on cos[row, col] through - c2 cos: d value / d cos = - c2 sig.
            d_xh = d_xh - (c2 * share * sig)[:, None] * xh[col]
            return step + 1, d_a, d_xh

        start = (jnp.zeros((), jnp.int32), jnp.zeros_like(cos), jnp.zeros_like(xh))
        return jax.lax.while_loop(lambda state: state[0] < steps, body, start)[1:]

    def dense() -> tuple[jax.Array, jax.Array]:
        block_size = pairs.block

        def block(start: jax.Array, fresh: jax.Array, carry: Any) -> Any:
            d_a, d_xh, slow = carry
            totals, z, counted, slow_rows = pairs.dense_block(start)
            g_rows = _rows(g, start, block_size)
            g_cols = jax.lax.dynamic_slice_in_dim(g, start, block_size, axis=1).T
            shared = jnp.where(counted & ~slow_rows, (g_rows + g_cols) * jax.nn.sigmoid(z), 0)
            d_xh = _set_rows(d_xh, -c2 * (shared @ xh), start)
            weight = shared / jnp.where(totals > 0, totals, 1)
            d_a = _set_rows(d_a, _rows(e, start, block_size) * (weight @ e), start)
            return d_a, d_xh, _set_rows(slow, slow_rows, start)

        init = (jnp.zeros_like(cos), jnp.zeros_like(xh), jnp.zeros(cos.shape, bool))
        d_a, d_xh, slow_pairs = _row_blocks(pairs.n, block, init)

        def body(state: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
            # The pairs whose product underflowed, exactly (nothing else is left to add).
            step, d_a, d_xh = state
            col, valid = pairs.columns(step)
            slow = valid & slow_pairs[rows, col]

            def exact() -> tuple[jax.Array, jax.Array]:
                share = jnp.where(slow, g[rows, col] + g[col, rows], 0)
                d_a_new, sig = pairs.exact_grads(col, slow, share, jnp.zeros_like(share), d_a)
                return d_a_new, d_xh - (c2 * share * sig)[:, None] * xh[col]

            d_a, d_xh = jax.lax.cond(jnp.any(slow), exact, lambda: (d_a, d_xh))
            return step + 1, d_a, d_xh

        start = (jnp.zeros((), jnp.int32), d_a, d_xh)
        return jax.lax.while_loop(lambda state: state[0] < steps, body, start)[1:]

    d_a, d_xh = jax.lax.cond(pairs.dense, dense, by_slots)
    # a[i, n] = c1 cos[i, n] r_n.
    d_r = c1 * jnp.sum(cos * d_a, axis=0)
    d_cos = c1 * r[None, :] * d_a
    d_xh = d_xh + d_cos @ xh + transposed_times(d_cos, xh)
    return d_xh, d_r, None


_self_pair_values.defvjp(_self_pair_values_fwd, _self_pair_values_bwd)


@register(
    "angular_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: AngularLoss()),
)
class AngularLoss(NonFiniteIsNaN, DistanceLoss):
    r"""Angular loss, as pytorch-metric-learning 2.9's ``AngularLoss``.

    For each positive pair ``(a, p)`` (all of them, or the miner's), with :math:`\hat x` the
    L2-normalised embeddings and :math:`x_n` the raw embeddings of the anchor's negatives (every
    sample with another label, whatever the miner selected):

    .. math::
        L_{ap} = \log\Big(1 + \sum_{n:\, y_n \ne y_a}
            e^{4 \tan^2\alpha\, (\hat x_a + \hat x_p) \cdot x_n
            - 2 (1 + \tan^2\alpha)\, \hat x_a \cdot \hat x_p}\Big),

    averaged over the positive pairs (default :class:`~calibrax.metric_learning.MeanReducer`). The
    loss is 0 when there is no positive pair or no negative pair. As in pytorch-metric-learning, the
    negatives enter un-normalised (the paper normalises them).

    With ``ref_emb`` / ``ref_labels`` the positives ``p`` and the negatives ``n`` are reference
    rows (every same-label reference row is a positive, a copy of the anchor included) and
    :math:`x_n` are the raw reference embeddings, as in pytorch-metric-learning;
    ``ref_labels`` is then required, also with an ``indices_tuple``.

    Cost: over all pairs of the batch with itself (no miner, no reference set), the sums over
    the negatives factor through one (B, B) array of row-shifted exponentials: a row product per
    positive slot (O(B² g) multiply-adds for at most ``g`` positives per anchor), or, above
    ``max(32, B / 24)`` positives for some anchor (few, large classes), one matrix product of
    that array with itself (O(B³) in the BLAS product, by blocks of rows); the pairs whose
    product underflows (raw embeddings of large norm) are evaluated exactly, each with its own
    shift as pytorch-metric-learning's ``logsumexp``. With a miner or a reference set, each
    counted pair's sum is taken one positive slot per anchor at a time (a ``while_loop``, each
    pair with its own shift), or by the matrix product above the same threshold. O(B²) memory
    either way; no (B, B, B) array.

    Differentiation: reverse mode only (``jax.grad``, ``jax.vjp``); the pair sums have custom
    VJPs (closed-form backward passes that reuse the forward's structure), so forward-mode
    (``jax.jvp``, ``jax.jacfwd``) and higher-order derivatives are not available.

    Args:
        alpha: The angle bound in degrees, in (0, 90). Default 40.
        distance: Must be :class:`~calibrax.metric_learning.LpDistance` with ``p=2``,
            ``power=1`` and normalised embeddings (the default), as pytorch-metric-learning
            requires.
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer` over positive pairs.

    Raises:
        ValueError: If ``alpha`` is not in (0, 90) or ``distance`` is another distance.

    References:
        Wang et al., 2017, "Deep Metric Learning with Angular Loss", arXiv:1708.01682.
    """

    def __init__(
        self, *, alpha: float = 40.0, distance: BaseDistance | None = None, reducer: Any = None
    ) -> None:
        super().__init__(distance=distance, reducer=reducer)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)):
            raise ValueError(f"expected `alpha` to be in (0, 90) degrees, got {alpha!r}")
        if not 0 < float(alpha) < 90:
            raise ValueError(f"expected `alpha` to be in (0, 90) degrees, got {alpha!r}")
        if self.distance != LpDistance():
            raise ValueError(
                "expected `distance` to be LpDistance(normalize_embeddings=True, p=2, power=1), "
                f"got {self.distance!r}"
            )
        self.alpha = float(alpha)

    supports_ref = True

    def validate_inputs(
        self,
        embeddings: Any,
        labels: Any,
        indices_tuple: Any = None,
        ref_emb: Any = None,
        ref_labels: Any = None,
    ) -> tuple[jax.Array, jax.Array, Any, Reference | None]:
        """As the base, and ``ref_labels`` is required with ``ref_emb`` (the negatives of an
        anchor are the reference rows with another label, whatever the pairs)."""
        if ref_emb is not None and ref_labels is None:
            raise ValueError("AngularLoss requires `ref_labels` with `ref_emb`, got None")
        return super().validate_inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def compute_terms(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        ref: Reference | None = None,
    ) -> dict[str, LossTerm]:
        emb = working(embeddings)
        if ref is None and indices_tuple is None:
            return {"loss": self.self_pair_losses(emb, labels)}
        pos, neg = pair_weights(indices_tuple, labels, ref)
        if ref is None:
            return {"loss": self.pair_losses(emb, labels, emb, labels, pos, neg)}
        other = ref_embeddings(emb, ref)
        if ref.frozen:
            other = jax.lax.stop_gradient(other)
        return {
            "loss": self.pair_losses(emb, labels, other, ref.labels, pos, neg, ref_mask=ref.mask)
        }

    def pair_losses(
        self,
        query: Float[Array, "n dim"],
        query_labels: Int[Array, " n"],
        ref: Float[Array, "m dim"],
        ref_labels: Int[Array, " m"],
        pos: Int[Array, "n m"],
        neg: Int[Array, "n m"],
        ref_mask: Bool[Array, " m"] | None = None,
    ) -> LossTerm:
        """The loss of every (query anchor, reference positive) pair, weighted by ``pos``.

        ``pos``/``neg`` are the selected pair counts; a query row's negatives are all reference
        rows with another label (and inside ``ref_mask``, the rows that exist, when given), as
        pytorch-metric-learning's ``keep_mask``. ``ref`` may be ``query`` itself.
        """
        c1, c2 = self.constants()
        qn = self.distance.normalize(query)
        rn = qn if ref is query else self.distance.normalize(ref)
        eps = max(1e-12, float(jnp.finfo(ref.dtype).tiny))
        # ref = rn * max(|ref|, eps) exactly, so the raw inner products are scaled cosines.
        ref_norm = jnp.maximum(self.distance.norm(ref), eps)
        keep = query_labels[:, None] != ref_labels[None, :]
        if ref_mask is not None:
            keep = keep & ref_mask[None, :]
        enough = jnp.any(pos > 0) & jnp.any(neg > 0)
        weights = jnp.where(enough, pos, 0).astype(query.dtype)
        counted = (pos > 0) & jnp.any(keep, axis=1)[:, None]

        cos_qr = qn @ rn.T
        cos_rr = cos_qr if ref is query else rn @ rn.T
        a_q = c1 * cos_qr * ref_norm[None, :]
        a_r = a_q if ref is query else c1 * cos_rr * ref_norm[None, :]
        keep_r = keep if ref is query else ref_labels[:, None] != ref_labels[None, :]
        if ref_mask is not None and ref is not query:
            keep_r = keep_r & ref_mask[None, :]
        same = query_labels[:, None] == ref_labels[None, :]
        values = _pair_values(a_q, a_r, cos_qr, keep, keep_r, counted, same, c2, ref is query)
        values = jnp.where(counted, values, 0)
        return LossTerm(values, weights)

    def constants(self) -> tuple[float, float]:
        """``(c1, c2) = (4 tan² alpha, 2 (1 + tan² alpha))``."""
        tan_sq = math.tan(math.radians(self.alpha)) ** 2
        return 4 * tan_sq, 2 * (1 + tan_sq)

    def self_pair_losses(
        self, embeddings: Float[Array, "n dim"], labels: Int[Array, " n"]
    ) -> LossTerm:
        """All pairs of the batch with itself (no miner, no reference set), through
        :func:`_self_pair_values`; the pair weights straight from the labels (no (B, B) integer
        masks: see :data:`_BLOCK` on the size of the temporaries)."""
        c1, c2 = self.constants()
        eps = max(1e-12, float(jnp.finfo(embeddings.dtype).tiny))
        xh = self.distance.normalize(embeddings)
        norm = jnp.maximum(self.distance.norm(embeddings), eps)
        batch = labels.shape[0]
        ordered = jnp.sort(labels)
        # Some positive pair (a repeated label) and some negative pair (two labels).
        enough = jnp.any(ordered[1:] == ordered[:-1]) & jnp.any(labels != labels[0])
        index = jnp.arange(batch)
        same = labels[:, None] == labels[None, :]
        pos = enough & same & (index[:, None] != index[None, :])
        weights = jnp.where(pos, 1, 0).astype(embeddings.dtype)
        # The values are exactly 0 outside the counted pairs already.
        return LossTerm(_self_pair_values(xh, norm, labels, c1, c2), weights)
