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
from calibrax.metric_learning.tuples import Reference
from calibrax.metric_learning.tuples import pair_weights

__all__ = ["AngularLoss", "exact_losses"]


def exact_losses(
    a_q: jax.Array, a_r: jax.Array, cos_qr: jax.Array, keep: jax.Array, c2: float
) -> jax.Array:
    """``log(1 + sum_n keep[a, n] exp(a_q[a, n] + a_r[p, n] - c2 cos_qr[a, p]))`` for every
    (a, p), each with its own shift: anchor blocks of at most 4M terms, rematerialised in the
    backward pass (O(B³) time, O(B²) memory)."""
    n_query, n_ref = cos_qr.shape

    def block(args: tuple[jax.Array, ...]) -> jax.Array:
        a_row, keep_row, cos_row = args
        f = a_row[None, :] + a_r - c2 * cos_row[:, None]  # [p, n]
        kept = jnp.where(keep_row[None, :], f, -jnp.inf)
        top = jax.lax.stop_gradient(jnp.maximum(jnp.max(kept, axis=1), 0))
        return top + jnp.log(jnp.exp(-top) + jnp.sum(jnp.exp(kept - top[:, None]), axis=1))

    rows = max(1, min(n_query, (1 << 22) // max(1, n_ref * n_ref)))
    return jax.lax.map(jax.checkpoint(block), (a_q, keep, cos_qr), batch_size=rows)


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _pair_values(
    a_q: jax.Array,
    a_r: jax.Array,
    cos_qr: jax.Array,
    keep: jax.Array,
    keep_r: jax.Array,
    counted: jax.Array,
    c2: float,
) -> jax.Array:
    """The loss of each counted (anchor, positive) pair: the matmul form, or, if it underflows
    for a counted pair, the exact blocks for those pairs. Differentiated by re-running the
    chosen path's forward pass in the backward pass (rematerialised), so that the rare exact
    path costs nothing when it is not taken."""
    return _pair_values_fwd(a_q, a_r, cos_qr, keep, keep_r, counted, c2)[0]


def _pair_values_fwd(
    a_q: jax.Array,
    a_r: jax.Array,
    cos_qr: jax.Array,
    keep: jax.Array,
    keep_r: jax.Array,
    counted: jax.Array,
    c2: float,
) -> tuple[jax.Array, Any]:
    fast, safe = _fast_losses(a_q, a_r, cos_qr, keep, keep_r, c2)
    exact_needed = jnp.any(counted & ~safe)
    # The matmul stays outside the conditional (XLA on CPU compiles a dot inside a branch
    # without its fast library call); the branch holds only the exact elementwise blocks.
    exact = jax.lax.cond(
        exact_needed,
        lambda: exact_losses(a_q, a_r, cos_qr, keep, c2),
        lambda: jnp.zeros_like(fast),
    )
    values = jnp.where(counted, jnp.where(safe, fast, exact), 0)
    return values, (a_q, a_r, cos_qr, keep, keep_r, counted, safe, exact_needed)


def _pair_values_bwd(c2: float, res: Any, g: jax.Array) -> tuple[Any, ...]:
    a_q, a_r, cos_qr, keep, keep_r, counted, safe, exact_needed = res
    g = jnp.where(counted, g, 0)

    def fast_fn(a_q: jax.Array, a_r: jax.Array, cos_qr: jax.Array) -> jax.Array:
        return _fast_losses(a_q, a_r, cos_qr, keep, keep_r, c2)[0]

    def exact_fn(a_q: jax.Array, a_r: jax.Array, cos_qr: jax.Array) -> jax.Array:
        return exact_losses(a_q, a_r, cos_qr, keep, c2)

    _, fast_vjp = jax.vjp(fast_fn, a_q, a_r, cos_qr)
    grads = fast_vjp(jnp.where(safe, g, 0))
    g_exact = jnp.where(safe, 0, g)
    exact_grads = jax.lax.cond(
        exact_needed,
        lambda: jax.vjp(exact_fn, a_q, a_r, cos_qr)[1](g_exact),
        lambda: (jnp.zeros_like(a_q), jnp.zeros_like(a_r), jnp.zeros_like(cos_qr)),
    )
    d_q, d_r, d_cos = (a + b for a, b in zip(grads, exact_grads, strict=True))
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

    Cost: the sums over the negatives of every (anchor, positive) pair are one (B, B) x (B, B)
    matmul of exponentials shifted per anchor and per positive (no (B, B, B) array). Should that
    product underflow for a counted pair (only for raw embeddings of large norm, and no negative
    near both the anchor and the positive), the pairs are recomputed with their own shifts in
    rematerialised anchor blocks, at O(B³) cost for that call only.

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
        keep_r = keep if ref is query else ref_labels[:, None] != ref_labels[None, :]
        if ref_mask is not None and ref is not query:
            keep_r = keep_r & ref_mask[None, :]
        counted = (pos > 0) & jnp.any(keep, axis=1)[:, None]
        values = _pair_values(a_q, a_r, cos_qr, keep, keep_r, counted, c2)
        values = jnp.where(counted, values, 0)
        return LossTerm(values, weights)
