"""FastAPLoss: 1 - average precision, from soft histograms of each anchor's distances."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Bool
from jaxtyping import Float

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


def _kernel(
    dist: jax.Array, centre: jax.Array | float, width: float
) -> tuple[jax.Array, jax.Array]:
    """The triangular kernel ``relu(1 - |d - c| / width)`` and its derivative in ``d``,
    ``-sign(d - c) / width`` where the kernel is positive, else 0 (torch's: ``abs`` and ``relu``
    have derivative 0 at 0)."""
    diff = dist - centre
    inside = 1 - safe_abs(diff) / width
    slope = jnp.where(inside > 0, -jnp.sign(diff) / width, jnp.zeros_like(diff))
    return jax.nn.relu(inside), slope


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _soft_histograms(
    dist: Float[Array, "batch batch"],
    positive: Bool[Array, "batch batch"],
    negative: Bool[Array, "batch batch"],
    bins: int,
    top: float,
) -> tuple[Float[Array, "batch bins"], Float[Array, "batch bins"]]:
    r"""Each anchor's soft histograms of its positives' and negatives' distances: ``bins + 1``
    triangular kernels of width ``top / bins`` centred on ``linspace(0, top, bins + 1)``.

    ``dist``, ``positive`` and ``negative`` must be symmetric (the batch against itself).

    A custom VJP. The forward pass reduces (rows, bins + 1, batch) kernels along the last axis,
    above 256 rows in a loop over blocks of 64 anchors (autodiff kept the kernels and both masks
    broadcast to (batch, bins + 1, batch) in memory: five 46 MiB arrays at B = 1024, ten bins;
    XLA's CPU loop for a two-output reduction along that axis was also 3.7x slower than two
    reductions). The backward pass is one (batch, batch) pass over the bins
    and returns the symmetrised cotangent :math:`(A + A^T) / 2` (the same gradient through the
    symmetric distance matrix, whose backward pass then takes one matmul), with
    :math:`A_{aj} = \sum_k \kappa_k'(d_{aj})\, g_{ak}` (:math:`g` the histograms' cotangent of
    the positive or negative side the pair is on); :math:`A^T` comes from the symmetry, not a
    transpose. Reverse mode only.
    """
    return _soft_histograms_fwd(dist, positive, negative, bins, top)[0]


# Anchors per step of the forward pass's loop above this many rows (see _soft_histograms).
_ROWS_PER_STEP = 64
_ONE_STEP_ROWS = 256


def _row_histograms(
    dist: jax.Array, positive: jax.Array, negative: jax.Array, centres: jax.Array, width: float
) -> tuple[jax.Array, jax.Array]:
    """The histograms of a block of anchors (rows): two (rows, bins + 1, batch) reductions
    along the contiguous last axis."""
    pulse, _ = _kernel(dist[:, None, :], centres[None, :, None], width)
    zero = jnp.zeros((), dist.dtype)
    pos_hist = jnp.sum(jnp.where(positive[:, None, :], pulse, zero), axis=2)
    neg_hist = jnp.sum(jnp.where(negative[:, None, :], pulse, zero), axis=2)
    return pos_hist, neg_hist


def _soft_histograms_fwd(
    dist: jax.Array, positive: jax.Array, negative: jax.Array, bins: int, top: float
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, ...]]:
    width = top / bins
    centres = jnp.linspace(0.0, top, bins + 1, dtype=dist.dtype)
    batch = dist.shape[0]
    if batch <= _ONE_STEP_ROWS:
        hists = _row_histograms(dist, positive, negative, centres, width)
    else:
        # Blocks of anchors in a loop, so that the (rows, bins + 1, batch) kernels of a block
        # stay small (whole, they were 46 MiB at B = 1024: fresh pages on every call). Padded
        # rows have no positive and no negative.
        steps = -(-batch // _ROWS_PER_STEP)
        pad = steps * _ROWS_PER_STEP - batch

        def blocks(a: jax.Array) -> jax.Array:
            a = jnp.pad(a, ((0, pad), (0, 0)))
            return a.reshape(steps, _ROWS_PER_STEP, batch)

        pos_hist, neg_hist = jax.lax.map(
            lambda t: _row_histograms(*t, centres, width),
            (blocks(dist), blocks(positive), blocks(negative)),
        )
        hists = (
            pos_hist.reshape(-1, bins + 1)[:batch],
            neg_hist.reshape(-1, bins + 1)[:batch],
        )
    return hists, (dist, positive, negative)


def _soft_histograms_bwd(
    bins: int, top: float, res: tuple[jax.Array, ...], grads: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, None, None]:
    dist, positive, negative = res
    g_pos, g_neg = grads
    width = top / bins
    centres = jnp.linspace(0.0, top, bins + 1, dtype=dist.dtype)
    zero = jnp.zeros_like(dist)
    total = zero
    for k in range(bins + 1):
        _, slope = _kernel(dist, centres[k], width)
        both_pos = g_pos[:, k][:, None] + g_pos[:, k][None, :]
        both_neg = g_neg[:, k][:, None] + g_neg[:, k][None, :]
        side = jnp.where(positive, both_pos, jnp.where(negative, both_neg, zero))
        total = total + slope * side
    return total / 2, None, None


_soft_histograms.defvjp(_soft_histograms_fwd, _soft_histograms_bwd)


@register(
    "fast_ap_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
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
        negative = ~same
        top = 2.0**self.distance.power
        # The batch against itself: a symmetric matrix, whose backward pass takes one matmul
        # given the symmetrised cotangent of _soft_histograms.
        dist = self.distance.self_matrix_symmetric_grad(emb)
        pos_hist, neg_hist = _soft_histograms(dist, positive, negative, self.num_bins, top)
        one, zero = jnp.ones((), dist.dtype), jnp.zeros((), dist.dtype)
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
