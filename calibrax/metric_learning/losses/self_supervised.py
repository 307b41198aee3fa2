"""SelfSupervisedLoss: a loss over augmented views, each view's own copy its only positive."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.metric_learning.base import BaseMetricLossFunction
from calibrax.metric_learning.losses.base_loss_wrapper import BaseLossWrapper

__all__ = ["SelfSupervisedLoss"]

# pytorch-metric-learning 2.9's SelfSupervisedLoss.supported_losses().
SUPPORTED_LOSSES = (
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "NCALoss",
    "TupletMarginLoss",
)


def _ssl_example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
    from calibrax.metric_learning.losses.ntxent import NTXentLoss

    embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
    views = embeddings + 0.1 * jax.random.normal(jax.random.key(1), (8, 4), jnp.float32)

    def fn(e: jax.Array, r: jax.Array) -> jax.Array:
        return SelfSupervisedLoss(NTXentLoss())(e, r)

    return fn, (embeddings, views)


@register(
    "self_supervised_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=_ssl_example,
)
class SelfSupervisedLoss(BaseLossWrapper):
    """Wraps a loss for self-supervised training, as pytorch-metric-learning 2.9's.

    ``loss_fn(embeddings, ref_emb)``: row ``i`` of ``ref_emb`` is an augmented view of row ``i``
    of ``embeddings``, so label ``i`` is given to both. With ``symmetric=True`` (default) the
    two sets are stacked and the loss sees ``2B`` embeddings with labels ``[0..B-1, 0..B-1]``
    (each view is an anchor, its counterpart the only positive); otherwise the loss is
    ``loss(embeddings, arange(B), ref_emb=ref_emb, ref_labels=arange(B))`` (``embeddings`` are
    the anchors, ``ref_emb`` the positives and negatives).

    Args:
        loss: One of pytorch-metric-learning's supported losses for this wrapper (NTXent,
            Contrastive, SupCon, Triplet margin, ...).
        symmetric: See above (default True).

    Raises:
        ValueError: If the loss is not supported.
    """

    def __init__(self, loss: BaseMetricLossFunction, symmetric: bool = True) -> None:
        super().__init__(loss)
        name = type(loss).__name__
        if not symmetric and not getattr(loss, "supports_ref", False):
            raise ValueError(f"SelfSupervisedLoss(symmetric=False) needs ref_emb support in {name}")
        self.loss = loss
        self.symmetric = bool(symmetric)

    @staticmethod
    def supported_losses() -> tuple[str, ...]:
        """pytorch-metric-learning 2.9's list."""
        return SUPPORTED_LOSSES

    def __call__(
        self, embeddings: Float[Array, "batch dim"], ref_emb: Float[Array, "batch dim"]
    ) -> Float[Array, ""]:
        """The loss of the views.

        Args:
            embeddings: (batch, dim) floating: the original inputs' embeddings.
            ref_emb: (batch, dim): an augmentation of each of them, same shape and dtype.

        Returns:
            The scalar loss, differentiable with respect to both inputs.

        Raises:
            ValueError: If the inputs are not 2-D or differ in shape (or dtype).
        """
        checks.check_rank(embeddings, 2, "embeddings", "batch, embedding_dim")
        checks.check_rank(ref_emb, 2, "ref_emb", "batch, embedding_dim")
        checks.check_same_shape(embeddings, ref_emb, "embeddings", "ref_emb")
        checks.check_same_dtype(embeddings, ref_emb, "embeddings", "ref_emb")
        labels = jnp.arange(embeddings.shape[0], dtype=jnp.int32)
        if self.symmetric:
            both = jnp.concatenate([jnp.asarray(embeddings), jnp.asarray(ref_emb)], axis=0)
            return self.loss(both, jnp.concatenate([labels, labels]))
        return self.loss(embeddings, labels, ref_emb=ref_emb, ref_labels=labels)
