"""ManifoldLoss: proxies and embeddings on one similarity graph, compared after a random walk."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.cosine_similarity import CosineSimilarity
from calibrax.metric_learning.losses._pair_base import working
from calibrax.metric_learning.losses._standard_call import StandardDistanceLoss
from calibrax.metric_learning.losses._weight_losses import l2_normalize

__all__ = ["ManifoldLoss"]


def _example() -> tuple[Any, tuple[jax.Array]]:
    embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)

    def fn(e: jax.Array) -> jax.Array:
        return ManifoldLoss(4, K=3, rngs=nnx.Rngs(0))(e)

    return fn, (embeddings,)


def _margin_softplus_mean(
    scores: jax.Array, meta: jax.Array, margin: float, n_proxies: int
) -> jax.Array:
    """``mean_i log(1 + Σ_{k ≠ m_i, z_ik ≥ 0} e^{z_ik})`` with ``z_ik = scores_ik - scores_{i m_i}
    + margin``: the hinge on each sample's own meta-class proxy, as pytorch-metric-learning's
    (entries below 0, and the own proxy, are left out rather than clamped)."""
    own = jax.nn.one_hot(meta, n_proxies, dtype=bool)
    z = scores - jnp.sum(jnp.where(own, scores, 0), axis=1, keepdims=True) + margin
    keep = ~own & (z >= 0)
    terms = jnp.where(keep, jnp.exp(jnp.where(keep, z, 0)), 0)
    return jnp.mean(jnp.log1p(jnp.sum(terms, axis=1)))


@register(
    "manifold_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=_example,
)
class ManifoldLoss(StandardDistanceLoss):
    r"""Manifold (ensemble deep manifold similarity) loss, as pytorch-metric-learning's
    ``ManifoldLoss``.

    The ``N`` embeddings and the ``K`` learned proxies form one graph with affinities
    ``S = exp(max(cos, 0) / 0.5)`` (no self-loops), normalised ``S̄ = D^{-1/2} S D^{-1/2}``; the
    random walk's closed form ``F = (1 - α)(I - α S̄)^{-1}`` spreads similarity along the
    manifold. Each embedding ``i`` belongs to a meta-class proxy ``m_i``; with
    ``z_{ik} = F_{ik} - F_{i m_i} + margin`` (intrinsic, on the embedding-to-proxy block of ``F``)
    and the same on the cosine similarities between rows of ``F`` (context),

    .. math::
        L = \operatorname{mean}_i \log\Big(1 + \sum_{k ≠ m_i,\, z_{ik} ≥ 0} e^{z_{ik}}\Big)_{int}
          + λ_C \operatorname{mean}_i \log\Big(1 + \sum_{k ≠ m_i,\, z_{ik} ≥ 0}
          e^{z_{ik}}\Big)_{ctx}

    Labels are not used. The meta-classes come from ``indices_tuple`` (an integer array of shape
    (N,) in ``[0, K)``, as pytorch-metric-learning takes them) or, when it is None, are drawn
    at random: every proxy once and ``N - K`` uniformly, shuffled (so ``N >= K`` is needed), from
    the ``meta_classes`` stream of ``rngs`` (``rngs.meta_classes``, falling back to the default
    stream), which each call advances. The result is already a scalar (``reducer`` is not
    applied, as in pytorch-metric-learning).

    Differs from pytorch-metric-learning: its inverse runs in float32 whatever the input dtype
    (a cast added for half precision); here it runs in the working dtype (float32 for half
    inputs). With ``lambdaC = inf`` pytorch-metric-learning returns ``0 + inf * L_ctx`` (inf, or
    NaN); here that setting means "context loss only", as its docstring says.

    Args:
        l: The embedding size (PML's name).
        K: Number of proxies (default 50).
        lambdaC: ``λ_C >= 0``, the context term's weight (default 1; ``inf``: context only).
        alpha: The random walk's ``α`` in (0, 1) (default 0.8).
        margin: Default 5e-4.
        distance: Default :class:`~calibrax.metric_learning.CosineSimilarity` (the only one
            accepted).
        reducer: Accepted for a uniform signature; not applied.
        param_dtype: dtype of the proxies (default float32).
        rngs: ``rngs.params()`` draws the proxies (standard normal, as ``torch.randn``);
            ``rngs.meta_classes`` the meta-classes.

    Raises:
        ValueError: If ``l`` or ``K`` is not a positive integer, ``lambdaC`` is negative or
            ``distance`` is not a :class:`~calibrax.metric_learning.CosineSimilarity`; at call
            time, if labels or ``ref_emb`` are given, the embedding size is not ``l``, the
            meta-classes are not an integer (N,) array (eagerly: in ``[0, K)``), or fewer than
            ``K`` embeddings come without meta-classes.

    References:
        Aziere and Todorovic, 2019, "Ensemble Deep Manifold Similarity Learning using Hard
        Proxies", CVPR.
    """

    uses_labels = "unsupported"

    def __init__(
        self,
        l: int,
        *,
        K: int = 50,
        lambdaC: float = 1.0,
        alpha: float = 0.8,
        margin: float = 5e-4,
        distance: BaseDistance | None = None,
        reducer: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        checks.check_positive_int(l, "l")
        checks.check_positive_int(K, "K")
        if not lambdaC >= 0:
            raise ValueError(f"expected `lambdaC` to be non-negative, got {lambdaC!r}")
        if distance is not None and not isinstance(distance, CosineSimilarity):
            raise ValueError(
                f"expected `distance` to be a CosineSimilarity, got {type(distance).__name__}"
            )
        super().__init__(distance=distance, reducer=reducer)
        self.l = int(l)
        self.K = int(K)
        self.lambdaC = float(lambdaC)
        self.alpha = alpha
        self.margin = margin
        self.proxies = nnx.Param(jax.random.normal(rngs.params(), (self.K, self.l), param_dtype))
        self.meta_rngs = rngs.meta_classes.fork()

    def default_distance(self) -> BaseDistance:
        """Cosine similarity, the only distance the loss accepts."""
        return CosineSimilarity()

    def validate_full(
        self, embeddings: Any, labels: Any, indices_tuple: Any, ref_emb: Any, ref_labels: Any
    ) -> None:
        """The common checks, then the embedding size and the meta-classes."""
        super().validate_full(embeddings, labels, None, ref_emb, ref_labels)
        checks.check_dim(embeddings, 1, self.l, "embeddings", "embedding size `l`")
        batch = embeddings.shape[0]
        if indices_tuple is None:
            if batch < self.K:
                raise ValueError(
                    f"expected at least K={self.K} embeddings to draw the meta-classes, got "
                    f"{batch} (or pass them as `indices_tuple`)"
                )
            return
        checks.check_rank(indices_tuple, 1, "indices_tuple", "batch: meta-class per sample")
        checks.check_integer(indices_tuple, "indices_tuple")
        checks.check_same_length(embeddings, indices_tuple, "embeddings", "indices_tuple")
        checks.check_labels_in_range(indices_tuple, self.K, "indices_tuple")

    def sample_meta_classes(self, batch: int) -> jax.Array:
        """(batch,) int32 meta-classes: each proxy once, ``batch - K`` uniform draws, shuffled
        (advances ``rngs.meta_classes``)."""
        key = self.meta_rngs()
        draw_key, perm_key = jax.random.split(key)
        extra = jax.random.randint(draw_key, (batch - self.K,), 0, self.K, jnp.int32)
        meta = jnp.concatenate([jnp.arange(self.K, dtype=jnp.int32), extra])
        return jax.random.permutation(perm_key, meta)

    def compute_full(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Any,
        indices_tuple: Int[Array, " batch"] | None,
        ref_emb: Any,
        ref_labels: Any,
        reducer: Any,
    ) -> jax.Array:
        emb = working(embeddings)
        n = emb.shape[0]
        meta = (
            self.sample_meta_classes(n)
            if indices_tuple is None
            else jnp.asarray(indices_tuple).astype(jnp.int32)
        )
        nodes = jnp.concatenate([emb, self.proxies[...].astype(emb.dtype)], axis=0)
        size = nodes.shape[0]
        eye = jnp.eye(size, dtype=bool)
        sims = jnp.exp(jnp.clip(self.distance(nodes), 0, None) / 0.5)
        sims = jnp.where(eye, jnp.zeros_like(sims), sims)
        inv_sqrt = jax.lax.rsqrt(jnp.sum(sims, axis=1))
        s_bar = inv_sqrt[:, None] * sims * inv_sqrt[None, :]
        walk = (1 - self.alpha) * jnp.linalg.inv(eye.astype(emb.dtype) - self.alpha * s_bar)
        f_e, f_p = walk[:n], walk[n:]
        ctx_scores = l2_normalize(f_e, axis=1) @ l2_normalize(f_p, axis=1).T
        loss_ctx = _margin_softplus_mean(ctx_scores, meta, self.margin, self.K)
        if math.isinf(self.lambdaC):
            return loss_ctx
        loss_int = _margin_softplus_mean(f_e[:, n:], meta, self.margin, self.K)
        return loss_int + self.lambdaC * loss_ctx
