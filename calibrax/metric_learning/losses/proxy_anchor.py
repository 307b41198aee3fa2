"""Proxy Anchor: each class proxy pulls its samples in and pushes the others out."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.metric_learning.losses._weight_losses import ClassWeightLoss
from calibrax.metric_learning.losses._weight_losses import check_positive_number
from calibrax.metric_learning.losses._weight_losses import l2_normalize
from calibrax.metric_learning.losses._weight_losses import weight_loss_example
from calibrax.metric_learning.reducers import BaseReducer

__all__ = ["ProxyAnchorLoss"]


def _log1p_sum_exp(
    x: Float[Array, "batch classes"], keep: Float[Array, "batch classes"]
) -> Float[Array, " classes"]:
    """``log(1 + sum_i keep[i, c] exp(x[i, c]))`` per column, stable for large ``x``."""
    masked = jnp.where(keep > 0, x, -jnp.inf)
    with_one = jnp.concatenate([masked, jnp.zeros((1, x.shape[1]), x.dtype)], axis=0)
    return jax.nn.logsumexp(with_one, axis=0)


@register(
    "proxy_anchor_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=weight_loss_example(lambda: ProxyAnchorLoss(3, 4, rngs=nnx.Rngs(0))),
)
class ProxyAnchorLoss(ClassWeightLoss):
    r"""Proxy Anchor loss.

    With :math:`s_{ic}` the cosine between embedding :math:`x_i` and proxy :math:`p_c`,
    :math:`P^+` the classes present in the batch and :math:`C` the number of classes,

    .. math::
        \ell = \frac{1}{|P^+|} \sum_{c \in P^+} \log\Big(1 + \sum_{i: y_i = c}
            e^{-\alpha (s_{ic} - \delta)}\Big)
          + \frac{1}{C} \sum_{c} \log\Big(1 + \sum_{i: y_i \ne c} e^{\alpha (s_{ic} + \delta)}\Big).

    Defaults (``margin=0.1``, ``alpha=32``, proxies drawn from a normal with standard deviation
    :math:`\sqrt{2 / C}` (Kaiming, fan-out), cosine similarity, these two divisors) are
    pytorch-metric-learning 2.9's.

    Attributes:
        proxies: Class proxies, ``nnx.Param`` of shape ``(num_classes, embedding_size)`` (the
            layout of pytorch-metric-learning's ``ProxyAnchorLoss.proxies``).

    Args:
        num_classes: Number of classes.
        embedding_size: Dimension of the embeddings.
        margin: The margin :math:`\delta`.
        alpha: The scale :math:`\alpha`, > 0.
        weight_regularizer: Optional regularizer of the class weights (one row per class or
            sub-centre), from :mod:`calibrax.metric_learning.regularizers`; ``weight_reg_weight``
            times its value is added to the loss (default weight 1), as in
            pytorch-metric-learning.
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: ``None`` divides the two sums as above. A reducer instead reduces each of the
            two per-proxy terms over all ``num_classes`` proxies (as in pytorch-metric-learning,
            where a class without positives has a positive term of 0), and the two are added.
        param_dtype: dtype of ``proxies``.
        rngs: Random generators; ``rngs.params()`` initialises ``proxies``.

    Raises:
        ValueError: If a hyperparameter is out of range.

    References:
        Kim et al., 2020, "Proxy Anchor Loss for Deep Metric Learning", arXiv:2003.13911.
    """

    def class_weights(self) -> jax.Array:
        """The proxies, (num_classes, embedding_size)."""
        return self.proxies[...]

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        margin: float = 0.1,
        alpha: float = 32.0,
        reducer: BaseReducer | None = None,
        weight_regularizer: Any = None,
        weight_reg_weight: float = 1.0,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(
            num_classes,
            embedding_size,
            reducer,
            weight_regularizer=weight_regularizer,
            weight_reg_weight=weight_reg_weight,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
        )
        check_positive_number(alpha, "alpha")
        if not math.isfinite(margin):
            raise ValueError(f"expected `margin` to be finite, got {margin!r}")
        self.margin = float(margin)
        self.alpha = float(alpha)
        std = math.sqrt(2.0 / num_classes)
        self.proxies = nnx.Param(
            std * jax.random.normal(rngs.params(), (num_classes, embedding_size), param_dtype)
        )

    def _loss(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        miner_weights: Float[Array, " batch"],
    ) -> Float[Array, ""]:
        proxies = l2_normalize(self.proxies[...].astype(embeddings.dtype), axis=1)
        cosine = l2_normalize(embeddings, axis=1) @ proxies.T
        positive = jax.nn.one_hot(labels, self.num_classes, dtype=cosine.dtype)
        # pytorch-metric-learning adds (miner weight - 1) to every exponent of a sample.
        shift = (miner_weights - 1)[:, None]
        pos_term = _log1p_sum_exp(self.alpha * (self.margin - cosine) + shift, positive)
        neg_term = _log1p_sum_exp(self.alpha * (cosine + self.margin) + shift, 1 - positive)
        if self.reducer is not None:
            ones = jnp.ones_like(pos_term)
            return self.reducer(pos_term, ones) + self.reducer(neg_term, ones)
        num_with_positives = jnp.sum(jnp.max(positive, axis=0))
        return jnp.sum(pos_term) / num_with_positives + jnp.sum(neg_term) / self.num_classes
