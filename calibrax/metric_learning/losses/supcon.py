"""SupConLoss: supervised contrastive loss, the mean log-probability of each anchor's positives."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.losses._memory_blocks import fused_memory_rows
from calibrax.metric_learning.losses._memory_supcon import memory_supcon_loss
from calibrax.metric_learning.losses._pair_base import GenericPairLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import masked_logsumexp
from calibrax.metric_learning.reducers.avg_non_zero_reducer import AvgNonZeroReducer

__all__ = ["SupConLoss"]


@jax.custom_vjp
def _anchor_losses_symmetric(s: jax.Array, pos: jax.Array, kept: jax.Array) -> jax.Array:
    """Each anchor's SupCon loss from the symmetric scaled similarity matrix ``s`` (all pairs).

    ``pos`` and ``kept`` are boolean (B, B): the positives of each anchor (row), and all its pairs
    (positive or negative). The row's log-sum-exp is shifted by the row's maximum over the kept
    pairs (pytorch-metric-learning shifts by the maximum of the whole row; the shift cancels
    exactly, and the kept maximum also keeps the sum's largest term at 1).

    The backward pass is written out, one elementwise pass: with ``c`` the cotangent of the anchor
    losses and ``π_a = softmax`` of row ``a`` over its kept pairs, the cotangent of ``s`` is
    ``g_ak = c_a ρ_a π_a(k) - c_a [k ∈ P(a)] / |P(a)|`` (``ρ_a = 1`` if the anchor has a
    positive, else 0), and it returns the symmetric part ``(g + gᵀ) / 2``, whose transposed half
    is computed elementwise from the same symmetric ``s`` (no transpose). That is the gradient
    for a symmetric ``s`` taken through ``BaseDistance.self_matrix_symmetric_grad``, and only for
    that caller.
    """
    return _anchor_losses_fwd(s, pos, kept)[0]


def _anchor_losses_fwd(s: jax.Array, pos: jax.Array, kept: jax.Array) -> tuple[jax.Array, Any]:
    """The anchor losses, and as residuals each row's log-normaliser ``z`` (shift + log-sum-exp)
    and its number of positives."""
    any_kept = jnp.any(kept, axis=1)
    shift = jnp.max(jnp.where(kept, s, -jnp.inf), axis=1)
    shift = jnp.where(any_kept, shift, jnp.zeros_like(shift))
    t = s - shift[:, None]
    total = jnp.sum(jnp.where(kept, jnp.exp(t), jnp.zeros_like(t)), axis=1)
    lse = jnp.where(any_kept, jnp.log(jnp.where(any_kept, total, jnp.ones_like(total))), 0)
    n_pos = jnp.sum(pos, axis=1, dtype=s.dtype)
    pos_total = jnp.sum(jnp.where(pos, t, jnp.zeros_like(t)), axis=1)
    tiny = jnp.finfo(s.dtype).tiny
    values = -(pos_total - n_pos * lse) / (n_pos + tiny)
    return values, (s, pos, kept, shift + lse, n_pos)


def _anchor_losses_bwd(res: Any, c: jax.Array) -> tuple[jax.Array, None, None]:
    s, pos, kept, z, n_pos = res
    tiny = jnp.finfo(s.dtype).tiny
    alpha = c * n_pos / (n_pos + tiny)
    beta = c / (n_pos + tiny)
    zero = jnp.zeros_like(s)
    # Row a's own term and, by symmetry, column a's term of anchor k: exponentials of the same
    # entry against the two normalisers (both <= 1 where kept: s_ak <= z_a and s_ak <= z_k).
    soft = alpha[:, None] * jnp.exp(s - z[:, None]) + alpha[None, :] * jnp.exp(s - z[None, :])
    g = jnp.where(kept, soft, zero) - jnp.where(pos, beta[:, None] + beta[None, :], zero)
    return 0.5 * g, None, None


_anchor_losses_symmetric.defvjp(_anchor_losses_fwd, _anchor_losses_bwd)


@register(
    "supcon_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: SupConLoss()),
)
class SupConLoss(GenericPairLoss):
    r"""Supervised contrastive loss, as pytorch-metric-learning's ``SupConLoss``.

    For anchor ``a`` with positives ``P(a)`` and all its pairs ``A(a)`` (positive or negative),
    similarities divided by the temperature ``τ``:

    .. math::
        L_a = -\frac{1}{|P(a)|} \sum_{p \in P(a)} \Big(s_{ap} - \log \sum_{k \in A(a)}
        e^{s_{ak}}\Big)

    averaged over the anchors with a non-zero loss (default
    :class:`~calibrax.metric_learning.AvgNonZeroReducer`). The loss is 0 if there is no positive or no
    negative pair.

    Inside :class:`~calibrax.metric_learning.CrossBatchMemory` (a frozen reference set, all pairs),
    with the default distance (cosine similarity, ``power=1``) and reducer, the loss is computed by
    a fused kernel, blocked over the memory with a running log-sum-exp, with its own backward pass
    (``jax.custom_vjp``): the same values and gradients w.r.t. the batch, faster, but ``jax.jvp``
    of the loss raises (second derivatives differentiate the written-out backward pass and match
    the general path's). Every other setting, and any call without a memory, goes through the
    general path (also reverse-mode only: the distance matrix has a written-out one-matmul
    backward pass).

    Args:
        temperature: Default 0.1.
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity`.
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Default :class:`~calibrax.metric_learning.AvgNonZeroReducer`.

    References:
        Khosla et al., 2020, "Supervised Contrastive Learning", arXiv:2004.11362.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
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
        self.temperature = temperature

    def default_reducer(self) -> Any:
        """Mean of the non-zero anchor losses, as in pytorch-metric-learning."""
        return AvgNonZeroReducer()

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, as in pytorch-metric-learning."""
        return CosineSimilarity()

    def compute_loss(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        reducer: Any,
        ref: Any = None,
    ) -> jax.Array:
        """As :meth:`GenericPairLoss.compute_loss`; against a frozen reference set (a memory
        bank) over all pairs, with the cosine similarity and the default reducer, the fused
        kernel of ``_memory_supcon`` (``jax.jvp`` of it raises)."""
        distance = self.distance
        rows = fused_memory_rows(distance, embeddings, indices_tuple, reducer, ref)
        if rows is not None and type(distance) is CosineSimilarity and distance.power == 1:
            return memory_supcon_loss(
                *rows,
                labels,
                ref.labels,
                ref_mask=ref.mask,
                query_mask=ref.query_mask,
                self_index=ref.self_index,
                temperature=self.temperature,
            )
        return super().compute_loss(embeddings, labels, indices_tuple, reducer, ref=ref)

    def compute_terms(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any, ref: Any = None
    ) -> dict[str, LossTerm]:
        """Over all pairs of the batch, the anchor losses come from
        :func:`_anchor_losses_symmetric` (a written-out backward pass on the symmetric matrix);
        mined pairs, reference sets and asymmetric distances use :meth:`pair_terms`."""
        if indices_tuple is not None or ref is not None or not self.distance.is_symmetric:
            return super().compute_terms(embeddings, labels, indices_tuple, ref=ref)
        mat, pos, neg = self.pairs(embeddings, labels, None, symmetric=True)
        sim = mat if self.distance.is_inverted else -mat
        is_pos, is_neg = pos > 0, neg > 0
        values = _anchor_losses_symmetric(sim / self.temperature, is_pos, is_pos | is_neg)
        both = jnp.any(is_pos) & jnp.any(is_neg)
        weights = jnp.where(both, jnp.ones_like(values), 0)
        return {"loss": LossTerm(values, weights)}

    def pair_terms(
        self,
        mat: Float[Array, "batch batch"],
        pos: Float[Array, "batch batch"],
        neg: Float[Array, "batch batch"],
        axis: int,
    ) -> dict[str, LossTerm]:
        sim = mat if self.distance.is_inverted else -mat
        sim = sim / self.temperature
        sim = sim - jax.lax.stop_gradient(jnp.max(sim, axis=axis, keepdims=True))
        pos_mask = (pos > 0).astype(sim.dtype)
        denominator = masked_logsumexp(sim, (pos > 0) | (neg > 0), add_one=False, axis=axis)
        log_prob = sim - denominator
        tiny = jnp.finfo(sim.dtype).tiny
        mean_log_prob_pos = jnp.sum(pos_mask * log_prob, axis=axis) / (
            jnp.sum(pos_mask, axis=axis) + tiny
        )
        both = jnp.any(pos > 0) & jnp.any(neg > 0)
        weights = jnp.where(both, jnp.ones_like(mean_log_prob_pos), 0)
        return {"loss": LossTerm(-mean_log_prob_pos, weights)}
