"""VICRegLoss: variance-invariance-covariance regularisation between two views of a batch."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._standard_call import StandardCallLoss
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype

__all__ = ["VICRegLoss"]


def _example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(jax.random.key(0))
    emb = jax.random.normal(keys[0], (8, 4), jnp.float32)
    ref = jax.random.normal(keys[1], (8, 4), jnp.float32)

    def fn(e: jax.Array, r: jax.Array) -> jax.Array:
        return VICRegLoss()(e, ref_emb=r)

    return fn, (emb, ref)


@register(
    "vicreg_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=_example,
)
class VICRegLoss(StandardCallLoss):
    r"""VICReg, as pytorch-metric-learning's ``VICRegLoss``: ``loss(z, ref_emb=z')``.

    Row ``i`` of ``embeddings`` (``Z``) and of ``ref_emb`` (``Z'``) are two views of one sample:

    .. math::
        L = λ\, s(Z, Z') + μ\,[v(Z) + v(Z')] + ν\,[c(Z) + c(Z')]

    with the invariance ``s`` the mean over samples of ``mean_d (z - z')²``, the variance
    ``v(Z) = mean_d [1 - sqrt(var(Z_{:d}) + ε)]_+ / 2`` (unbiased variance over the batch) and the
    covariance ``c(Z) = sum_{d≠e} cov(Z)_{de}² / D``. The invariance and the two variance terms
    are reduced by ``reducer`` (per sample, per dimension; default mean) and the covariance term
    is added as it is. ``ref_emb=None`` compares the batch with itself, as pytorch-metric-learning
    does (the invariance term is then 0). Labels and mined tuples are not used.

    Args:
        invariance_lambda: ``λ`` (default 25).
        variance_mu: ``μ`` (default 25).
        covariance_v: ``ν`` (default 1).
        eps: ``ε`` (default 1e-4).
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    Raises:
        ValueError: (at call time) if ``labels``, ``ref_labels`` or ``indices_tuple`` is given,
            if ``ref_emb`` does not have the shape of ``embeddings``, or if there are fewer than
            2 samples (the unbiased variance needs 2).

    References:
        Bardes et al., 2022, "VICReg: Variance-Invariance-Covariance Regularization for
        Self-Supervised Learning", arXiv:2105.04906.
    """

    uses_labels = "unsupported"
    uses_ref = True

    def __init__(
        self,
        *,
        invariance_lambda: float = 25.0,
        variance_mu: float = 25.0,
        covariance_v: float = 1.0,
        eps: float = 1e-4,
        reducer: Any = None,
    ) -> None:
        super().__init__(reducer=reducer)
        self.invariance_lambda = invariance_lambda
        self.variance_mu = variance_mu
        self.covariance_v = covariance_v
        self.eps = eps

    def validate_full(
        self, embeddings: Any, labels: Any, indices_tuple: Any, ref_emb: Any, ref_labels: Any
    ) -> None:
        """The common checks, then: ``ref_emb`` of the same shape, at least 2 samples."""
        super().validate_full(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if ref_emb is not None:
            checks.check_same_shape(embeddings, ref_emb, "embeddings", "ref_emb")
        checks.check_min_samples(embeddings, 2, "embeddings")

    def _variance(self, z: Float[Array, "batch dim"]) -> Float[Array, " dim"]:
        std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + self.eps)
        return jax.nn.relu(1 - std) / 2

    @staticmethod
    def _covariance(z: Float[Array, "batch dim"]) -> Float[Array, ""]:
        n, d = z.shape
        zc = z - jnp.mean(z, axis=0, keepdims=True)
        cov = (zc.T @ zc) / (n - 1)
        off = ~jnp.eye(d, dtype=bool)
        return jnp.sum(jnp.where(off, cov * cov, jnp.zeros_like(cov))) / d

    def compute_full(
        self,
        embeddings: jax.Array,
        labels: jax.Array | None,
        indices_tuple: Any,
        ref_emb: jax.Array | None,
        ref_labels: jax.Array | None,
        reducer: Any,
    ) -> jax.Array:
        z = working(embeddings)
        zr = z if ref_emb is None else working(ref_emb)
        invariance = self.invariance_lambda * jnp.mean((z - zr) ** 2, axis=1)
        var1 = self.variance_mu * self._variance(z)
        var2 = self.variance_mu * self._variance(zr)
        covariance = self.covariance_v * (self._covariance(z) + self._covariance(zr))
        total = covariance.astype(accumulation_dtype(z.dtype))
        for values in (invariance, var1, var2):
            total = total + reducer(values, jnp.ones_like(values)).astype(total.dtype)
        return total
