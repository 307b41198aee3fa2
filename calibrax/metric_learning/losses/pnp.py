"""PNPLoss: penalise the (smoothed) number of negatives ranked before each positive."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.losses._anchor_blocks import map_anchor_blocks
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._positives import switch_on_positives
from calibrax.metric_learning.losses._standard_call import StandardDistanceLoss

__all__ = ["PNPLoss"]

VARIANTS = ("Ds", "Dq", "Iu", "Ib", "O")


def _negatives_before(
    sims: jax.Array, pos_sims: jax.Array, is_neg: jax.Array, anneal: float
) -> jax.Array:
    """(n, cap): for a block of anchors ``q`` (rows ``sims`` (n, B)) and each of their positives
    ``j`` (``pos_sims`` (n, cap)), the smoothed count of ``q``'s negatives ranked above ``j``."""
    # [q, j, k]: sigmoid((s_qk - s_qj) / anneal), its exponent clamped to [-50, 50] as in PNP.
    exponent = jnp.clip((pos_sims[:, :, None] - sims[:, None, :]) / anneal, -50.0, 50.0)
    above = 1.0 / (1.0 + jnp.exp(exponent))
    return jnp.sum(jnp.where(is_neg[:, None, :], above, jnp.zeros_like(above)), axis=2)


@register(
    "pnp_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=loss_example(lambda: PNPLoss()),
)
class PNPLoss(StandardDistanceLoss):
    r"""Positive-negative-pair (PNP) loss, as pytorch-metric-learning's ``PNPLoss``.

    For an anchor ``q`` and each positive ``j`` (its same-class samples, ``q`` included when it
    has one), ``R_{qj} = Σ_{k ∈ N_q} σ((s_{qk} - s_{qj}) / τ)`` counts, smoothly, the negatives
    ranked above ``j`` (the sigmoid's exponent clamped to [-50, 50]). A variant ``f`` shapes the
    count, and the loss averages ``f(R)`` over each anchor's positives, then over the anchors that
    have a positive:

    - ``"O"``: ``R``; ``"Ds"``: ``log(1 + R)``; ``"Iu"``: ``(1 + R) log(1 + R)``;
    - ``"Ib"``: ``(b R - log(1 + b R)) / b²``;
    - ``"Dq"``: ``1 / (1 + R)^α``, and the loss is one minus the average.

    The result is already a scalar (``reducer`` is not applied, as in pytorch-metric-learning); 0
    when no anchor has a positive. Labels are required; reference embeddings and mined tuples are
    not taken.

    Cost: O(B² g) sigmoids for classes of at most ``g`` samples (pytorch-metric-learning:
    O(B³), in (B, B, B) arrays): each anchor's positives are gathered into a table whose width is
    picked at run time among static capacities (see ``_positives``), evaluated in anchor blocks.

    Args:
        b: The ``"Ib"`` variant's ``b`` (default 2).
        alpha: The ``"Dq"`` variant's ``α`` (default 1).
        anneal: The temperature ``τ`` (default 0.01).
        variant: One of ``"Ds"``, ``"Dq"``, ``"Iu"``, ``"Ib"``, ``"O"`` (default ``"O"``).
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity` (the only one
            accepted).
        reducer: Accepted for a uniform signature; not applied (see above).

    Raises:
        ValueError: If ``variant`` is unknown or ``distance`` is not a
            :class:`~calibrax.metric_learning.CosineSimilarity`; at call time, if ``labels`` are
            missing or ``ref_emb`` or ``indices_tuple`` is given.

    References:
        Li et al., 2022, "Rethinking the Optimization of Average Precision: Only Penalizing
        Negative Instances before Positive Ones is Enough", AAAI, arXiv:2102.04640.
    """

    def __init__(
        self,
        *,
        b: float = 2.0,
        alpha: float = 1.0,
        anneal: float = 0.01,
        variant: str = "O",
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        checks.check_choice(variant, VARIANTS, "variant")
        if distance is not None and not isinstance(distance, CosineSimilarity):
            raise ValueError(
                f"expected `distance` to be a CosineSimilarity, got {type(distance).__name__}"
            )
        super().__init__(distance=distance, reducer=reducer)
        self.b = b
        self.alpha = alpha
        self.anneal = anneal
        self.variant = variant

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, the only distance the loss accepts."""
        return CosineSimilarity()

    def _shape(self, r: jax.Array) -> jax.Array:
        if self.variant == "Ds":
            return jnp.log1p(r)
        if self.variant == "Dq":
            return 1 / (1 + r) ** self.alpha
        if self.variant == "Iu":
            return (1 + r) * jnp.log1p(r)
        if self.variant == "Ib":
            return (self.b * r - jnp.log1p(self.b * r)) / self.b**2
        return r

    def compute_full(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any,
        ref_emb: Any,
        ref_labels: Any,
        reducer: Any,
    ) -> jax.Array:
        sims = self.distance(working(embeddings))
        batch = sims.shape[0]
        same = labels[:, None] == labels[None, :]
        eye = jnp.eye(batch, dtype=bool)
        has_pos = jnp.any(same & ~eye, axis=1)
        # Positives include the anchor itself, for anchors that have another positive.
        is_pos = same & has_pos[:, None]

        def branch(index: jax.Array, valid: jax.Array) -> jax.Array:
            counts = map_anchor_blocks(
                lambda s, p, n: _negatives_before(s, p, n, self.anneal),
                (sims, jnp.take_along_axis(sims, index, axis=1), ~same),
                (0, 0, False),
            )
            zero = jnp.zeros_like(counts)
            return jnp.sum(jnp.where(valid, self._shape(jnp.where(valid, counts, zero)), zero), 1)

        shaped_sums = switch_on_positives(is_pos, branch)
        n_pos = jnp.sum(is_pos, axis=1).astype(sims.dtype)
        per_anchor = shaped_sums / jnp.where(has_pos, n_pos, 1)
        n_anchors = jnp.sum(has_pos).astype(sims.dtype)
        loss = jnp.sum(jnp.where(has_pos, per_anchor, 0)) / jnp.maximum(n_anchors, 1)
        if self.variant == "Dq":
            loss = 1 - loss
        return jnp.where(n_anchors > 0, loss, jnp.zeros_like(loss))
