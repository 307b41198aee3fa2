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


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _pair_values(
    a_q: jax.Array,
    a_r: jax.Array,
    cos_qr: jax.Array,
    keep: jax.Array,
    keep_r: jax.Array,
    counted: jax.Array,
    c2: float,
    shared: bool,
) -> jax.Array:
    """The loss of each counted (anchor, positive) pair, 0 elsewhere: the slot loop, or the
    matmul form when some anchor has more than :func:`_matmul_from` positives (with the loop
    for the pairs it underflows for). One custom VJP around both: the backward pass follows the
    saved choice and re-runs the chosen form (rematerialised), so that neither form's residuals
    are kept, or zero-filled, when the other one runs. ``shared``
    (static): ``a_q`` and ``a_r`` are the same array, and its whole gradient is returned for
    ``a_q``."""
    return _pair_values_fwd(a_q, a_r, cos_qr, keep, keep_r, counted, c2, shared)[0]


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
    return d_q, d_r, d_cos, None, None, None


_pair_values.defvjp(_pair_values_fwd, _pair_values_bwd)


@register(
    "angular_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
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

    Cost: each counted (anchor, positive) pair's sum over the negatives is taken one positive
    slot per anchor at a time (a ``while_loop`` over the largest anchor's count), each pair with
    its own shift: O(B² g) work for at most ``g`` positives per anchor, as
    pytorch-metric-learning's (pairs x B), and O(B²) memory; no (B, B, B) array. When some
    anchor has more than ``max(32, B / 24)`` positives (few, large classes), one matrix product
    of shifted exponentials gives every pair at once instead (O(B³) work in the BLAS product,
    then faster), and the slot loop only the pairs that product underflows for (raw
    embeddings of large norm).

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
        tan_sq = math.tan(math.radians(self.alpha)) ** 2
        c1, c2 = 4 * tan_sq, 2 * (1 + tan_sq)
        qn = self.distance.normalize(query)
        rn = qn if ref is query else self.distance.normalize(ref)
        eps = max(1e-12, float(jnp.finfo(ref.dtype).tiny))
        # ref = rn * max(|ref|, eps) exactly, so the raw inner products are scaled cosines.
        ref_norm = jnp.maximum(self.distance.norm(ref), eps)
        cos_qr = qn @ rn.T
        cos_rr = cos_qr if ref is query else rn @ rn.T
        a_q = c1 * cos_qr * ref_norm[None, :]
        a_r = a_q if ref is query else c1 * cos_rr * ref_norm[None, :]
        keep = query_labels[:, None] != ref_labels[None, :]
        if ref_mask is not None:
            keep = keep & ref_mask[None, :]
        enough = jnp.any(pos > 0) & jnp.any(neg > 0)
        weights = jnp.where(enough, pos, 0).astype(query.dtype)
        counted = (pos > 0) & jnp.any(keep, axis=1)[:, None]
        keep_r = keep if ref is query else ref_labels[:, None] != ref_labels[None, :]
        if ref_mask is not None and ref is not query:
            keep_r = keep_r & ref_mask[None, :]
        values = _pair_values(a_q, a_r, cos_qr, keep, keep_r, counted, c2, ref is query)
        values = jnp.where(counted, values, 0)
        return LossTerm(values, weights)
