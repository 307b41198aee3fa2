"""Sub-center ArcFace: ArcFace with several weight vectors (sub-centres) per class."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Bool
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.losses._weight_losses import l2_normalize
from calibrax.metric_learning.losses._weight_losses import weight_loss_example
from calibrax.metric_learning.losses.arcface import ArcFaceLoss
from calibrax.metric_learning.reducers import BaseReducer

__all__ = ["SubCenterArcFaceLoss"]


@register(
    "subcenter_arcface_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=weight_loss_example(lambda: SubCenterArcFaceLoss(3, 4, rngs=nnx.Rngs(0))),
)
class SubCenterArcFaceLoss(ArcFaceLoss):
    r"""Sub-center ArcFace loss: each class keeps ``sub_centers`` weight vectors.

    The cosine of an embedding with a class is the largest cosine with any of the class's
    sub-centres; the rest is :class:`ArcFaceLoss`. Noisy samples gather around non-dominant
    sub-centres, which :meth:`get_outliers` finds. Defaults (``margin=28.6`` degrees, ``scale=64``,
    ``sub_centers=3``, standard-normal weights) are pytorch-metric-learning 2.9's.

    Attributes:
        W: Sub-centre weights, ``nnx.Param`` of shape ``(embedding_size, num_classes *
            sub_centers)``; column ``c * sub_centers + k`` is sub-centre ``k`` of class ``c`` (the
            layout of pytorch-metric-learning's ``SubCenterArcFaceLoss.W``).

    Args:
        num_classes: Number of classes.
        embedding_size: Dimension of the embeddings.
        margin: Angular margin in degrees, in ``[0, 180)``.
        scale: Multiplier of the cosines, > 0.
        sub_centers: Number of sub-centres per class, >= 1.
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
        Deng et al., 2020, "Sub-center ArcFace: Boosting Face Recognition by Large-Scale Noisy
        Web Faces", ECCV 2020.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        margin: float = 28.6,
        scale: float = 64.0,
        sub_centers: int = 3,
        reducer: BaseReducer | None = None,
        weight_regularizer: Any = None,
        weight_reg_weight: float = 1.0,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        checks.check_positive_int(sub_centers, "sub_centers")
        self.sub_centers = int(sub_centers)
        super().__init__(
            num_classes,
            embedding_size,
            margin=margin,
            scale=scale,
            reducer=reducer,
            weight_regularizer=weight_regularizer,
            weight_reg_weight=weight_reg_weight,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def _num_columns(self) -> int:
        return self.num_classes * self.sub_centers

    def _subcenter_cosine(
        self, embeddings: Float[Array, "batch dim"]
    ) -> Float[Array, "batch classes sub_centers"]:
        weights = l2_normalize(self.W[...].astype(embeddings.dtype), axis=0)
        cosine = l2_normalize(embeddings, axis=1) @ weights
        return cosine.reshape(embeddings.shape[0], self.num_classes, self.sub_centers)

    def cosine(self, embeddings: Float[Array, "batch dim"]) -> Float[Array, "batch classes"]:
        """Largest cosine of each embedding with each class's sub-centres, (batch, classes)."""
        return jnp.max(self._subcenter_cosine(embeddings), axis=2)

    def get_outliers(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        threshold: float = 75.0,
    ) -> tuple[Bool[Array, " batch"], Float[Array, "dim classes"]]:
        """Samples far from their class's dominant sub-centre, and the dominant sub-centres.

        A class's dominant sub-centre is the one nearest to most of its samples in the batch
        (the lowest index on ties). A sample is an outlier when its angle to its class's dominant
        sub-centre exceeds ``threshold`` degrees. Fixed shapes, so this runs under ``jax.jit``.

        Args:
            embeddings: Embedding vectors, shape ``(batch, embedding_size)``.
            labels: Integer class ids in ``[0, num_classes)``, shape ``(batch,)``.
            threshold: Angle in degrees.

        Returns:
            ``(outliers, dominant_centers)``: a boolean mask of shape ``(batch,)`` (where
            pytorch-metric-learning returns the indices ``outliers.nonzero()``), and the dominant
            sub-centre of each class, shape ``(embedding_size, num_classes)``, zero for the
            classes absent from the batch.

        Raises:
            ValueError: See :meth:`validate_inputs`.
            TypeError: See :meth:`validate_inputs`.
        """
        embeddings = jnp.asarray(embeddings)
        labels = jnp.asarray(labels)
        self.validate_inputs(embeddings, labels)
        labels = labels.astype(jnp.int32)
        cosine = self._subcenter_cosine(embeddings)
        own = jnp.take_along_axis(cosine, labels[:, None, None], axis=1)[:, 0, :]
        nearest = jnp.argmax(own, axis=1)
        class_onehot = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.int32)
        counts = class_onehot.T @ jax.nn.one_hot(nearest, self.sub_centers, dtype=jnp.int32)
        dominant = jnp.argmax(counts, axis=1)
        own_dominant = jnp.take_along_axis(own, dominant[labels][:, None], axis=1)[:, 0]
        outliers = own_dominant < math.cos(math.radians(threshold))
        columns = jnp.arange(self.num_classes) * self.sub_centers + dominant
        present = jnp.sum(class_onehot, axis=0) > 0
        dominant_centers = jnp.where(present[None, :], self.W[...][:, columns], 0.0)
        return outliers, dominant_centers
