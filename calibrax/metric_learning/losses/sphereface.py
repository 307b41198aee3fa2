"""SphereFaceLoss (A-Softmax): L-Softmax with the class weights' norms left out."""

from __future__ import annotations

from typing import ClassVar

from flax import nnx

from calibrax.core.registry import register
from calibrax.metric_learning.losses._weight_losses import weight_loss_example
from calibrax.metric_learning.losses.large_margin_softmax import LargeMarginSoftmaxLoss

__all__ = ["SphereFaceLoss"]


@register(
    "sphereface_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=weight_loss_example(lambda: SphereFaceLoss(3, 4, rngs=nnx.Rngs(0))),
)
class SphereFaceLoss(LargeMarginSoftmaxLoss):
    r"""SphereFace (angular softmax), as pytorch-metric-learning 2.9's ``SphereFaceLoss``.

    :class:`~calibrax.metric_learning.LargeMarginSoftmaxLoss` with logits
    :math:`s \lVert x_i \rVert \psi(\theta_{ij})`: the class weights enter through their
    direction only. Same arguments and defaults (``margin=4``, ``scale=1``, standard-normal ``W``
    of shape ``(embedding_size, num_classes)``).

    References:
        Liu et al., 2017, "SphereFace: Deep Hypersphere Embedding for Face Recognition",
        arXiv:1704.08063.
    """

    logits_carry_class_norms: ClassVar[bool] = False
