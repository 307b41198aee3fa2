"""SoftTripleLoss: a softmax over classes that each hold several centres."""

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
from calibrax.metric_learning.losses._mined import MinedClassWeightLoss
from calibrax.metric_learning.losses._weight_losses import check_positive_number
from calibrax.metric_learning.losses._weight_losses import cross_entropy
from calibrax.metric_learning.losses._weight_losses import l2_normalize
from calibrax.metric_learning.losses._weight_losses import weight_loss_example
from calibrax.metric_learning.reducers import BaseReducer

__all__ = ["SoftTripleLoss"]


@register(
    "soft_triple_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=weight_loss_example(
        lambda: SoftTripleLoss(3, 4, centers_per_class=2, rngs=nnx.Rngs(0))
    ),
)
class SoftTripleLoss(MinedClassWeightLoss):
    r"""SoftTriple loss, as pytorch-metric-learning 2.9's ``SoftTripleLoss``.

    Each class ``c`` has ``K`` centres :math:`w_{c,k}`; with cosines
    :math:`s_{i,c,k} = \hat x_i \cdot \hat w_{c,k}`, the similarity to the class is the
    softmax-weighted mean :math:`S_{i,c} = \sum_k \operatorname{softmax}_k(s_{i,c,\cdot}/\gamma)\,
    s_{i,c,k}`, and

    .. math::
        \ell_i = -\log \frac{e^{\lambda (S_{i,y_i} - \delta)}}
            {e^{\lambda (S_{i,y_i} - \delta)} + \sum_{c \ne y_i} e^{\lambda S_{i,c}}},

    times each sample's miner weight, averaged over the batch. Defaults (``centers_per_class=10``,
    ``la=20``, ``gamma=0.1``, ``margin=0.01``) are pytorch-metric-learning 2.9's; like PML, the
    paper's regulariser that merges similar centres is not part of the loss.

    Attributes:
        fc: The centres, ``nnx.Param`` of shape ``(embedding_size, num_classes *
            centers_per_class)``, class ``c``'s centres in columns ``c K .. c K + K - 1`` (the
            layout of pytorch-metric-learning's ``fc``). Drawn uniformly from
            :math:`\pm 1/\sqrt{\text{num\_classes} \cdot K}` with ``rngs.params()``: the
            distribution of PML's ``kaiming_uniform_(a=sqrt(5))``, not the same numbers (copy
            PML's ``fc`` in to reproduce a torch run).

    Args:
        num_classes: Number of classes.
        embedding_size: Dimension of the embeddings.
        centers_per_class: Centres per class ``K``. Default 10.
        la: Scale :math:`\lambda` of the class similarities, > 0. Default 20.
        gamma: Temperature :math:`\gamma` of the softmax over a class's centres, > 0. Default 0.1.
        margin: Margin :math:`\delta` subtracted from the target class's similarity, >= 0.
            Default 0.01.
        reducer: Turns the per-sample losses into the loss; ``None`` is the mean.
        param_dtype: dtype of ``fc``.
        rngs: Random generators; ``rngs.params()`` initialises ``fc``.

    Raises:
        ValueError: If a hyperparameter is out of range.

    References:
        Qian et al., 2019, "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling",
        arXiv:1909.05235.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        centers_per_class: int = 10,
        la: float = 20.0,
        gamma: float = 0.1,
        margin: float = 0.01,
        reducer: BaseReducer | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(num_classes, embedding_size, reducer)
        checks.check_positive_int(centers_per_class, "centers_per_class")
        check_positive_number(la, "la")
        check_positive_number(gamma, "gamma")
        if not margin >= 0:
            raise ValueError(f"expected `margin` to be >= 0, got {margin!r}")
        self.centers_per_class = int(centers_per_class)
        self.la = float(la)
        self.gamma = float(gamma)
        self.margin = float(margin)
        columns = num_classes * self.centers_per_class
        bound = 1 / math.sqrt(columns)
        self.fc = nnx.Param(
            jax.random.uniform(rngs.params(), (embedding_size, columns), param_dtype, -bound, bound)
        )

    def class_similarities(
        self, embeddings: Float[Array, "batch dim"]
    ) -> Float[Array, "batch classes"]:
        """:math:`S_{i,c}`: each class's centre cosines, softmax-weighted over its centres."""
        centers = l2_normalize(self.fc[...].astype(embeddings.dtype), axis=0)
        sim = l2_normalize(embeddings, axis=1) @ centers
        sim = sim.reshape(sim.shape[0], self.num_classes, self.centers_per_class)
        prob = jax.nn.softmax(sim / self.gamma, axis=2)
        return jnp.sum(prob * sim, axis=2)

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        sim = self.class_similarities(embeddings)
        one_hot = jax.nn.one_hot(labels, self.num_classes, dtype=sim.dtype)
        return cross_entropy(self.la * (sim - self.margin * one_hot), labels)
