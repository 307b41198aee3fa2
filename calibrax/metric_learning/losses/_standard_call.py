"""The full pytorch-metric-learning call, ``loss(embeddings, labels=None, indices_tuple=None,
ref_emb=None, ref_labels=None)``, for losses that are not pair losses.

Each loss states what it accepts (class attributes) and gets the matching checks, with messages
that name the argument and the rule, before :meth:`StandardCallLoss.compute_full` runs. As in
pytorch-metric-learning, ``ref_emb=None`` means "the batch itself" (``ref_labels`` then are the
labels).
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.metric_learning.base import BaseMetricLossFunction
from calibrax.metric_learning.base import validate_embeddings_and_labels
from calibrax.metric_learning.losses._pair_base import DistanceLoss

__all__ = ["StandardCallLoss", "StandardDistanceLoss"]


def _check_embeddings(x: Any, name: str) -> None:
    checks.check_rank(x, 2, name, "batch, embedding_dim")
    checks.check_floating(x, name)
    checks.check_nonempty(x, name)
    checks.check_finite(x, name)


def _check_labels(labels: Any, embeddings: Any, name: str, emb_name: str) -> None:
    checks.check_rank(labels, 1, name, "batch")
    checks.check_integer(labels, name)
    checks.check_same_length(embeddings, labels, emb_name, name)


class StandardCallLoss(BaseMetricLossFunction):
    """A loss called as pytorch-metric-learning's: see the module docstring.

    Attributes:
        uses_labels: ``"required"``, ``"optional"`` or ``"unsupported"`` (then ``labels`` and
            ``ref_labels`` must be None).
        uses_ref: Whether ``ref_emb`` / ``ref_labels`` are accepted.
        uses_indices_tuple: Whether a miner output is accepted.
        why_not: Short reason shown when an unsupported argument is given.
    """

    uses_labels: ClassVar[str] = "required"
    uses_ref: ClassVar[bool] = False
    uses_indices_tuple: ClassVar[bool] = False

    def validate_full(
        self,
        embeddings: Any,
        labels: Any,
        indices_tuple: Any,
        ref_emb: Any,
        ref_labels: Any,
    ) -> None:
        """Check every argument against what the loss accepts.

        Raises:
            ValueError: For a missing required or a given unsupported argument, and for the
                shape and value errors of :func:`validate_embeddings_and_labels` (also for
                ``ref_emb``/``ref_labels``, whose embedding size must match).
            TypeError: For wrong dtypes, or an ``indices_tuple`` that is not a miner output.
        """
        name = type(self).__name__
        if self.uses_labels == "unsupported":
            if labels is not None or ref_labels is not None:
                given = "labels" if labels is not None else "ref_labels"
                raise ValueError(
                    f"expected `labels` and `ref_labels` to be None ({name} does not use "
                    f"labels), got `{given}`"
                )
            _check_embeddings(embeddings, "embeddings")
        elif labels is None:
            if self.uses_labels == "required":
                raise ValueError(f"expected `labels` ({name} needs class labels), got None")
            _check_embeddings(embeddings, "embeddings")
        else:
            validate_embeddings_and_labels(embeddings, labels)
        if not self.uses_ref and (ref_emb is not None or ref_labels is not None):
            given = "ref_emb" if ref_emb is not None else "ref_labels"
            raise ValueError(
                f"expected `ref_emb` and `ref_labels` to be None ({name} compares the batch "
                f"with itself), got `{given}`"
            )
        if ref_emb is None and ref_labels is not None:
            raise ValueError("expected `ref_emb` with `ref_labels`, got `ref_labels` alone")
        if ref_emb is not None:
            _check_embeddings(ref_emb, "ref_emb")
            checks.check_dim(ref_emb, 1, embeddings.shape[1], "ref_emb", "embedding size")
            if ref_labels is not None:
                _check_labels(ref_labels, ref_emb, "ref_labels", "ref_emb")
            elif labels is not None and self.uses_labels != "unsupported":
                raise ValueError("expected `ref_labels` with `ref_emb` and `labels`, got None")
        if indices_tuple is not None:
            if not self.uses_indices_tuple:
                raise ValueError(
                    f"expected `indices_tuple` to be None ({name} does not take mined "
                    f"tuples), got {type(indices_tuple).__name__}"
                )
            check = getattr(indices_tuple, "validate", None)
            if check is None:
                raise TypeError(
                    "expected `indices_tuple` to be a miner output (PairMask or TripletMask) "
                    f"or None, got {type(indices_tuple).__name__}"
                )
            check(embeddings.shape[0])

    def __call__(
        self,
        embeddings: jax.Array,
        labels: jax.Array | None = None,
        indices_tuple: Any = None,
        ref_emb: jax.Array | None = None,
        ref_labels: jax.Array | None = None,
    ) -> jax.Array:
        """Validate the inputs and return the scalar loss.

        Args:
            embeddings: Embedding vectors, shape (batch, embedding_dim).
            labels: Integer class labels, shape (batch,), or None where the loss allows it.
            indices_tuple: Optional miner output, where the loss accepts one.
            ref_emb: Optional reference embeddings, shape (n_ref, embedding_dim), where the loss
                accepts them (None: the batch itself).
            ref_labels: Labels of ``ref_emb``, shape (n_ref,).

        Returns:
            The scalar loss, a differentiable array with the dtype of ``embeddings``.

        Raises:
            ValueError: See :meth:`validate_full`.
            TypeError: See :meth:`validate_full`.
        """
        self.validate_full(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        embeddings = jnp.asarray(embeddings)
        labels = None if labels is None else jnp.asarray(labels)
        ref_emb = None if ref_emb is None else jnp.asarray(ref_emb)
        ref_labels = None if ref_labels is None else jnp.asarray(ref_labels)
        reducer = self.reducer if self.reducer is not None else self.default_reducer()
        loss = self.compute_full(embeddings, labels, indices_tuple, ref_emb, ref_labels, reducer)
        # Under jit NaN/Inf inputs cannot raise; masks built from comparisons would silently drop
        # them, so the loss is NaN instead of a plausible number.
        finite = jnp.all(jnp.isfinite(embeddings))
        if ref_emb is not None:
            finite = finite & jnp.all(jnp.isfinite(ref_emb))
        loss = jnp.where(finite, loss, jnp.full_like(loss, jnp.nan))
        return loss.astype(embeddings.dtype)

    def compute_full(
        self,
        embeddings: jax.Array,
        labels: jax.Array | None,
        indices_tuple: Any,
        ref_emb: jax.Array | None,
        ref_labels: jax.Array | None,
        reducer: Any,
    ) -> jax.Array:
        """The loss from validated inputs; implemented by each loss."""
        raise NotImplementedError


class StandardDistanceLoss(StandardCallLoss, DistanceLoss):
    """A :class:`StandardCallLoss` that holds a ``distance``."""
