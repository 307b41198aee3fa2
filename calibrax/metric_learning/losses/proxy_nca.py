"""ProxyNCA: neighbourhood component analysis against one learned proxy per class."""

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

__all__ = ["ProxyNCALoss"]


@register(
    "proxy_nca_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=weight_loss_example(lambda: ProxyNCALoss(3, 4, rngs=nnx.Rngs(0))),
)
class ProxyNCALoss(ClassWeightLoss):
    r"""ProxyNCA loss: softmax over negative squared distances to the class proxies.

    .. math::
        \ell_i = -\log \frac{e^{-s \lVert \hat x_i - \hat p_{y_i} \rVert^2}}
            {\sum_j e^{-s \lVert \hat x_i - \hat p_j \rVert^2}},

    averaged over the batch, where hats denote L2-normalised embeddings and proxies and
    :math:`s` is ``softmax_scale``. Defaults (``softmax_scale=1``, standard-normal proxies,
    squared Euclidean distance of normalised vectors, mean reduction) are pytorch-metric-learning
    2.9's.

    The log-probability is computed with ``log_softmax``. pytorch-metric-learning takes the log of
    the softmax and drops the samples whose probability underflows to exactly 0, which only
    happens for ``softmax_scale`` in the hundreds (float32); here such samples keep their large,
    finite loss.

    Attributes:
        proxies: Class proxies, ``nnx.Param`` of shape ``(num_classes, embedding_size)`` (the
            layout of pytorch-metric-learning's ``ProxyNCALoss.proxies``).

    Args:
        num_classes: Number of classes.
        embedding_size: Dimension of the embeddings.
        softmax_scale: Multiplier of the negative squared distances, > 0.
        weight_regularizer: Optional regularizer of the class weights (one row per class or
            sub-centre), from :mod:`calibrax.metric_learning.regularizers`; ``weight_reg_weight``
            times its value is added to the loss (default weight 1), as in
            pytorch-metric-learning.
        embedding_regularizer: Optional regularizer of the (batch) embeddings, from
            :mod:`calibrax.metric_learning.regularizers`; ``embedding_reg_weight`` times its value
            is added to the loss (default weight 1), as in pytorch-metric-learning.
        reducer: Turns the per-sample losses into the loss; ``None`` is the mean.
        param_dtype: dtype of ``proxies``.
        rngs: Random generators; ``rngs.params()`` initialises ``proxies``.

    Raises:
        ValueError: If a hyperparameter is out of range.

    References:
        Movshovitz-Attias et al., 2017, "No Fuss Distance Metric Learning using Proxies",
        arXiv:1703.07464.
    """

    miner_weights_anchors_only = True

    def class_weights(self) -> jax.Array:
        """The proxies, (num_classes, embedding_size)."""
        return self.proxies[...]

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        softmax_scale: float = 1.0,
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
        check_positive_number(softmax_scale, "softmax_scale")
        self.softmax_scale = float(softmax_scale)
        self.proxies = nnx.Param(
            jax.random.normal(rngs.params(), (num_classes, embedding_size), param_dtype)
        )

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        x = l2_normalize(embeddings, axis=1)
        p = l2_normalize(self.proxies[...].astype(embeddings.dtype), axis=1)
        sq_dist = jnp.sum(jnp.square(x[:, None, :] - p[None, :, :]), axis=2)
        return cross_entropy(-self.softmax_scale * sq_dist, labels)
