"""HistogramLoss: the probability that a negative pair is more similar than a positive pair,
from soft histograms of the two similarity distributions."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.losses._mined import NonFiniteIsNaN
from calibrax.metric_learning.losses._pair_base import DistanceLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.tuples import triplet_mask

__all__ = ["HistogramLoss"]


@register(
    "histogram_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=loss_example(lambda: HistogramLoss()),
)
class HistogramLoss(NonFiniteIsNaN, DistanceLoss):
    r"""Histogram loss, as pytorch-metric-learning 2.9's ``HistogramLoss``.

    The similarities of the distinct positive pairs and of the distinct negative pairs (unordered
    pairs taken from all triplets, or from the mined ones) are spread over ``n_bins + 1`` nodes
    :math:`t_r = r\Delta - 1` with linear (triangular) weights, giving two densities
    :math:`p^+` and :math:`p^-`, and

    .. math::
        L = \sum_r p^-_r \sum_{q \le r} p^+_q,

    the estimated probability that a random negative pair is more similar than a random positive
    pair. Already reduced (there is no reducer). The loss is 0 when there is no triplet.

    As in PML, the bin of each similarity is found in float32 (``floor((s + 1) / Δ)``), and the
    node positions ``r Δ`` and ``(r + 1) Δ - 1`` are rounded to float32. A similarity of exactly 1 (duplicate embeddings) falls at the last node;
    its zero weight on the node past the end is dropped (PML indexes past the end of its
    histogram there and raises).

    Args:
        n_bins: Number of bins; ``None`` means ``2 / delta``, or 100 when ``delta`` is also
            None (PML's default).
        delta: Bin width; must equal ``2 / n_bins`` when both are given. Default ``2 / n_bins``.
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity` (the nodes span its
            range [-1, 1]).
        reducer: Unused (the loss is already reduced); accepted for PML's signature.

    Raises:
        ValueError: If ``n_bins`` is not a positive integer, ``delta`` is not a positive number,
            or both are given and ``delta != 2 / n_bins``.

    References:
        Ustinova & Lempitsky, 2016, "Learning Deep Embeddings with Histogram Loss",
        arXiv:1611.00822.
    """

    def __init__(
        self,
        *,
        n_bins: int | None = None,
        delta: float | None = None,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        super().__init__(distance=distance, reducer=reducer)
        if n_bins is not None:
            checks.check_positive_int(n_bins, "n_bins")
        if delta is not None:
            bad = isinstance(delta, bool) or not isinstance(delta, (int, float, np.number))
            if bad or not math.isfinite(float(delta)) or float(delta) <= 0:
                raise ValueError(f"expected `delta` to be a positive number, got {delta!r}")
        if delta is not None and n_bins is not None and delta != 2 / n_bins:
            raise ValueError(
                f"expected `delta` to equal 2 / n_bins = {2 / n_bins!r}, got delta={delta!r} "
                f"and n_bins={n_bins!r}"
            )
        if delta is None and n_bins is None:
            n_bins = 100
        self.delta = float(delta) if delta is not None else 2 / n_bins
        self.num_nodes = round(1 + 2 / self.delta)

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, as in pytorch-metric-learning."""
        return CosineSimilarity()

    def density(self, sim: jax.Array, pairs: jax.Array) -> jax.Array:
        """The soft histogram (``num_nodes``,) of the entries of ``sim`` where ``pairs``."""
        delta = self.delta
        node = jnp.floor((sim.astype(jnp.float32) + 1) / delta).astype(jnp.int32)
        # PML's ``r * delta`` and ``(r + 1) * delta - 1`` are float32 (a long tensor times a
        # Python float), rounded before they meet the similarities: tabulated here with numpy's
        # float32 arithmetic, so that XLA cannot fuse them into a multiply-add.
        r = np.arange(self.num_nodes + 1, dtype=np.float32)
        left_table = jnp.asarray(r * np.float32(delta), sim.dtype)
        right_table = jnp.asarray((r + 1) * np.float32(delta) - np.float32(1), sim.dtype)
        pairs = pairs & (node >= 0) & (node < self.num_nodes)
        node = jnp.where(pairs, node, self.num_nodes)  # out of range: dropped below
        upper_weight = jnp.where(pairs, (sim + 1 - left_table[node]) / delta, 0)
        lower_weight = jnp.where(pairs, (right_table[node] - sim) / delta, 0)
        hist = jnp.zeros((self.num_nodes,), sim.dtype)
        hist = hist.at[(node + 1).ravel()].add(upper_weight.ravel(), mode="drop")
        hist = hist.at[node.ravel()].add(lower_weight.ravel(), mode="drop")
        size = jnp.maximum(jnp.sum(pairs, dtype=jnp.int32), 1).astype(sim.dtype)
        return hist / size

    def compute_terms(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any
    ) -> dict[str, LossTerm]:
        sim = self.distance(working(embeddings))
        triplets = triplet_mask(indices_tuple, labels, sim.dtype)
        pos_count, neg_count = triplets.pair_counts()
        upper = jnp.triu(jnp.ones(sim.shape, bool), k=1)
        # Unordered pairs {i, j} that some triplet uses as (anchor, positive) / (anchor, negative).
        pos = (pos_count > 0) | (pos_count.T > 0)
        neg = (neg_count > 0) | (neg_count.T > 0)
        p_pos = self.density(sim, pos & upper)
        p_neg = self.density(sim, neg & upper)
        loss = jnp.sum(p_neg * jnp.cumsum(p_pos))
        loss = jnp.where(jnp.any(pos_count > 0), loss, jnp.zeros_like(loss))
        return {"loss": LossTerm(loss, jnp.ones_like(loss), reduced=True)}
