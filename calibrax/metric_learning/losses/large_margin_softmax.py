"""LargeMarginSoftmaxLoss (L-Softmax): a multiplicative angular margin on the target class."""

from __future__ import annotations

import math
from functools import partial
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


def _margin_parts(
    cosine: jax.Array, labels: jax.Array, margin: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The target cosines, the sign ``(-1)^k`` of their interval, ``psi`` of them, and the
    (batch, classes) cosines with the target entries replaced by ``psi``."""
    target = jnp.take_along_axis(cosine, labels[:, None], axis=1)[:, 0]
    angles = jnp.arccos(jnp.clip(target, -1, 1))
    k = jnp.floor(angles / (math.pi / margin))
    sign = jnp.where(jnp.mod(k, 2) == 0, 1, -1).astype(cosine.dtype)
    modified = sign * cos_multiple_angle(target, margin) - 2 * k
    is_target = labels[:, None] == jnp.arange(cosine.shape[1], dtype=labels.dtype)[None, :]
    return target, sign, modified, jnp.where(is_target, modified[:, None], cosine)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _margin_softmax_values(
    cosine: Float[Array, "batch classes"],
    row_scale: Float[Array, " batch"],
    col_scale: Float[Array, " classes"],
    labels: Int[Array, " batch"],
    margin: int,
    with_cols: bool,
) -> Float[Array, " batch"]:
    r"""Per-sample cross-entropy of the logits ``row_scale_i * col_scale_j * c_ij``, where
    ``c`` is ``cosine`` with each target entry replaced by :math:`\psi` of it.

    A custom VJP in two passes over the (batch, classes) matrix instead of autodiff's dozen
    (the one-hot, the gather's scatter, the scaling chain): with :math:`g` the cotangent of the
    logits, the cosines get :math:`g\, r_i s_j` (times :math:`\psi'` on the targets, the
    interval ``k`` held constant as PML's ``no_grad``), the row scales
    :math:`\sum_j g\, c\, s_j` and the column scales :math:`\sum_i g\, c\, r_i` (skipped
    when ``with_cols`` is False: the caller passes constant ones).
    """
    return _margin_softmax_fwd(cosine, row_scale, col_scale, labels, margin, with_cols)[0]


def _margin_softmax_fwd(
    cosine: jax.Array,
    row_scale: jax.Array,
    col_scale: jax.Array,
    labels: jax.Array,
    margin: int,
    with_cols: bool,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    del with_cols
    target, sign, modified, replaced = _margin_parts(cosine, labels, margin)
    logits = replaced * row_scale[:, None] * col_scale[None, :]
    lse = jax.nn.logsumexp(logits, axis=1)
    values = lse - modified * row_scale * col_scale[labels]
    return values, (cosine, row_scale, col_scale, labels, target, sign, lse)


def _margin_softmax_bwd(
    margin: int, with_cols: bool, res: tuple[jax.Array, ...], grad: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, None]:
    cosine, row_scale, col_scale, labels, target, sign, lse = res
    _, _, _, replaced = _margin_parts(cosine, labels, margin)
    is_target = labels[:, None] == jnp.arange(cosine.shape[1], dtype=labels.dtype)[None, :]
    logits = replaced * row_scale[:, None] * col_scale[None, :]
    d_logits = grad[:, None] * (jnp.exp(logits - lse[:, None]) - is_target.astype(cosine.dtype))
    _, slope = jax.jvp(lambda t: cos_multiple_angle(t, margin), (target,), (jnp.ones_like(target),))
    d_replaced = d_logits * row_scale[:, None] * col_scale[None, :]
    d_cosine = jnp.where(is_target, d_replaced * (sign * slope)[:, None], d_replaced)
    weighted = d_logits * replaced
    d_row = jnp.sum(weighted * col_scale[None, :], axis=1)
    d_col = (
        jnp.sum(weighted * row_scale[:, None], axis=0) if with_cols else jnp.zeros_like(col_scale)
    )
    return d_cosine, d_row, d_col, None


_margin_softmax_values.defvjp(_margin_softmax_fwd, _margin_softmax_bwd)


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

    def class_scales(self, dtype: Any) -> Float[Array, " classes"] | None:
        """The per-class factor of the logits: ``|w_j|`` (SphereFace: None, the weights enter
        through their direction only)."""
        return row_norm(self.W[...].astype(dtype), axis=0)

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        weights = l2_normalize(self.W[...].astype(embeddings.dtype), axis=0)
        cosine = l2_normalize(embeddings, axis=1) @ weights
        row_scale = row_norm(embeddings) * self.scale
        col_scale = self.class_scales(cosine.dtype)
        with_cols = col_scale is not None
        if col_scale is None:
            col_scale = jnp.ones((self.num_classes,), cosine.dtype)
        return _margin_softmax_values(cosine, row_scale, col_scale, labels, self.margin, with_cols)
