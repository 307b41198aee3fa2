"""DynamicSoftMarginLoss: triplet margins weighted by the running CDF of their own histogram."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.lp_distance import LpDistance
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._positives import fold_positives
from calibrax.metric_learning.losses._standard_call import StandardDistanceLoss
from calibrax.metric_learning.tuples import anchor_block_size
from calibrax.metric_learning.tuples import triplet_mask

__all__ = ["DynamicSoftMarginLoss", "MarginHistogram"]


class MarginHistogram(nnx.Variable):
    """The running histogram of triplet margins of a :class:`DynamicSoftMarginLoss` (not a
    trained parameter: ``nnx.Optimizer(..., wrt=nnx.Param)`` leaves it alone)."""


def _tent_and_step(
    u: jax.Array, t: jax.Array, keep: jax.Array, bins: int, axes: tuple[int, ...]
) -> jax.Array:
    """Per bin ``b``, the sums over ``axes`` of the kept entries of ``max(0, 1 - |u - b|)`` (the
    linear-interpolation weight pytorch-metric-learning gives bin ``b``) and of ``[u >= b] t``:
    shape (remaining dims..., 2, bins)."""
    b = jnp.arange(bins, dtype=u.dtype).reshape((1,) * u.ndim + (bins,))
    zero = jnp.zeros((), u.dtype)
    d = u[..., None] - b
    w = keep[..., None]
    tent = jnp.sum(jnp.where(w, jax.nn.relu(1 - jnp.abs(d)), zero), axis=axes)
    step = jnp.sum(jnp.where(w & (d >= 0), t[..., None], zero), axis=axes)
    return jnp.stack([tent, step], axis=-2)


def _slot_sums(
    mat: jax.Array,
    index: jax.Array,
    valid: jax.Array,
    neg: jax.Array,
    min_val: float,
    delta: float,
    bins: int,
) -> jax.Array:
    """(2, bins): :func:`_tent_and_step` of the triplets ``(a, index[a], n)`` of one positive
    slot per anchor (``valid`` marks the anchors that have one), ``n`` over the anchor's
    negatives ``neg`` (B, M): ``t = d(a, p) - d(a, n)``."""
    pos_d = jnp.take_along_axis(mat, index[:, None], axis=1)
    t = pos_d - mat
    u = (t - min_val) / delta
    return _tent_and_step(u, t, valid[:, None] & neg, bins, axes=(0, 1))


def _fold_sums(
    mat: jax.Array, pos: jax.Array, neg: jax.Array, min_val: float, delta: float, bins: int
) -> jax.Array:
    """(2, bins): :func:`_tent_and_step` over every triplet ``(a, p, n)`` with ``pos[a, p]`` and
    ``neg[a, n]``, one positive slot per anchor at a time (``fold_positives``): O(B² g bins)
    work for at most ``g`` positives per anchor, O(B²) memory, and no branch per table width.
    A ``while_loop`` has no reverse-mode rule, so the gradient w.r.t. ``mat`` is folded the same
    way, slot by slot, written out (the derivatives autodiff takes of :func:`_tent_and_step`,
    summed over the bins in the same pass)."""

    @jax.custom_vjp
    def sums(mat: jax.Array) -> jax.Array:
        def body(acc: jax.Array, index: jax.Array, valid: jax.Array) -> jax.Array:
            return acc + _slot_sums(mat, index, valid, neg, min_val, delta, bins)

        return fold_positives(pos, body, jnp.zeros((2, bins), mat.dtype))

    def fwd(mat: jax.Array) -> tuple[jax.Array, jax.Array]:
        return sums(mat), mat

    def bwd(mat: jax.Array, ct: jax.Array) -> tuple[jax.Array]:
        rows = jnp.arange(mat.shape[0])
        b = jnp.arange(bins, dtype=mat.dtype)[None, None, :]

        def body(acc: jax.Array, index: jax.Array, valid: jax.Array) -> jax.Array:
            # d/dt of the kept entries' tent weights relu(1 - |u - b|) (u = (t - min_val) /
            # delta; JAX's relu'(0) = sign(0) = 0) and of [u >= b] t, bin by bin.
            t = jnp.take_along_axis(mat, index[:, None], axis=1) - mat
            d = ((t - min_val) / delta)[..., None] - b
            tent = jnp.where(jnp.abs(d) < 1, -jnp.sign(d), 0) * (ct[0] / delta)[None, None, :]
            step = jnp.where(d >= 0, ct[1][None, None, :], 0)
            g_t = jnp.where(valid[:, None] & neg, jnp.sum(tent + step, axis=-1), 0)
            # t = d(a, p) - d(a, n): +g_t to the anchor's positive, -g_t to each negative.
            return (acc - g_t).at[rows, index].add(jnp.sum(g_t, axis=1))

        return (fold_positives(pos, body, jnp.zeros_like(mat)),)

    sums.defvjp(fwd, bwd)
    return sums(mat)


@register(
    "dynamic_soft_margin_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: DynamicSoftMarginLoss()),
)
class DynamicSoftMarginLoss(StandardDistanceLoss):
    r"""Dynamic soft margin loss, as pytorch-metric-learning's ``DynamicSoftMarginLoss``.

    With labels, over all (or the mined) triplets ``(a, p, n)``, ``t = d_{ap} - d_{an}``; without
    labels, row ``i`` of ``embeddings`` and of ``ref_emb`` are a matching pair and
    ``t_i = d(x_i, r_i) - \min(\min_{j≠i} d(x_i, r_j), \min_{j≠i} d(x_j, r_i))`` (the hardest
    negative in its row and column). The margins update a running histogram of ``num_bins`` bins
    of width ``δ = 2|min_val| / num_bins`` starting at ``min_val`` (each value split linearly
    between its two nearest bins, old histogram weighted ``1 - momentum``, momentum 1 on the
    first batch, then normalised), and the loss is

    .. math::
        L = \operatorname{mean}_t\, \mathrm{CDF}(\lfloor (t - \text{min\_val}) / δ \rfloor)\, t

    The histogram is state (:class:`MarginHistogram`, float32) that every call updates, also
    under ``nnx.jit``; inside ``jax.jit`` use ``nnx.split``/``nnx.merge`` (or ``nnx.jit``). The
    gradient flows through this batch's contribution to the histogram (as pytorch-metric-learning,
    whose first call does the same); the stored histogram is a constant. pytorch-metric-learning
    keeps the autograd graph in its stored histogram, so its second ``backward`` fails; detaching
    the histogram between steps there gives this loss.

    Speed: over all triplets (or pair-mined ones), the triplets are taken one positive slot per
    anchor at a time (a ``while_loop`` over the largest anchor's count, see ``_positives``), so
    the work is O(B² g num_bins) for at most ``g`` positives per anchor with O(B²) memory (one
    value per triplet, as pytorch-metric-learning, never B³). Margin-mined triplets take anchor
    blocks, O(B³ num_bins).

    Margins beyond the histogram: pytorch-metric-learning raises an index error when a value
    falls at or above ``min_val + (num_bins - 1) δ`` (its upper neighbour bin does not exist) or
    below ``min_val``; here such mass is dropped and the CDF read is clamped (1 above the range,
    0 below).

    Args:
        min_val: Lower end of the histogram (default -2, the smallest margin of normalised
            embeddings).
        num_bins: Number of bins (default 10).
        momentum: Weight of the current batch in the running histogram (default 0.01).
        distance: Default :class:`~calibrax.metric_learning.LpDistance` (it must be one with
            ``normalize_embeddings=True`` and ``p=2``).
        reducer: Accepted for a uniform signature; the loss is already a mean.

    Raises:
        ValueError: If ``distance`` is not a normalised Euclidean
            :class:`~calibrax.metric_learning.LpDistance`, or ``num_bins`` is not a positive
            integer; at call time, if ``indices_tuple`` is given without labels.

    References:
        Zhang and Rusinkiewicz, 2019, "Learning Local Descriptors With a CDF-Based Dynamic Soft
        Margin", ICCV.
    """

    uses_labels = "optional"
    uses_ref = True
    uses_indices_tuple = True

    def __init__(
        self,
        *,
        min_val: float = -2.0,
        num_bins: int = 10,
        momentum: float = 0.01,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        if distance is not None and not (
            isinstance(distance, LpDistance) and distance.normalize_embeddings and distance.p == 2
        ):
            raise ValueError(
                "expected `distance` to be an LpDistance with normalize_embeddings=True and "
                f"p=2, got {distance!r}"
            )
        checks.check_positive_int(num_bins, "num_bins")
        super().__init__(distance=distance, reducer=reducer)
        self.min_val = min_val
        self.num_bins = int(num_bins)
        self.delta = 2 * abs(min_val) / num_bins
        self.momentum = momentum
        self.hist = MarginHistogram(jnp.zeros((self.num_bins,), jnp.float32))

    def validate_full(
        self, embeddings: Any, labels: Any, indices_tuple: Any, ref_emb: Any, ref_labels: Any
    ) -> None:
        """The common checks, then: mined tuples only with labels and without ``ref_emb``."""
        super().validate_full(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if indices_tuple is not None and (labels is None or ref_emb is not None):
            raise ValueError(
                "expected `indices_tuple` only with `labels` and without `ref_emb` "
                f"(DynamicSoftMarginLoss), got {type(indices_tuple).__name__}"
            )

    def _unlabelled_sums(self, mat: jax.Array) -> tuple[jax.Array, jax.Array]:
        rows, cols = mat.shape
        size = max(rows, cols)
        diag = jnp.diagonal(mat)
        d_pos = jnp.zeros((size,), mat.dtype).at[: diag.shape[0]].set(diag)
        off = jnp.where(jnp.eye(rows, cols, dtype=bool), jnp.inf, mat)
        # pytorch-metric-learning pads the shorter of the two minima with zeros.
        min_a = jnp.zeros((size,), mat.dtype).at[:cols].set(jnp.min(off, axis=0))
        min_p = jnp.zeros((size,), mat.dtype).at[:rows].set(jnp.min(off, axis=1))
        t = d_pos - jnp.minimum(min_a, min_p)
        u = (t - self.min_val) / self.delta
        sums = _tent_and_step(u, t, jnp.ones_like(t, dtype=bool), self.num_bins, axes=(0,))
        return sums, jnp.asarray(size, mat.dtype)

    def _labelled_sums(
        self, mat: jax.Array, labels: jax.Array, ref_labels: jax.Array | None, indices_tuple: Any
    ) -> tuple[jax.Array, jax.Array]:
        if ref_labels is not None:
            same = labels[:, None] == ref_labels[None, :]
            pos, neg = same, ~same
        else:
            tm = triplet_mask(indices_tuple, labels, mat.dtype)
            if tm.bounded:
                return self._sliced_sums(mat, tm)
            pos, neg = tm.pos, tm.neg
        count = jnp.sum(
            jnp.sum(pos, axis=1, dtype=jnp.int32) * jnp.sum(neg, axis=1, dtype=jnp.int32)
        )

        sums = _fold_sums(mat, pos, neg, self.min_val, self.delta, self.num_bins)
        return sums, count.astype(mat.dtype)

    def _sliced_sums(self, mat: jax.Array, tm: Any) -> tuple[jax.Array, jax.Array]:
        batch = mat.shape[0]

        def one(a: jax.Array) -> tuple[jax.Array, jax.Array]:
            sel = tm.anchor_slice(a)
            t = mat[a][:, None] - mat[a][None, :]
            u = (t - self.min_val) / self.delta
            sums = _tent_and_step(u, t, sel, self.num_bins, axes=(0, 1))
            return sums, jnp.sum(sel, dtype=jnp.int32)

        sums, counts = jax.lax.map(
            jax.checkpoint(one), jnp.arange(batch), batch_size=anchor_block_size(batch)
        )
        return jnp.sum(sums, axis=0), jnp.sum(counts).astype(mat.dtype)

    def compute_full(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: jax.Array | None,
        indices_tuple: Any,
        ref_emb: jax.Array | None,
        ref_labels: jax.Array | None,
        reducer: Any,
    ) -> jax.Array:
        emb = working(embeddings)
        ref = None if ref_emb is None else working(ref_emb).astype(emb.dtype)
        mat = self.distance(emb, ref)
        if labels is None:
            sums, count = self._unlabelled_sums(mat)
        else:
            sums, count = self._labelled_sums(mat, labels, ref_labels, indices_tuple)
        tent, step = sums[0], sums[1]
        old = self.hist[...].astype(mat.dtype)
        momentum = jnp.where(jnp.sum(old) != 0, self.momentum, 1.0).astype(mat.dtype)
        new = (1 - momentum) * old + momentum * tent
        total = jnp.sum(new)
        new = new / jnp.where(total > 0, total, 1)
        any_value = count > 0
        self.hist[...] = jax.lax.stop_gradient(jnp.where(any_value, new, old)).astype(
            self.hist[...].dtype
        )
        loss = jnp.sum(new * step) / jnp.where(any_value, count, 1)
        return jnp.where(any_value, loss, jnp.zeros_like(loss))
