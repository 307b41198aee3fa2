"""SoftTripleLoss: a softmax over classes that each hold several centres."""

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
from calibrax.metric_learning.distances.base_distance import gram_cross_block
from calibrax.metric_learning.losses._mined import MinedClassWeightLoss
from calibrax.metric_learning.losses._weight_losses import check_positive_number
from calibrax.metric_learning.losses._weight_losses import l2_normalize
from calibrax.metric_learning.losses._weight_losses import weight_loss_example
from calibrax.metric_learning.reducers import BaseReducer

__all__ = ["SoftTripleLoss"]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _soft_triple_head(
    scaled: Float[Array, "centers classes batch"],
    labels: Int[Array, " batch"],
    la: float,
    gamma: float,
    margin: float,
    shift: float | None,
) -> Float[Array, " batch"]:
    r"""Per-sample SoftTriple losses from ``scaled`` :math:`= s_{i,c,k} / \gamma`, laid out
    (K, classes, batch): the softmax over a class's centres reduces over the leading axis, and the
    backward pass's per-(class, sample) factors broadcast along it, over whole contiguous
    (classes, batch) slices. (In the (batch, K, classes) layout XLA's CPU loop for ``exp`` times
    a factor broadcast along the middle axis ran 6x slower than the same loop without the
    broadcast: 7.4 ms against 1.3 ms at B = 1024, 256 classes, K = 10.)

    A custom VJP: autodiff would keep and re-read several (batch, K, classes) intermediates;
    the closed form re-reads ``scaled`` once. With :math:`p` the softmax over ``k``,
    :math:`S = \gamma \sum_k p\,t` and :math:`g = \partial L / \partial S`, the gradient is
    :math:`\partial L / \partial t_k = p_k\, g\, (\gamma + \gamma t_k - S)`.
    """
    return _soft_triple_head_fwd(scaled, labels, la, gamma, margin, shift)[0]


def _shifted_exp(scaled: jax.Array, top: jax.Array | float) -> jax.Array:
    if isinstance(top, float):
        # Only 0.0 (see _exp_shift); no subtraction: on CPU, XLA emits a several times slower
        # loop for exp(t - constant) times a broadcast (batch, 1, classes) factor.
        return jnp.exp(scaled)
    return jnp.exp(scaled - top[None, :, :])


def _soft_triple_head_fwd(
    scaled: jax.Array,
    labels: jax.Array,
    la: float,
    gamma: float,
    margin: float,
    shift: float | None,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    top = jnp.max(scaled, axis=0) if shift is None else shift
    e = _shifted_exp(scaled, top)
    # One reduction with two outputs, so that the exponentials are summed where they are made.
    z, weighted = jax.lax.reduce(
        (e, e * scaled),
        (jnp.zeros((), e.dtype), jnp.zeros((), e.dtype)),
        lambda u, v: (u[0] + v[0], u[1] + v[1]),
        (0,),
    )
    sim = gamma * (weighted / z)
    target = _one_hot_columns(labels, sim.shape[0], sim.dtype)
    logits = la * sim - (la * margin) * target
    lse = jax.nn.logsumexp(logits, axis=0)
    values = lse - jnp.sum(logits * target, axis=0)
    return values, (scaled, labels, top if shift is None else None, z, sim, logits, lse)


def _soft_triple_head_bwd(
    la: float,
    gamma: float,
    margin: float,
    shift: float | None,
    res: tuple[jax.Array, ...],
    grad: jax.Array,
) -> tuple[jax.Array, None]:
    del margin
    scaled, labels, top, z, sim, logits, lse = res
    top = shift if shift is not None else top
    target = _one_hot_columns(labels, sim.shape[0], sim.dtype)
    d_sim = (la * grad)[None, :] * (jnp.exp(logits - lse[None, :]) - target)
    # p_k = e_k / z: fold 1/z and the terms that do not depend on k into per-(i, c) factors.
    a = d_sim * (gamma - sim) / z
    b = d_sim * gamma / z
    # Recomputed rather than kept from the forward pass (the barrier stops XLA from merging the
    # two): keeping it would hold a third (batch, K, classes) buffer until here.
    scaled = jax.lax.optimization_barrier(scaled)
    e = _shifted_exp(scaled, top)
    return e * (a[None, :, :] + b[None, :, :] * scaled), None


def _one_hot_columns(labels: jax.Array, classes: int, dtype: Any) -> jax.Array:
    """(classes, batch) one-hot: column ``i`` is 1 in row ``labels[i]``."""
    rows = jnp.arange(classes, dtype=labels.dtype)[:, None]
    return (rows == labels[None, :]).astype(dtype)


def _exp_shift(gamma: float, dtype: Any) -> float | None:
    """0.0 when ``exp`` of the scaled similarities needs no shift (in place of the max over
    the centres), else None.

    The scaled similarities are cosines over ``gamma``, so they lie in ``[-1/gamma, 1/gamma]``
    (up to rounding). While ``1/gamma`` is at most 60 (float32; 600 in float64) their
    exponentials stay between about 1e-26 and 1e26 (float64: 1e-260 and 1e260), far inside the
    normal range, and so do the sums over the centres: the softmax is the same and the pass that
    finds the max is saved. Smaller temperatures keep the max.
    """
    limit = 60.0 if jnp.dtype(dtype).itemsize <= 4 else 600.0
    return 0.0 if 1 / gamma <= limit else None


_soft_triple_head.defvjp(_soft_triple_head_fwd, _soft_triple_head_bwd)


@register(
    "soft_triple_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
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
        # The centres regrouped as (K, classes, dim) (a small transpose of the parameter) and the
        # product taken as centres @ embeddings^T, so that the similarities come out as
        # (K, classes, batch) (see _soft_triple_head); 1 / gamma is folded into the embeddings.
        # gram_cross_block's backward pass takes the embeddings' gradient as (centres^T g)^T:
        # XLA's CPU dot for g^T @ centres (a transposed left operand, a narrow result) ran 2.1x
        # slower, 14.1 ms against 6.6 ms at 2560 centres, B = 1024, d = 128.
        dim, classes, k = self.embedding_size, self.num_classes, self.centers_per_class
        fc = self.fc[...].astype(embeddings.dtype).reshape(dim, classes, k)
        centers = l2_normalize(fc.transpose(2, 1, 0).reshape(k * classes, dim), axis=1)
        queries = l2_normalize(embeddings, axis=1) * (1 / self.gamma)
        scaled = gram_cross_block(centers, queries).reshape(k, classes, embeddings.shape[0])
        return _soft_triple_head(
            scaled, labels, self.la, self.gamma, self.margin, _exp_shift(self.gamma, scaled.dtype)
        )
