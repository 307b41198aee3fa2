"""LargeMarginSoftmaxLoss (L-Softmax): a multiplicative angular margin on the target class."""

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
from calibrax.metric_learning.distances.base_distance import safe_sqrt
from calibrax.metric_learning.losses._mined import MinedClassWeightLoss
from calibrax.metric_learning.losses._weight_losses import check_positive_number
from calibrax.metric_learning.losses._weight_losses import cross_entropy
from calibrax.metric_learning.losses._weight_losses import l2_normalize
from calibrax.metric_learning.losses._weight_losses import weight_loss_example
from calibrax.metric_learning.reducers import BaseReducer

__all__ = ["LargeMarginSoftmaxLoss", "cos_multiple_angle", "row_norm"]


def row_norm(x: Float[Array, "*rows dim"], axis: int = -1) -> Float[Array, "*rows"]:
    """The L2 norm along ``axis``, with a zero (not NaN) gradient at the zero vector."""
    return safe_sqrt(jnp.sum(x * x, axis=axis))


def cos_multiple_angle(cosine: Float[Array, "*n"], margin: int) -> Float[Array, "*n"]:
    r""":math:`\cos(m\theta)` as a polynomial in :math:`c = \cos\theta` (the paper's equation 7):
    :math:`\sum_n (-1)^n \binom{m}{2n} c^{m - 2n} (1 - c^2)^n`."""
    sin_sq = 1 - cosine * cosine
    total = jnp.zeros_like(cosine)
    for n in range(margin // 2 + 1):
        term = math.comb(margin, 2 * n) * cosine ** (margin - 2 * n) * sin_sq**n
        total = total + (term if n % 2 == 0 else -term)
    return total


@register(
    "large_margin_softmax_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=weight_loss_example(lambda: LargeMarginSoftmaxLoss(3, 4, rngs=nnx.Rngs(0))),
)
class LargeMarginSoftmaxLoss(MinedClassWeightLoss):
    r"""Large-margin softmax (L-Softmax), as pytorch-metric-learning 2.9's
    ``LargeMarginSoftmaxLoss``.

    With :math:`\theta_{ij}` the angle between embedding :math:`x_i` and class weight
    :math:`w_j`, the target logit uses :math:`\psi(\theta) = (-1)^k \cos(m\theta) - 2k` for
    :math:`\theta \in [k\pi/m, (k+1)\pi/m]`, a monotonic extension of :math:`\cos(m\theta)`:

    .. math::
        \ell_i = -\log \frac{e^{s \lVert w_{y_i}\rVert \lVert x_i\rVert \psi(\theta_{iy_i})}}
            {e^{s \lVert w_{y_i}\rVert \lVert x_i\rVert \psi(\theta_{iy_i})}
            + \sum_{j \ne y_i} e^{s \lVert w_j\rVert \lVert x_i\rVert \cos\theta_{ij}}},

    times each sample's miner weight, averaged over the batch. Defaults (``margin=4``,
    ``scale=1``, standard-normal weights) are pytorch-metric-learning 2.9's. ``k`` is a
    constant for the gradient (as PML's ``torch.no_grad``). The norms have a zero gradient at
    the zero vector (torch's is NaN there).

    Attributes:
        W: Class weights, ``nnx.Param`` of shape ``(embedding_size, num_classes)`` (the layout of
            pytorch-metric-learning's ``W``). Drawn from a standard normal with ``rngs.params()``:
            the same distribution as PML's ``torch.nn.init.normal_``, not the same numbers (copy
            PML's ``W`` in to reproduce a torch run).

    Args:
        num_classes: Number of classes.
        embedding_size: Dimension of the embeddings.
        margin: The integer angle multiplier ``m`` >= 1 (1 is the plain softmax). Default 4.
        scale: Multiplier of the logits, > 0. Default 1.
        reducer: Turns the per-sample losses into the loss; ``None`` is the mean.
        param_dtype: dtype of ``W``.
        rngs: Random generators; ``rngs.params()`` initialises ``W``.

    Raises:
        ValueError: If a hyperparameter is out of range.

    References:
        Liu et al., 2016, "Large-Margin Softmax Loss for Convolutional Neural Networks",
        arXiv:1612.02295.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        margin: int = 4,
        scale: float = 1.0,
        reducer: BaseReducer | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(num_classes, embedding_size, reducer)
        checks.check_positive_int(margin, "margin")
        check_positive_number(scale, "scale")
        self.margin = int(margin)
        self.scale = float(scale)
        self.W = nnx.Param(
            jax.random.normal(rngs.params(), (embedding_size, num_classes), param_dtype)
        )

    def scale_logits(
        self, logits: Float[Array, "batch classes"], embeddings: Float[Array, "batch dim"]
    ) -> Float[Array, "batch classes"]:
        """``logits * |w_j| * |x_i| * scale`` (SphereFace leaves out the weight norms)."""
        w_norms = row_norm(self.W[...].astype(embeddings.dtype), axis=0)
        return logits * w_norms[None, :] * row_norm(embeddings)[:, None] * self.scale

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        weights = l2_normalize(self.W[...].astype(embeddings.dtype), axis=0)
        cosine = l2_normalize(embeddings, axis=1) @ weights
        target = jnp.take_along_axis(cosine, labels[:, None], axis=1)[:, 0]
        angles = jnp.arccos(jnp.clip(jax.lax.stop_gradient(target), -1, 1))
        k = jnp.floor(angles / (math.pi / self.margin))
        sign = jnp.where(jnp.mod(k, 2) == 0, 1, -1).astype(cosine.dtype)
        modified = sign * cos_multiple_angle(target, self.margin) - 2 * k
        one_hot = jax.nn.one_hot(labels, self.num_classes, dtype=cosine.dtype)
        logits = cosine + one_hot * (modified - target)[:, None]
        return cross_entropy(self.scale_logits(logits, embeddings), labels)
