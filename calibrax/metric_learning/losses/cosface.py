"""CosFace: additive cosine margin on the target class's logit."""

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

__all__ = ["CosFaceLoss"]


@register(
    "cosface_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=weight_loss_example(lambda: CosFaceLoss(3, 4, rngs=nnx.Rngs(0))),
)
class CosFaceLoss(ClassWeightLoss):
    r"""CosFace (large margin cosine) loss: cross-entropy with the margin subtracted from the cosine.

    .. math::
        \ell_i = -\log \frac{e^{s (\cos\theta_{iy_i} - m)}}
            {e^{s (\cos\theta_{iy_i} - m)} + \sum_{j \ne y_i} e^{s \cos\theta_{ij}}},

    averaged over the batch, where :math:`\theta_{ij}` is the angle between embedding :math:`x_i`
    and class weight :math:`w_j` (both L2-normalised). Defaults (``margin=0.35``, ``scale=64``,
    standard-normal weights) are pytorch-metric-learning 2.9's.

    Attributes:
        W: Class weights, ``nnx.Param`` of shape ``(embedding_size, num_classes)`` (the layout of
            pytorch-metric-learning's ``CosFaceLoss.W``).

    Args:
        num_classes: Number of classes.
        embedding_size: Dimension of the embeddings.
        margin: Cosine margin, >= 0.
        scale: Multiplier of the cosines, > 0.
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
        Wang et al., 2018, "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
        arXiv:1801.09414.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        margin: float = 0.35,
        scale: float = 64.0,
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
        check_positive_number(scale, "scale")
        if not margin >= 0:
            raise ValueError(f"expected `margin` to be >= 0, got {margin!r}")
        self.margin = float(margin)
        self.scale = float(scale)
        self.W = nnx.Param(
            jax.random.normal(rngs.params(), (embedding_size, num_classes), param_dtype)
        )

    def cosine(self, embeddings: Float[Array, "batch dim"]) -> Float[Array, "batch classes"]:
        """Cosine similarity of each embedding with each class weight, shape (batch, classes)."""
        weights = l2_normalize(self.W[...].astype(embeddings.dtype), axis=0)
        return l2_normalize(embeddings, axis=1) @ weights

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        cosine = self.cosine(embeddings)
        target_mask = jax.nn.one_hot(labels, self.num_classes, dtype=cosine.dtype)
        logits = (cosine - self.margin * target_mask) * self.scale
        return cross_entropy(logits, labels)
