"""Normalized softmax: cross-entropy over temperature-scaled cosines with class weights."""

from __future__ import annotations

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
from calibrax.metric_learning.losses._weight_losses import cross_entropy
from calibrax.metric_learning.losses._weight_losses import l2_normalize
from calibrax.metric_learning.losses._weight_losses import weight_loss_example
from calibrax.metric_learning.reducers import BaseReducer

__all__ = ["NormalizedSoftmaxLoss"]


@register(
    "normalized_softmax_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=weight_loss_example(lambda: NormalizedSoftmaxLoss(3, 4, rngs=nnx.Rngs(0))),
)
class NormalizedSoftmaxLoss(ClassWeightLoss):
    r"""Normalized softmax loss: cross-entropy over cosines divided by a temperature.

    .. math::
        \ell_i = -\log \frac{e^{\hat x_i \cdot \hat w_{y_i} / T}}{\sum_j e^{\hat x_i \cdot \hat w_j / T}},

    averaged over the batch, where hats denote L2-normalised embeddings and class weights.
    Defaults (``temperature=0.05``, standard-normal weights) are pytorch-metric-learning 2.9's.

    Attributes:
        W: Class weights, ``nnx.Param`` of shape ``(embedding_size, num_classes)`` (the layout of
            pytorch-metric-learning's ``NormalizedSoftmaxLoss.W``).

    Args:
        num_classes: Number of classes.
        embedding_size: Dimension of the embeddings.
        temperature: Divides the cosines, > 0.
        weight_regularizer: Optional regularizer of the class weights (one row per class or
            sub-centre), from :mod:`calibrax.metric_learning.regularizers`; ``weight_reg_weight``
            times its value is added to the loss (default weight 1), as in
            pytorch-metric-learning.
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Turns the per-sample losses into the loss; ``None`` is the mean.
        param_dtype: dtype of ``W``.
        rngs: Random generators; ``rngs.params()`` initialises ``W``.

    Raises:
        ValueError: If a hyperparameter is out of range.

    References:
        Zhai & Wu, 2018, "Classification is a Strong Baseline for Deep Metric Learning",
        arXiv:1811.12649.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        temperature: float = 0.05,
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
        check_positive_number(temperature, "temperature")
        self.temperature = float(temperature)
        self.W = nnx.Param(
            jax.random.normal(rngs.params(), (embedding_size, num_classes), param_dtype)
        )

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        weights = l2_normalize(self.W[...].astype(embeddings.dtype), axis=0)
        logits = (l2_normalize(embeddings, axis=1) @ weights) / self.temperature
        return cross_entropy(logits, labels)
