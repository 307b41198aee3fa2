"""NCALoss: neighbourhood component analysis, the log-probability of picking a same-class
neighbour."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Bool
from jaxtyping import Float

from calibrax.core.registry import register
from calibrax.metric_learning.base import LossTerm
from calibrax.metric_learning.base import ref_matrix
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.dot_product_similarity import DotProductSimilarity
from calibrax.metric_learning.distances.lp_distance import LpDistance
from calibrax.metric_learning.losses._mined import NonFiniteIsNaN
from calibrax.metric_learning.losses._mined import miner_weights
from calibrax.metric_learning.losses._pair_base import DistanceLoss
from calibrax.metric_learning.losses._pair_base import loss_example
from calibrax.metric_learning.losses._pair_base import neg_big
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._weight_losses import check_positive_number
from calibrax.metric_learning.tuples import Reference

__all__ = ["NCALoss"]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _nca_self_values(
    logits: Float[Array, "batch batch"],
    positive: Bool[Array, "batch batch"],
    neg: float,
    shift: float | None,
) -> Float[Array, " batch"]:
    r"""``-log`` of each row's softmax mass on its positives (``logits`` with ``-inf`` on the
    diagonal, ``positive`` without it), 0 for a row with no positive.

    ``logits`` and ``positive`` must be symmetric (the batch against itself with a symmetric
    distance): the backward pass then returns the symmetrised cotangent
    :math:`(A + A^T)/2`, which gives the same gradient through the symmetric matrix and lets
    the distance's backward pass use one matmul instead of two. :math:`A^T` is computed
    elementwise from the symmetry, :math:`P_{ji} = e^{\ell_{ij} - \operatorname{lse}_j}`,
    not by transposing a (batch, batch) array.

    ``shift``, when given, is an upper bound of the logits whose range is small enough for
    ``exp(logits - shift)`` not to underflow (see :func:`_logit_shift`): the log-sum-exps then
    skip their two row maxima.
    """
    return _nca_self_values_fwd(logits, positive, neg, shift)[0]


def _nca_self_values_fwd(
    logits: jax.Array, positive: jax.Array, neg: float, shift: float | None
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    if shift is None:
        lse = jax.nn.logsumexp(logits, axis=1)
        masked = jnp.where(positive, logits, neg)
        log_pos = jax.nn.logsumexp(masked, axis=1) - lse
    else:
        e = jnp.exp(logits - shift)
        total = jnp.sum(e, axis=1)
        pos_total = jnp.sum(jnp.where(positive, e, jnp.zeros_like(e)), axis=1)
        log_pos = jnp.log(pos_total / total)
    has_positive = jnp.any(positive, axis=1)
    values = jnp.where(has_positive, -log_pos, 0)
    # With a shift the backward pass works from the row sums (one exponential per entry), else
    # from the log-sum-exps.
    stats = (lse, log_pos) if shift is None else (total, pos_total)
    return values, (logits, positive, *stats, has_positive)


def _nca_self_values_bwd(
    neg: float, shift: float | None, res: tuple[jax.Array, ...], grad: jax.Array
) -> tuple[jax.Array, None]:
    del neg
    logits, positive, first, second, has_positive = res
    # d values_i / d logits_ij = P_ij - Q_ij: the row softmax and its renormalisation over the
    # positives (Q_ij = P_ij / P(positives of i) on positives, 0 elsewhere).
    scale = jnp.where(has_positive, grad, jnp.zeros_like(grad)) / 2
    zero = jnp.zeros_like(logits)
    if shift is not None:
        # P_ij = e_ij / total_i and Q_ij = e_ij / pos_total_i with e = exp(logits - shift)
        # (at most 1; the totals are at least exp(-60), see _logit_shift): one exponential.
        total, pos_total = first, second
        by_all = scale / total
        by_pos = jnp.where(has_positive, scale / jnp.where(has_positive, pos_total, 1), 0)
        e = jnp.exp(logits - shift)
        both = (by_all[:, None] + by_all[None, :]) - jnp.where(
            positive, by_pos[:, None] + by_pos[None, :], zero
        )
        return e * both, None
    lse, log_pos = first, second

    def term(shift: jax.Array, pos_shift: jax.Array, weight: jax.Array) -> jax.Array:
        prob = jnp.exp(logits - shift)
        # Q in one exponential (at most 1 on the positives): prob * exp(-pos_shift) would
        # overflow to inf * 0 when the positives' mass is below exp(-88) (float32).
        on_positive = jnp.where(positive, jnp.exp(logits - shift - pos_shift), zero)
        return weight * (prob - on_positive)

    rows = term(lse[:, None], log_pos[:, None], scale[:, None])
    cols = term(lse[None, :], log_pos[None, :], scale[None, :])
    return rows + cols, None


_nca_self_values.defvjp(_nca_self_values_fwd, _nca_self_values_bwd)


def _logit_shift(distance: BaseDistance, scale: float, dtype: Any) -> float | None:
    """The largest possible logit when the logits span a known, short range, else None.

    With L2-normalised embeddings the Euclidean distance lies in [0, 2] (so ``d ** power`` in
    [0, 2 ** power]) and the dot product in [-1, 1], up to rounding. When ``scale`` times that
    range is at most 60 (float32; 600 in float64), ``exp(logit - max possible logit)`` stays
    far above the smallest normal number, so the softmax needs no row maximum.
    """
    if not distance.normalize_embeddings or distance.p != 2:
        return None
    if isinstance(distance, LpDistance):
        low, high = -scale * 2.0**distance.power, 0.0
    elif isinstance(distance, DotProductSimilarity) and distance.power == 1:
        low, high = -scale, scale
    else:
        return None
    limit = 60.0 if jnp.dtype(dtype).itemsize <= 4 else 600.0
    return high if high - low <= limit else None


@register(
    "nca_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=loss_example(lambda: NCALoss()),
)
class NCALoss(NonFiniteIsNaN, DistanceLoss):
    r"""NCA loss, as pytorch-metric-learning 2.9's ``NCALoss``.

    Each sample ``i`` picks a neighbour ``j != i`` with probability
    :math:`p_{ij} \propto e^{-s\, d_{ij}}` (``s = softmax_scale``, ``d`` the squared Euclidean
    distance of normalised embeddings by default; for a similarity, :math:`e^{s\, d_{ij}}`):

    .. math::
        L_i = -\log \sum_{j \ne i,\, y_j = y_i} p_{ij},

    times the sample's miner weight (how often it appears in the mined tuples over the most
    frequent sample, 1 without a miner), averaged over the samples that have a same-class
    neighbour (default :class:`~calibrax.metric_learning.MeanReducer`). A batch of one sample
    gives 0.

    With ``ref_emb`` / ``ref_labels`` the neighbours ``j`` are the reference rows (none left out:
    a copy of sample ``i`` is a neighbour) and the miner weights count the anchor positions only,
    as in pytorch-metric-learning; ``ref_labels`` is then required. When no sample has a
    same-class neighbour the loss is 0 (pytorch-metric-learning averages an empty tensor: NaN).

    The sum is a log-sum-exp of log-probabilities. pytorch-metric-learning takes the log of a
    sum of probabilities and drops the samples whose sum underflows to exactly 0 (only for
    distances hundreds of times larger than ``1 / softmax_scale`` in float32); here such samples
    keep their large, finite loss.

    Args:
        softmax_scale: Multiplier of the negative distances, > 0. Default 1.
        distance: Default :class:`~calibrax.metric_learning.LpDistance` with ``power=2``.
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    Raises:
        ValueError: If ``softmax_scale`` is not a positive number.

    References:
        Goldberger et al., 2004, "Neighbourhood Components Analysis", NeurIPS.
    """

    def __init__(
        self,
        *,
        softmax_scale: float = 1.0,
        distance: BaseDistance | None = None,
        reducer: Any = None,
    ) -> None:
        super().__init__(distance=distance, reducer=reducer)
        check_positive_number(softmax_scale, "softmax_scale")
        self.softmax_scale = float(softmax_scale)

    def default_distance(self) -> BaseDistance:
        """Squared Euclidean distance of normalised embeddings, as in pytorch-metric-learning."""
        return LpDistance(power=2)

    supports_ref = True

    def validate_inputs(
        self,
        embeddings: Any,
        labels: Any,
        indices_tuple: Any = None,
        ref_emb: Any = None,
        ref_labels: Any = None,
    ) -> tuple[jax.Array, jax.Array, Any, Reference | None]:
        """As the base, and ``ref_labels`` is required with ``ref_emb`` (the same-class
        neighbours are the reference rows with the query's label, whatever the pairs)."""
        if ref_emb is not None and ref_labels is None:
            raise ValueError("NCALoss requires `ref_labels` with `ref_emb`, got None")
        return super().validate_inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def compute_terms(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        indices_tuple: Any,
        ref: Reference | None = None,
    ) -> dict[str, LossTerm]:
        return {"loss": self.nca_term(working(embeddings), labels, indices_tuple, ref)}

    def nca_term(
        self,
        query: jax.Array,
        query_labels: jax.Array,
        indices_tuple: Any,
        ref: Reference | None = None,
    ) -> LossTerm:
        """Per-query losses against the reference rows (the batch itself when ``ref`` is None,
        leaving out each sample's own pair; miner weights then count every position of a tuple,
        else only the anchors, as pytorch-metric-learning). Rows outside ``ref.mask`` are no
        neighbours."""
        n_query = query.shape[0]
        if n_query <= 1:  # pytorch-metric-learning: 0 for a batch of one, with or without ref.
            zero = jnp.zeros((n_query,), query.dtype)
            return LossTerm(zero, zero)
        weights = miner_weights(indices_tuple, n_query, query.dtype, anchors_only=ref is not None)
        if ref is None and self.distance.is_symmetric:
            # The batch against itself: a symmetric matrix, whose backward pass takes one matmul
            # given the symmetrised cotangent of _nca_self_values.
            mat = self.distance.self_matrix_symmetric_grad(query)
            logits = self.softmax_scale * (mat if self.distance.is_inverted else -mat)
            eye = jnp.eye(n_query, dtype=bool)
            logits = jnp.where(eye, -jnp.inf, logits)
            positive = (query_labels[:, None] == query_labels[None, :]) & ~eye
            shift = _logit_shift(self.distance, self.softmax_scale, logits.dtype)
            values = _nca_self_values(logits, positive, float(jnp.finfo(logits.dtype).min), shift)
            has_positive = jnp.any(positive, axis=1)
            return LossTerm(values * weights, has_positive.astype(query.dtype))
        if ref is None:
            mat = self.distance(query)
            ref_labels = query_labels
        else:
            mat = ref_matrix(self.distance, query, ref)
            ref_labels = ref.labels
        logits = self.softmax_scale * (mat if self.distance.is_inverted else -mat)
        positive = query_labels[:, None] == ref_labels[None, :]
        if ref is None:
            eye = jnp.eye(n_query, dtype=bool)
            logits = jnp.where(eye, -jnp.inf, logits)
            positive = positive & ~eye
        elif ref.mask is not None:
            logits = jnp.where(ref.mask[None, :], logits, neg_big(logits.dtype))
            positive = positive & ref.mask[None, :]
        log_p = jax.nn.log_softmax(logits, axis=1)
        masked = jnp.where(positive, log_p, neg_big(log_p.dtype))
        log_pos = jax.nn.logsumexp(masked, axis=1)
        has_positive = jnp.any(positive, axis=1)
        if ref is not None and ref.query_mask is not None:
            # The batch is the anchor rows only (CrossBatchMemory's enqueue_mask): 0 for one.
            has_positive = has_positive & (jnp.sum(ref.query_mask) > 1)
        values = jnp.where(has_positive, -log_pos, 0) * weights
        return LossTerm(values, has_positive.astype(query.dtype))
