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
from calibrax.metric_learning.losses._sample_weights import sample_weights
from calibrax.metric_learning.losses._standard_call import StandardDistanceLoss

__all__ = ["SmoothAPLoss"]


def _example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
    embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
    labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32)

    def fn(e: jax.Array, l: jax.Array) -> jax.Array:
        return SmoothAPLoss()(e, l)

    return fn, (embeddings, labels)


def _anchor_ap(sims: jax.Array, raw: jax.Array, same: jax.Array, temperature: float) -> jax.Array:
    """Smoothed AP of a block of anchors: ``sims``/``raw`` (n, B) rows, ``same`` (n, B) bool."""
    batch = sims.shape[1]
    off = ~jnp.eye(batch, dtype=bool)[None]
    # [a, l, m]: how much m is ranked above l for anchor a (l = the candidate positive).
    above_all = jax.nn.sigmoid((sims[:, None, :] - sims[:, :, None]) / temperature)
    above_pos = jax.nn.sigmoid((raw[:, None, :] - raw[:, :, None]) / temperature)
    zero = jnp.zeros_like(above_all)
    all_rank = 1 + jnp.sum(jnp.where(off, above_all, zero), axis=2)
    pos_rank = 1 + jnp.sum(jnp.where(off & same[:, None, :], above_pos, zero), axis=2)
    ratio = jnp.where(same, pos_rank / all_rank, jnp.zeros_like(all_rank))
    group = jnp.sum(same, axis=1).astype(sims.dtype)
    return jnp.sum(ratio, axis=1) / group


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

    Cost: every anchor ranks every pair of samples, O(B³) sigmoids (as pytorch-metric-learning),
    evaluated in anchor blocks of O(B²) memory (pytorch-metric-learning holds (B, B, B) arrays).

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
        # Padding anchors rank constant rows within one class: finite, and discarded.
        ap = map_anchor_blocks(
            lambda s, r, m: _anchor_ap(s, r, m, self.temperature), (sims, raw, same), (0, 0, True)
        )
        sizes = jnp.sum(same, axis=1)
        equal = jnp.all(sizes == sizes[0])
        losses = (1 - ap) * sample_weights(indices_tuple, batch, ap.dtype)
        loss = reducer(losses, jnp.ones_like(losses))
        return jnp.where(equal, loss, jnp.nan)
