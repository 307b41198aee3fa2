"""Shared pieces of the losses that learn one weight vector (or proxy) per class.

ArcFace, CosFace, SubCenterArcFace, ProxyNCA, ProxyAnchor and NormalizedSoftmax all hold a
``(num_classes, ...)`` table of class weights as ``nnx.Param`` and compare each embedding with every
class. This module holds their common shell (hyperparameter and input checks, the compute dtype)
and the small numerical helpers they share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.metric_learning.base import add_regularization
from calibrax.metric_learning.base import check_regularizer
from calibrax.metric_learning.base import prepare_inputs
from calibrax.metric_learning.reducers import BaseReducer
from calibrax.metric_learning.reducers import MeanReducer
from calibrax.metric_learning.reducers.base_reducer import accumulation_dtype
from calibrax.metric_learning.tuples import element_weights

# torch.nn.functional.normalize divides by max(norm, 1e-12); the same floor keeps zero vectors
# finite and matches pytorch-metric-learning for ordinary inputs.
_NORM_EPS = 1e-12


def check_positive_number(value: float, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"expected `{name}` to be a positive number, got {value!r}")
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"expected `{name}` to be a positive number, got {value!r}")


def l2_normalize(x: Float[Array, "*dims"], axis: int) -> Float[Array, "*dims"]:
    """``x / max(||x||_2, 1e-12)`` along ``axis``, with finite gradients at ``x = 0``."""
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    # max() before sqrt: the gradient of sqrt at 0 is infinite, while below the floor the
    # denominator is a constant (as in torch, where clamp_min stops the gradient).
    return x / jnp.sqrt(jnp.maximum(sq, _NORM_EPS**2))


def safe_arccos(c: Float[Array, "*dims"]) -> Float[Array, "*dims"]:
    """``arccos(clip(c, -1, 1))`` whose gradient is 0 (not ±inf) where ``|c| >= 1``.

    torch's ``acos(clamp(c, -1, 1))`` has a zero gradient outside ``[-1, 1]`` and an infinite one
    exactly at ±1; this keeps the first and replaces the second by 0, so a sample that sits on its
    class centre cannot turn the whole gradient into NaN.
    """
    inside = jnp.abs(c) < 1
    c_inside = jnp.where(inside, c, 0.0)
    edge = jnp.where(c > 0, 0.0, math.pi).astype(c.dtype)
    return jnp.where(inside, jnp.arccos(c_inside), edge)


def cross_entropy(
    logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]
) -> Float[Array, " batch"]:
    """Per-sample ``-log softmax(logits)[i, labels[i]]``."""
    log_probs = jax.nn.log_softmax(logits, axis=1)
    return -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]


def weight_loss_example(
    make: Callable[[], ClassWeightLoss],
) -> Callable[[], tuple[Callable[..., jax.Array], tuple[jax.Array, jax.Array]]]:
    """A registry ``example``: ``fn(embeddings, labels)`` builds the loss (fixed rngs) and calls it."""

    def example() -> tuple[Callable[..., jax.Array], tuple[jax.Array, jax.Array]]:
        embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
        labels = jnp.array([0, 1, 2, 0, 1, 2, 0, 1], jnp.int32)

        def fn(embeddings: jax.Array, labels: jax.Array) -> jax.Array:
            return make()(embeddings, labels)

        return fn, (embeddings, labels)

    return example


def compute_dtype(embeddings: jax.Array) -> jnp.dtype:
    """float32 for half-precision (and float32) inputs, float64 for float64 inputs.

    Scales such as 64 (ArcFace) or alpha=32 (ProxyAnchor) put ``exp`` far outside float16's range
    (max 65504) and bfloat16's 8-bit mantissa, so the arithmetic runs in at least float32; the
    loss is returned in the embeddings' dtype.
    """
    return accumulation_dtype(embeddings.dtype)


class ClassWeightLoss(nnx.Module):
    """Base of the class-weight losses: validation, dtype handling, the label policy under jit.

    Subclasses implement :meth:`_per_sample` (one loss value per embedding, reduced by
    ``reducer``, the mean by default as in pytorch-metric-learning) or override :meth:`_loss`; both
    receive validated embeddings already cast to the compute dtype.

    Eager calls reject bad input with ``ValueError``/``TypeError``. Under ``jax.jit`` / ``nnx.jit``
    the shape and dtype checks still run, but values cannot be inspected: a batch with a label
    outside ``[0, num_classes)`` then returns NaN rather than a wrong number, and NaN embeddings
    propagate to a NaN loss.
    """

    # pytorch-metric-learning's ProxyNCA counts only the anchors of the tuple (``using_ref``).
    miner_weights_anchors_only: ClassVar[bool] = False

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        reducer: BaseReducer | None = None,
        *,
        weight_regularizer: Any = None,
        weight_reg_weight: float = 1.0,
        embedding_regularizer: Any = None,
        embedding_reg_weight: float = 1.0,
    ) -> None:
        checks.check_positive_int(num_classes, "num_classes")
        checks.check_positive_int(embedding_size, "embedding_size")
        if reducer is not None and not isinstance(reducer, BaseReducer):
            raise TypeError(
                "expected `reducer` to be a calibrax.metric_learning reducer or None, "
                f"got {type(reducer).__name__}"
            )
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.reducer = reducer
        self.weight_regularizer = check_regularizer(weight_regularizer, "weight_regularizer")
        self.weight_reg_weight = float(weight_reg_weight)
        self.embedding_regularizer = check_regularizer(
            embedding_regularizer, "embedding_regularizer"
        )
        self.embedding_reg_weight = float(embedding_reg_weight)

    def class_weights(self) -> jax.Array:
        """The class weights as (rows, embedding_size), one row per class (or sub-centre): what
        ``weight_regularizer`` sees (pytorch-metric-learning passes ``W.t()`` / ``proxies``)."""
        return self.W[...].T

    def _per_sample(
        self, embeddings: Float[Array, "batch dim"], labels: Int[Array, " batch"]
    ) -> Float[Array, " batch"]:
        raise NotImplementedError

    def _loss(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        miner_weights: Float[Array, " batch"],
    ) -> Float[Array, ""]:
        """The per-sample losses times the miner weights, reduced over the whole batch (as
        pytorch-metric-learning: a sample the miner left out counts as a 0)."""
        values = self._per_sample(embeddings, labels) * miner_weights
        reducer = self.reducer if self.reducer is not None else MeanReducer()
        if hasattr(reducer, "bind"):  # reducers that use the labels (ClassWeightedReducer...)
            reducer = reducer.bind(labels)
        return reducer(values, jnp.ones_like(values))

    def validate_inputs(
        self,
        embeddings: jax.Array,
        labels: jax.Array | None,
        indices_tuple: Any = None,
        ref_emb: Any = None,
        ref_labels: Any = None,
    ) -> tuple[jax.Array, jax.Array, Any]:
        """Check shapes, dtypes and (when concrete) values of a batch.

        Returns:
            ``(embeddings, labels, indices)``, the selection in fixed-shape form.

        Raises:
            ValueError: If ``embeddings`` is not 2-D, is empty, has a second dimension other
                than ``embedding_size`` or holds NaN/Inf; if ``labels`` is None, not 1-D, has
                another length than ``embeddings``, or holds a value outside
                ``[0, num_classes)``; if ``ref_emb`` is given (``ref_emb is not supported by
                <Loss>``, as pytorch-metric-learning refuses it); or if ``indices_tuple`` is
                malformed.
            TypeError: If ``embeddings`` is not floating point or ``labels`` not integer.
        """
        embeddings, labels_out, indices, _ = prepare_inputs(
            type(self).__name__,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            supports_ref=False,
            requires_labels=True,
        )
        checks.check_dim(embeddings, 1, self.embedding_size, "embeddings", "embedding_size")
        checks.check_labels_in_range(labels, self.num_classes, "labels")
        return embeddings, labels_out, indices

    @checks.nan_if_invalid
    def __call__(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"] | None = None,
        indices_tuple: Any = None,
        ref_emb: Any = None,
        ref_labels: Any = None,
    ) -> Float[Array, ""]:
        """The loss of a batch.

        Args:
            embeddings: Embedding vectors, shape ``(batch, embedding_size)``, any float dtype.
            labels: Integer class ids in ``[0, num_classes)``, shape ``(batch,)`` (required).
            indices_tuple: Optional miner output or padded index tuple: each sample's loss is
                weighted by how often it appears in the selected pairs/triplets, divided by the
                largest count (pytorch-metric-learning's ``convert_to_weights``).
            ref_emb: Not supported (raises ``ValueError``), as in pytorch-metric-learning.
            ref_labels: Not supported.

        Returns:
            The scalar loss, in the dtype of ``embeddings``; differentiable with respect to the
            embeddings and to the class weights.

        Raises:
            ValueError: See :meth:`validate_inputs`.
            TypeError: See :meth:`validate_inputs`.
        """
        embeddings, labels, indices = self.validate_inputs(
            embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        dtype = compute_dtype(embeddings)
        weights = element_weights(
            indices, embeddings.shape[0], dtype, anchors_only=self.miner_weights_anchors_only
        )
        loss = self._loss(embeddings.astype(dtype), labels, weights)
        loss = add_regularization(
            loss, self.weight_regularizer, self.weight_reg_weight, self.class_weights()
        )
        loss = add_regularization(
            loss, self.embedding_regularizer, self.embedding_reg_weight, embeddings
        )
        out_of_range = jnp.any((labels < 0) | (labels >= self.num_classes))
        loss = jnp.where(out_of_range, jnp.nan, loss)
        return loss.astype(embeddings.dtype)
