"""SmoothAPLoss: one minus a smoothed average precision of each sample's ranking of the batch."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.losses._anchor_blocks import map_anchor_blocks
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._positives import switch_on_positives
from calibrax.metric_learning.losses._sample_weights import sample_weights
from calibrax.metric_learning.losses._standard_call import StandardDistanceLoss

__all__ = ["SmoothAPLoss"]


def _example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
    embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
    labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32)

    def fn(e: jax.Array, l: jax.Array) -> jax.Array:
        return SmoothAPLoss()(e, l)

    return fn, (embeddings, labels)


def _anchor_ap(
    sims: jax.Array,
    pos_sims: jax.Array,
    pos_raw: jax.Array,
    index: jax.Array,
    valid: jax.Array,
    temperature: float,
) -> jax.Array:
    """Smoothed AP of a block of anchors: ``sims`` (n, B) their rows; ``pos_sims``/``pos_raw``
    (n, cap) the entries of their positives (``index`` (n, cap), ``valid`` marks the real ones)."""
    batch, cap = sims.shape[1], index.shape[1]
    zero = jnp.zeros((), sims.dtype)
    # [a, j, m]: how much m is ranked above a's positive j, over the whole batch but j itself.
    above_all = jax.nn.sigmoid((sims[:, None, :] - pos_sims[:, :, None]) / temperature)
    not_self = index[:, :, None] != jnp.arange(batch, dtype=index.dtype)[None, None, :]
    all_rank = 1 + jnp.sum(jnp.where(not_self, above_all, zero), axis=2)
    # [a, j, k]: the same within a's positives (pytorch-metric-learning uses the matrix before
    # ``power`` here).
    above_pos = jax.nn.sigmoid((pos_raw[:, None, :] - pos_raw[:, :, None]) / temperature)
    others = valid[:, None, :] & ~jnp.eye(cap, dtype=bool)[None]
    pos_rank = 1 + jnp.sum(jnp.where(others, above_pos, zero), axis=2)
    ratio = jnp.where(valid, pos_rank / all_rank, zero)
    return jnp.sum(ratio, axis=1) / jnp.sum(valid, axis=1).astype(sims.dtype)


@register(
    "smooth_ap_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=_example,
)
class SmoothAPLoss(StandardDistanceLoss):
    r"""Smooth-AP, as pytorch-metric-learning's ``SmoothAPLoss`` (new in 2.9).

    Each sample ``a`` ranks the batch by similarity; the rank of ``l`` is smoothed with a
    sigmoid of temperature ``τ``, ``R(l) = 1 + Σ_{m≠l} σ((s_{am} - s_{al}) / τ)``, and ``R_P(l)``
    sums over the samples ``m`` of ``a``'s class only (``a`` itself included). The loss of ``a`` is

    .. math::
        L_a = w_a \Big(1 - \frac{1}{|P_a|} \sum_{l \in P_a} \frac{R_P(l)}{R(l)}\Big)

    with ``P_a`` the samples of ``a``'s class (``a`` included) and ``w_a`` the miner weight (how
    often ``a`` appears in the mined tuples over the largest count; 1 without a miner). The
    per-sample losses are averaged (default :class:`~calibrax.metric_learning.MeanReducer`).

    Every class must have the same number of samples (``MPerClassSampler`` batches), as in
    pytorch-metric-learning: an eager call with unequal classes raises, a jitted one returns NaN.

    Differs from pytorch-metric-learning 2.9, which reshapes the batch into blocks of consecutive
    samples and takes each block as a class, but with the two sizes swapped (``C`` classes of
    ``g`` samples become ``g`` blocks of ``C``): its positives are the class only when ``C = g``
    and the batch is ordered class by class (then the two agree, as the parity tests check).
    Here the classes come from the labels, as in the paper and its reference code (Brown et al.'s
    ``Smooth_AP_loss.py``), whatever the batch's order.

    Cost: each anchor ranks the batch for each of its positives, O(B² g) sigmoids for classes of
    ``g`` samples (pytorch-metric-learning: O(B³), in (B, B, B) arrays): the positives are
    gathered into a table whose width is picked at run time among static capacities (see
    ``_positives``), and evaluated in anchor blocks of bounded memory.

    Args:
        temperature: ``τ`` (default 0.01).
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity` (the only one
            accepted).
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    Raises:
        ValueError: If ``distance`` is not a :class:`~calibrax.metric_learning.CosineSimilarity`;
            at call time, if ``labels`` are missing, ``ref_emb`` is given, or (eagerly) the
            classes have different sizes.

    References:
        Brown et al., 2020, "Smooth-AP: Smoothing the Path Towards Large-Scale Image Retrieval",
        arXiv:2007.12163.
    """

    uses_indices_tuple = True

    def __init__(
        self,
        *,
        temperature: float = 0.01,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        if distance is not None and not isinstance(distance, CosineSimilarity):
            raise ValueError(
                f"expected `distance` to be a CosineSimilarity, got {type(distance).__name__}"
            )
        super().__init__(distance=distance, reducer=reducer)
        self.temperature = temperature

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, the only distance the loss accepts."""
        return CosineSimilarity()

    def validate_full(
        self, embeddings: Any, labels: Any, indices_tuple: Any, ref_emb: Any, ref_labels: Any
    ) -> None:
        """The common checks, then (on concrete labels) classes of equal size."""
        super().validate_full(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if checks.is_concrete(labels):
            sizes = np.unique(np.asarray(labels), return_counts=True)[1]
            if len(set(sizes.tolist())) != 1:
                raise ValueError(
                    "expected every class in `labels` to have the same number of samples "
                    f"(SmoothAPLoss; use MPerClassSampler), got class sizes {sizes.tolist()}"
                )

    def compute_full(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any,
        ref_emb: Any,
        ref_labels: Any,
        reducer: Any,
    ) -> jax.Array:
        emb = working(embeddings)
        batch = emb.shape[0]
        sims = self.distance(emb)
        # pytorch-metric-learning ranks within a class on the matrix before ``power``.
        normed = self.distance.maybe_normalize(emb)
        raw = sims if self.distance.power == 1 else self.distance.compute_mat(normed, normed)
        same = labels[:, None] == labels[None, :]

        def branch(index: jax.Array, valid: jax.Array) -> jax.Array:
            pos_sims = jnp.take_along_axis(sims, index, axis=1)
            pos_raw = pos_sims if raw is sims else jnp.take_along_axis(raw, index, axis=1)
            # Padding anchors rank constant rows among one real positive: finite, discarded.
            return map_anchor_blocks(
                lambda *rows: _anchor_ap(*rows, self.temperature),
                (sims, pos_sims, pos_raw, index, valid),
                (0, 0, 0, 0, True),
            )

        ap = switch_on_positives(same, branch)
        sizes = jnp.sum(same, axis=1)
        equal = jnp.all(sizes == sizes[0])
        losses = (1 - ap) * sample_weights(indices_tuple, batch, ap.dtype)
        loss = reducer(losses, jnp.ones_like(losses))
        return jnp.where(equal, loss, jnp.nan)
