"""FastAPLoss: 1 - average precision, from soft histograms of each anchor's distances."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.base_distance import safe_abs
from calibrax.metric_learning.distances.lp_distance import LpDistance
from calibrax.metric_learning.losses._mined import NonFiniteIsNaN
from calibrax.metric_learning.losses._mined import miner_weights
from calibrax.metric_learning.losses._pair_base import DistanceLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import working

__all__ = ["FastAPLoss"]


@register(
    "fast_ap_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=loss_example(lambda: FastAPLoss()),
)
class FastAPLoss(NonFiniteIsNaN, DistanceLoss):
    r"""FastAP loss, as pytorch-metric-learning 2.9's ``FastAPLoss``.

    Each anchor's distances to its positives and to its negatives (all of them, from the labels)
    are spread over ``num_bins + 1`` evenly spaced centres :math:`c_k` on
    :math:`[0, 2^{\text{power}}]` with triangular kernels of width
    :math:`\Delta = 2^{\text{power}} / \text{num\_bins}`, giving histograms :math:`h^+_k` and
    :math:`h_k = h^+_k + h^-_k`, and with cumulative sums :math:`H^+_k`, :math:`H_k`:

    .. math::
        \mathrm{FastAP}_a = \frac{1}{N^+_a} \sum_k \frac{h^+_k H^+_k}{H_k}, \qquad
        L_a = (1 - \mathrm{FastAP}_a)\, w_a,

    (terms with :math:`h^+_k H^+_k = 0` or :math:`H_k = 0` left out), averaged over the anchors
    that have a positive (default :class:`~calibrax.metric_learning.MeanReducer`); :math:`w_a` is
    the anchor's miner weight (a miner changes only these weights, as in PML). The loss is 0 when
    no anchor has a positive or no histogram term survives.

    Args:
        num_bins: Number of histogram bins, a positive integer. Default 10.
        distance: :class:`~calibrax.metric_learning.LpDistance` with ``p=2`` and normalised
            embeddings; default ``power=2`` (squared distances, on [0, 4]).
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    Raises:
        ValueError: If ``num_bins`` is not a positive integer or ``distance`` is not a
            normalised Euclidean :class:`~calibrax.metric_learning.LpDistance`.

    References:
        Cakir et al., 2019, "Deep Metric Learning to Rank", CVPR.
    """

    def __init__(
        self, *, num_bins: int = 10, distance: BaseDistance | None = None, reducer: Any = None
    ) -> None:
        super().__init__(distance=distance, reducer=reducer)
        checks.check_positive_int(num_bins, "num_bins")
        dist = self.distance
        if not (isinstance(dist, LpDistance) and dist.p == 2 and dist.normalize_embeddings):
            raise ValueError(
                "expected `distance` to be LpDistance(normalize_embeddings=True, p=2, power=...), "
                f"got {dist!r}"
            )
        self.num_bins = int(num_bins)

    def default_distance(self) -> BaseDistance:
        """Squared Euclidean distance of normalised embeddings, as in pytorch-metric-learning."""
        return LpDistance(power=2)

    def compute_terms(
        self, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any
    ) -> dict[str, LossTerm]:
        emb = working(embeddings)
        batch = emb.shape[0]
        weights = miner_weights(indices_tuple, batch, emb.dtype)
        same = labels[:, None] == labels[None, :]
        positive = same & ~jnp.eye(batch, dtype=bool)
        dist = self.distance(emb)
        top = 2.0**self.distance.power
        width = top / self.num_bins
        centres = jnp.linspace(0.0, top, self.num_bins + 1, dtype=dist.dtype)
        # (anchor, other, bin) kernel weights, reduced over the other sample: XLA fuses the
        # broadcast into the two reductions, without a (B, B, bins) array.
        pulse = jax.nn.relu(1 - safe_abs(dist[:, :, None] - centres[None, None, :]) / width)
        one, zero = jnp.ones((), dist.dtype), jnp.zeros((), dist.dtype)
        pos_hist = jnp.sum(pulse * jnp.where(positive, one, zero)[:, :, None], axis=1)
        neg_hist = jnp.sum(pulse * jnp.where(same, zero, one)[:, :, None], axis=1)
        pos_total = jnp.cumsum(pos_hist, axis=1)
        total = jnp.cumsum(pos_hist + neg_hist, axis=1)
        product = pos_hist * pos_total
        kept = (product > 0) & (total > 0)
        ap = jnp.sum(jnp.where(kept, product / jnp.where(kept, total, one), zero), axis=1)
        n_pos = jnp.sum(positive, axis=1)
        has_pos = n_pos > 0
        ap = ap / jnp.maximum(n_pos, 1).astype(dist.dtype)
        valid = has_pos & jnp.any(kept)
        values = jnp.where(valid, (1 - ap) * weights, zero)
        return {"loss": LossTerm(values, jnp.where(valid, one, zero))}
