"""RankedListLoss: push negatives beyond ``alpha`` and pull positives within ``alpha - margin``,
weighting the violators of each anchor's ranked list."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._standard_call import StandardDistanceLoss

__all__ = ["RankedListLoss"]


def _row_terms(
    mat: jax.Array, same: jax.Array, pos_bound: float, alpha: float, tp: float, tn: float
) -> tuple[jax.Array, ...]:
    """The violating pairs' masks and weights of every anchor row, and the rows' weighted sums
    (the diagonal, and every entry that is not a positive distance, never counts)."""
    eye = jnp.eye(mat.shape[0], dtype=bool)
    in_p = same & ~eye & (mat > pos_bound) & (mat > 0)
    in_n = ~same & (mat < alpha) & (mat > 0)
    w_p = jnp.where(in_p, jnp.exp(tp * (jnp.where(in_p, mat, 0) - pos_bound)), 0)
    w_n = jnp.where(in_n, jnp.exp(tn * (alpha - jnp.where(in_n, mat, 0))), 0)
    s_p = jnp.sum(jnp.where(in_p, w_p * (mat - pos_bound), 0), axis=1)
    s_n = jnp.sum(jnp.where(in_n, w_n * (alpha - mat), 0), axis=1)
    pad = 1e-5 * mat.shape[0]
    return in_p, in_n, w_p, w_n, s_p, s_n, jnp.sum(w_p, axis=1) + pad, jnp.sum(w_n, axis=1) + pad


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _anchor_losses(
    mat: jax.Array,
    same: jax.Array,
    pos_bound: float,
    alpha: float,
    tp: float,
    tn: float,
    imbalance: float,
) -> jax.Array:
    """Each anchor's ``(1 - λ) S_p / (W_p + pad) + λ S_n / (W_n + pad)``; its gradient w.r.t. the
    distance matrix is written out (one elementwise pass instead of autodiff's chain of (B, B)
    temporaries)."""
    _, _, _, _, s_p, s_n, d_p, d_n = _row_terms(mat, same, pos_bound, alpha, tp, tn)
    return (1 - imbalance) * s_p / d_p + imbalance * s_n / d_n


def _anchor_losses_fwd(
    mat: jax.Array,
    same: jax.Array,
    pos_bound: float,
    alpha: float,
    tp: float,
    tn: float,
    imbalance: float,
) -> tuple[jax.Array, Any]:
    return _anchor_losses(mat, same, pos_bound, alpha, tp, tn, imbalance), (mat, same)


def _anchor_losses_bwd(
    pos_bound: float,
    alpha: float,
    tp: float,
    tn: float,
    imbalance: float,
    res: Any,
    ct: jax.Array,
) -> tuple[jax.Array, None]:
    mat, same = res
    in_p, in_n, w_p, w_n, s_p, s_n, d_p, d_n = _row_terms(mat, same, pos_bound, alpha, tp, tn)
    # d(S/D)/dm = (dS/dm) / D - S (dD/dm) / D², with dw_p/dm = Tp w_p and dw_n/dm = -Tn w_n.
    c_p = ((1 - imbalance) * ct / d_p)[:, None]
    c_n = (imbalance * ct / d_n)[:, None]
    g_p = c_p * w_p * (1 + tp * (mat - pos_bound) - (tp * s_p / d_p)[:, None])
    g_n = c_n * w_n * (-1 - tn * (alpha - mat) + (tn * s_n / d_n)[:, None])
    return jnp.where(in_p, g_p, 0) + jnp.where(in_n, g_n, 0), None


_anchor_losses.defvjp(_anchor_losses_fwd, _anchor_losses_bwd)


@register(
    "ranked_list_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: RankedListLoss(margin=0.4, Tn=1.0)),
)
class RankedListLoss(StandardDistanceLoss):
    r"""Ranked list loss, as pytorch-metric-learning's ``RankedListLoss`` (RLL-Simpler by default).

    With the distance matrix ``d`` (diagonal set to 0), for each anchor ``a``: the violating
    positives ``P* = {p : d_{ap} > α - m}`` and negatives ``N* = {n : d_{an} < α}`` (only those
    with a positive distance count), weighted by ``w_p = e^{T_p (d_{ap} - (α - m))}`` and
    ``w_n = e^{T_n (α - d_{an})}``:

    .. math::
        L_a = (1 - λ) \frac{\sum_{P^*} w_p (d_{ap} - (α - m))}{\sum_{P^*} w_p + 10^{-5} B}
            + λ \frac{\sum_{N^*} w_n (α - d_{an})}{\sum_{N^*} w_n + 10^{-5} B}

    (pytorch-metric-learning adds 1e-5 to every entry of the anchor's row, hence ``10^{-5} B``).
    The anchor losses are averaged (default :class:`~calibrax.metric_learning.MeanReducer`). The
    formula is applied to the matrix as it is, also for similarities, as in
    pytorch-metric-learning. Labels are required; reference embeddings and mined tuples are not
    taken.

    Args:
        margin: ``m``, between the positive and the negative boundary.
        Tn: Temperature of the negatives' weights (PML's name).
        imbalance: ``λ`` in [0, 1] (default 0.5), the negatives' share.
        alpha: ``α``, the negative boundary (default ``1 + margin / 2``).
        Tp: Temperature of the positives' weights (default 0: plain mean, PML's name).
        distance: Default :class:`~calibrax.metric_learning.LpDistance` (normalised embeddings).
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    Raises:
        ValueError: If ``imbalance`` is outside [0, 1]; at call time, if ``labels`` are missing,
            or ``ref_emb`` or ``indices_tuple`` is given.

    Warns:
        UserWarning: If ``Tp`` or ``Tn`` is above 5 (``exp`` may overflow), as
            pytorch-metric-learning.

    References:
        Wang et al., 2019, "Ranked List Loss for Deep Metric Learning", arXiv:1903.03238.
    """

    def __init__(
        self,
        *,
        margin: float,
        Tn: float,
        imbalance: float = 0.5,
        alpha: float | None = None,
        Tp: float = 0.0,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        if not (isinstance(imbalance, (int, float)) and 0 <= imbalance <= 1):
            raise ValueError(f"expected `imbalance` to be in [0, 1], got {imbalance!r}")
        if Tp > 5 or Tn > 5:
            warnings.warn("Tp or Tn above 5: too large temperatures may overflow exp", stacklevel=2)
        super().__init__(distance=distance, reducer=reducer)
        self.margin = margin
        self.imbalance = imbalance
        self.alpha = alpha if alpha is not None else 1 + margin / 2
        self.Tp = Tp
        self.Tn = Tn

    def compute_full(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any,
        ref_emb: Any,
        ref_labels: Any,
        reducer: Any,
    ) -> jax.Array:
        mat = self.distance(working(embeddings))
        same = labels[:, None] == labels[None, :]
        losses = _anchor_losses(
            mat,
            same,
            self.alpha - self.margin,
            self.alpha,
            self.Tp,
            self.Tn,
            self.imbalance,
        )
        return reducer(losses, jnp.ones_like(losses))
