"""AngularLoss: bound the angle at the negative of the triangle anchor-positive-negative."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.lp_distance import LpDistance
from calibrax.metric_learning.losses._mined import NonFiniteIsNaN
from calibrax.metric_learning.losses._pair_base import DistanceLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.tuples import pair_weights

__all__ = ["AngularLoss", "positive_buckets"]


def positive_buckets(num_ref: int) -> tuple[int, ...]:
    """The static numbers of positive slots per anchor a loss is compiled for: 8, 64, 512, ...
    capped at ``num_ref`` (at most 8x the slots needed), or one branch of ``num_ref`` slots up to
    64 samples, where the O(B³) work is small and each compiled branch costs more than it saves."""
    if num_ref <= 64:
        return (num_ref,)
    sizes = {min(num_ref, 8**i) for i in range(1, int(math.log(num_ref, 8)) + 2)}
    return tuple(sorted(sizes))


def gather_positives(pos: jax.Array, slots: int) -> tuple[jax.Array, jax.Array]:
    """Per anchor (row), the column indices of its ``slots`` largest pair counts and those counts
    (the positives first; unused slots have count 0). Shapes (rows, slots)."""
    counts, index = jax.lax.top_k(pos, slots)
    return index, counts


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

    Cost: the inner products come from one (B, B) matmul; each anchor's positives are gathered
    into a fixed number of slots (the smallest power of 8, capped at B, that holds the largest
    number of positives of any anchor, chosen at run time among compiled branches), so the work
    is O(B² · slots) rather than O(B³).

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

    def compute_terms(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any
    ) -> dict[str, LossTerm]:
        emb = working(embeddings)
        pos, neg = pair_weights(indices_tuple, labels)
        return {"loss": self.pair_losses(emb, labels, emb, labels, pos, neg)}

    def pair_losses(
        self,
        query: Float[Array, "n dim"],
        query_labels: Int[Array, " n"],
        ref: Float[Array, "m dim"],
        ref_labels: Int[Array, " m"],
        pos: Int[Array, "n m"],
        neg: Int[Array, "n m"],
    ) -> LossTerm:
        """The loss of every (query anchor, reference positive) pair, weighted by ``pos``.

        ``pos``/``neg`` are the selected pair counts; a query row's negatives are all reference
        rows with another label. ``ref`` may be ``query`` itself.
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
        enough = jnp.any(pos > 0) & jnp.any(neg > 0)
        weights = jnp.where(enough, pos, 0).astype(query.dtype)
        n_query, n_ref = pos.shape

        def for_slots(slots: int) -> jax.Array:
            index, counts = gather_positives(pos, slots)

            def block(args: tuple[jax.Array, ...]) -> jax.Array:
                a_row, keep_row, cos_row, idx = args
                # F[k, n] = c1 (x_a + x_p) . x_n - c2 x_a . x_p for the anchor's slot k.
                f = a_row[None, :] + a_r[idx] - c2 * cos_row[idx][:, None]
                kept = jnp.where(keep_row[None, :], f, -jnp.inf)
                # log(1 + sum exp(F)) shifted by max(0, max F); exp(-inf) = 0 drops the others.
                top = jax.lax.stop_gradient(jnp.maximum(jnp.max(kept, axis=1), 0))
                total = jnp.exp(-top) + jnp.sum(jnp.exp(kept - top[:, None]), axis=1)
                return top + jnp.log(total)

            args = (a_q, keep, cos_qr, index)
            block_rows = max(1, (1 << 22) // (slots * n_ref))
            if block_rows >= n_query:
                per_slot = jax.vmap(block)(args)
            else:
                # Anchor blocks of at most 4M (slot, negative) terms, recomputed in the backward
                # pass rather than stored: O(B²) memory whatever the number of positives.
                per_slot = jax.lax.map(jax.checkpoint(block), args, batch_size=block_rows)
            per_slot = jnp.where(counts > 0, per_slot, 0)
            rows = jnp.arange(n_query)[:, None]
            return jnp.zeros((n_query, n_ref), query.dtype).at[rows, index].set(per_slot)

        buckets = positive_buckets(n_ref)
        most = jnp.max(jnp.sum(pos > 0, axis=1))
        branch = jnp.sum(jnp.asarray(buckets) < most)
        branches = [lambda s=s: for_slots(s) for s in buckets]
        values = jax.lax.switch(branch, branches) if len(branches) > 1 else branches[0]()
        return LossTerm(values, weights)
