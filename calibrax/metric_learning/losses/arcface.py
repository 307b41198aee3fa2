"""ArcFace: additive angular margin on the angle between an embedding and its class weight."""

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
from calibrax.metric_learning.losses._weight_losses import cross_entropy
from calibrax.metric_learning.losses._weight_losses import l2_normalize
from calibrax.metric_learning.losses._weight_losses import safe_arccos
from calibrax.metric_learning.losses._weight_losses import weight_loss_example
from calibrax.metric_learning.reducers import BaseReducer

__all__ = ["ArcFaceLoss"]


def arcface_logits(
    cosine: Float[Array, "batch classes"],
    labels: Int[Array, " batch"],
    margin_radians: float,
    scale: float,
) -> Float[Array, "batch classes"]:
    """Scaled logits with ``cos(theta + m)`` in place of the target class's cosine.

    Where ``theta + m`` would pass pi the target logit is ``cos(theta) - m sin(m)`` instead, which
    keeps the logit decreasing in ``theta`` (pytorch-metric-learning's and insightface's choice).
    """
    num_classes = cosine.shape[1]
    target_mask = jax.nn.one_hot(labels, num_classes, dtype=cosine.dtype)
    target_cos = jnp.take_along_axis(cosine, labels[:, None], axis=1)[:, 0]
    angles = safe_arccos(target_cos)
    with_margin = jnp.where(
        angles <= math.pi - margin_radians,
        jnp.cos(angles + margin_radians),
        jnp.cos(angles) - margin_radians * math.sin(margin_radians),
    )
    logits = cosine + target_mask * (with_margin - target_cos)[:, None]
    return logits * scale


@register(
    "arcface_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=weight_loss_example(lambda: ArcFaceLoss(3, 4, rngs=nnx.Rngs(0))),
)
class ArcFaceLoss(ClassWeightLoss):
    r"""ArcFace loss: softmax cross-entropy with an additive angular margin.

    With :math:`\theta_{ij}` the angle between embedding :math:`x_i` and class weight :math:`w_j`,

    .. math::
        \ell_i = -\log \frac{e^{s \cos(\theta_{iy_i} + m)}}
            {e^{s \cos(\theta_{iy_i} + m)} + \sum_{j \ne y_i} e^{s \cos\theta_{ij}}},

    averaged over the batch. Embeddings and weights are L2-normalised first, so their norms do not
    matter. The defaults (``margin=28.6`` degrees, i.e. 0.5 rad, ``scale=64``, weights drawn from
    a standard normal) are pytorch-metric-learning 2.9's.

    Attributes:
        W: Class weights, ``nnx.Param`` of shape ``(embedding_size, num_classes)`` (the layout of
            pytorch-metric-learning's ``ArcFaceLoss.W``).

    Args:
        num_classes: Number of classes.
        embedding_size: Dimension of the embeddings.
        margin: Angular margin in degrees, in ``[0, 180)``.
        scale: Multiplier of the cosines (the inverse temperature), > 0.
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
        Deng et al., 2019, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
        arXiv:1801.07698.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        margin: float = 28.6,
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
        if not 0 <= margin < 180:
            raise ValueError(f"expected `margin` to be in [0, 180) degrees, got {margin!r}")
        self.margin = float(margin)
        self.scale = float(scale)
        self.W = nnx.Param(
            jax.random.normal(rngs.params(), (embedding_size, self._num_columns()), param_dtype)
        )

    def _num_columns(self) -> int:
        # One column per class; SubCenterArcFaceLoss has several.
        return self.num_classes

    def cosine(self, embeddings: Float[Array, "batch dim"]) -> Float[Array, "batch classes"]:
        """Cosine similarity of each embedding with each class weight, shape (batch, classes)."""
        weights = l2_normalize(self.W[...].astype(embeddings.dtype), axis=0)
        return l2_normalize(embeddings, axis=1) @ weights

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        logits = arcface_logits(
            self.cosine(embeddings), labels, math.radians(self.margin), self.scale
        )
        return cross_entropy(logits, labels)
