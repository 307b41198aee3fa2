"""LargeMarginSoftmaxLoss (L-Softmax): a multiplicative angular margin on the target class."""

from __future__ import annotations

import math
from functools import partial
from typing import Any
from typing import ClassVar

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
from calibrax.metric_learning.losses._weight_losses import _NORM_EPS
from calibrax.metric_learning.losses._weight_losses import check_positive_number
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


def _norms(sq: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """From squared norms: the norm (0 at 0, as :func:`row_norm`), the clamped norm
    ``max(norm, 1e-12)`` of :func:`l2_normalize`, and where the clamp is inactive."""
    unclamped = sq > _NORM_EPS**2
    return safe_sqrt(sq), jnp.sqrt(jnp.maximum(sq, _NORM_EPS**2)), unclamped


def _cos_multiple_angle_slope(cosine: jax.Array, margin: int) -> jax.Array:
    """The derivative of :func:`cos_multiple_angle` with respect to the cosine."""
    return jax.jvp(lambda t: cos_multiple_angle(t, margin), (cosine,), (jnp.ones_like(cosine),))[1]


def _margin_forward(
    embeddings: jax.Array,
    weight: jax.Array,
    labels: jax.Array,
    scale: float,
    margin: int,
    with_cols: bool,
) -> dict[str, jax.Array]:
    """Every quantity of the forward pass the backward pass reuses (see
    :func:`_margin_softmax_values`)."""
    norm_x, clamped_x, unclamped_x = _norms(jnp.sum(embeddings * embeddings, axis=1))
    norm_w, clamped_w, unclamped_w = _norms(jnp.sum(weight * weight, axis=0))
    row = scale * norm_x
    col = norm_w if with_cols else jnp.ones_like(norm_w)
    # Off the target, the logit r_i c_j x_i.w_j / (m_i n_j) is a_i b_j (x W)_ij.
    row_factor = row / clamped_x
    col_factor = col / clamped_w
    products = embeddings @ weight
    target_product = jnp.take_along_axis(products, labels[:, None], axis=1)[:, 0]
    target_cos = target_product / (clamped_x * clamped_w[labels])
    k = jnp.floor(jnp.arccos(jnp.clip(target_cos, -1, 1)) / (math.pi / margin))
    sign = jnp.where(jnp.mod(k, 2) == 0, 1, -1).astype(products.dtype)
    psi = sign * cos_multiple_angle(target_cos, margin) - 2 * k
    target_logit = row * col[labels] * psi
    is_target = labels[:, None] == jnp.arange(weight.shape[1], dtype=labels.dtype)[None, :]
    logits = jnp.where(
        is_target, target_logit[:, None], row_factor[:, None] * col_factor[None, :] * products
    )
    top = jnp.max(logits, axis=1)
    lse = top + jnp.log(jnp.sum(jnp.exp(logits - top[:, None]), axis=1))
    return dict(
        norm_x=norm_x, clamped_x=clamped_x, unclamped_x=unclamped_x, norm_w=norm_w,
        clamped_w=clamped_w, unclamped_w=unclamped_w, row=row, col=col, row_factor=row_factor,
        col_factor=col_factor, products=products, target_product=target_product,
        target_cos=target_cos, sign=sign, psi=psi, target_logit=target_logit, lse=lse,
    )  # fmt: skip


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _margin_softmax_values(
    embeddings: Float[Array, "batch dim"],
    weight: Float[Array, "dim classes"],
    labels: Int[Array, " batch"],
    scale: float,
    margin: int,
    with_cols: bool,
) -> Float[Array, " batch"]:
    r"""Per-sample cross-entropy of the L-Softmax / SphereFace logits.

    With :math:`r_i = s \lVert x_i \rVert`, :math:`c_j = \lVert w_j \rVert` (1 when
    ``with_cols`` is False: SphereFace), :math:`m_i, n_j` the norms clamped below at 1e-12 (as
    :func:`l2_normalize`) and :math:`u = x W`, the logits are :math:`a_i b_j u_{ij}` with
    :math:`a_i = r_i / m_i`, :math:`b_j = c_j / n_j` off the target and
    :math:`T_i = r_i c_{y_i} \psi(u_{iy_i} / (m_i n_{y_i}))` on it.

    A custom VJP, written out by hand so that a training step makes one matrix product and a few
    passes over the (batch, classes) matrix each way, instead of autodiff's chain through both
    normalisations (the step ran about 50 small XLA kernels). With :math:`D` the cotangent of
    :math:`u` (the softmax cotangent times :math:`a_i b_j`, times :math:`\psi'` on the target;
    the interval ``k`` held constant as PML's ``no_grad``), the gradients are :math:`D W^T` and
    :math:`x^T D` plus, along :math:`\hat x_i` and :math:`\hat w_j`, the terms of the norms:
    :math:`T_i` through :math:`r_i, m_i, c_{y_i}, n_{y_i}`, and the off-target logits through
    :math:`a_i` (nonzero only below the 1e-12 clamp) and :math:`b_j` (SphereFace's
    :math:`1 / n_j`), whose row and column sums :math:`\sum_j D_{ij} u_{ij}` come from
    :math:`x_i \cdot (D W^T)_i` and :math:`w_j \cdot (x^T D)_j` without another pass. Norms
    have a zero gradient at the zero vector. Reverse mode only (``jax.jvp`` raises).
    """
    return _margin_softmax_fwd(embeddings, weight, labels, scale, margin, with_cols)[0]


def _margin_softmax_fwd(
    embeddings: jax.Array,
    weight: jax.Array,
    labels: jax.Array,
    scale: float,
    margin: int,
    with_cols: bool,
) -> tuple[jax.Array, tuple[Any, ...]]:
    parts = _margin_forward(embeddings, weight, labels, scale, margin, with_cols)
    return parts["lse"] - parts["target_logit"], (embeddings, weight, labels, parts)


def _margin_softmax_bwd(
    scale: float, margin: int, with_cols: bool, res: tuple[Any, ...], grad: jax.Array
) -> tuple[jax.Array, jax.Array, None]:
    embeddings, weight, labels, p = res
    classes = weight.shape[1]
    is_target = labels[:, None] == jnp.arange(classes, dtype=labels.dtype)[None, :]
    row_factor, col_factor = p["row_factor"], p["col_factor"]
    logits = jnp.where(
        is_target,
        p["target_logit"][:, None],
        row_factor[:, None] * col_factor[None, :] * p["products"],
    )
    slope = p["sign"] * _cos_multiple_angle_slope(p["target_cos"], margin)
    # d loss / d target logit: g (p_t - 1).
    d_target = grad * (jnp.exp(p["target_logit"] - p["lse"]) - 1)
    d_products = jnp.where(
        is_target,
        (d_target * slope)[:, None],
        grad[:, None] * jnp.exp(logits - p["lse"][:, None]),
    ) * (row_factor[:, None] * col_factor[None, :])
    d_x = d_products @ weight.T
    d_w = embeddings.T @ d_products

    zero = jnp.zeros_like(p["norm_x"])
    dir_x = embeddings / jnp.where(p["norm_x"] > 0, p["norm_x"], 1)[:, None]
    dir_w = weight / jnp.where(p["norm_w"] > 0, p["norm_w"], 1)[None, :]
    col_t, clamped_w_t, col_factor_t = p["col"][labels], p["clamped_w"][labels], col_factor[labels]
    # The target's own share of sum_j D_ij u_ij (per row; summed per class for the columns).
    target_share = d_target * slope * p["target_product"]
    eps = jnp.asarray(_NORM_EPS, embeddings.dtype)

    # Rows: T through r (scale x_hat) and m (x_hat above the clamp); a_i only below the clamp.
    below_x = (p["norm_x"] > 0) & ~p["unclamped_x"]
    off_target_x = jnp.where(
        below_x,
        jnp.sum(embeddings * d_x, axis=1) / jnp.where(below_x, row_factor, 1)
        - target_share * col_factor_t,
        zero,
    )
    coef_x = (
        jnp.where(below_x, off_target_x * (scale / eps), zero)
        + jnp.where(p["norm_x"] > 0, d_target * col_t * p["psi"] * scale, zero)
        - jnp.where(p["unclamped_x"], d_target * row_factor * col_t * slope * p["target_cos"], zero)
    )
    d_x = d_x + coef_x[:, None] * dir_x

    # Columns: T through c (L-Softmax, w_hat) and n (w_hat above the clamp); b_j through its
    # clamp (L-Softmax, below 1e-12) or 1 / n_j (SphereFace, above it).
    per_sample = jnp.stack(
        [
            (d_target * p["row"] * p["psi"] if with_cols else zero)
            - jnp.where(
                p["unclamped_w"][labels],
                d_target * p["row"] * col_t * slope * p["target_cos"] / clamped_w_t,
                zero,
            ),
            target_share * row_factor,
        ],
        axis=1,
    )
    per_class = jax.ops.segment_sum(per_sample, labels, num_segments=classes)
    if with_cols:
        col_slope = jnp.where((p["norm_w"] > 0) & ~p["unclamped_w"], 1 / eps, 0)
    else:
        col_slope = jnp.where(p["unclamped_w"], -1 / jnp.square(p["clamped_w"]), 0)
    has_slope = col_slope != 0
    off_target_w = jnp.where(
        has_slope,
        jnp.sum(weight * d_w, axis=0) / jnp.where(has_slope, col_factor, 1) - per_class[:, 1],
        0,
    )
    coef_w = off_target_w * col_slope + per_class[:, 0]
    d_w = d_w + coef_w[None, :] * dir_w
    return d_x, d_w, None


_margin_softmax_values.defvjp(_margin_softmax_fwd, _margin_softmax_bwd)


@register(
    "large_margin_softmax_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
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

    # The logits carry the class weights' norms |w_j| (SphereFace: False, the weights enter
    # through their direction only).
    logits_carry_class_norms: ClassVar[bool] = True

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

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        weight = self.W[...].astype(embeddings.dtype)
        return _margin_softmax_values(
            embeddings, weight, labels, self.scale, self.margin, self.logits_carry_class_norms
        )
