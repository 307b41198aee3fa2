"""The miner interface: embeddings and labels in, a fixed-shape pair or triplet mask out."""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.metric_learning.base import prepare_inputs
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.lp_distance import LpDistance

__all__ = ["BaseMiner"]


@dataclasses.dataclass(frozen=True)
class BaseMiner:
    """Base for miners: ``miner(embeddings, labels, ref_emb=None, ref_labels=None)`` returns a
    ``PairMask`` or ``TripletMask`` (anchors: the batch; positives and negatives: ``ref_emb``,
    the batch itself by default), as pytorch-metric-learning's ``BaseMiner``.

    Mining sees the embeddings through ``jax.lax.stop_gradient`` (pytorch-metric-learning mines
    under ``torch.no_grad``). The output has a fixed shape, so a miner and a loss jit together.

    Extension point: implement ``mine(self, embeddings, labels, ref=None)``; ``ref`` is None (the
    batch is the reference set) or a :class:`~calibrax.metric_learning.tuples.Reference`, which
    ``tuples.label_masks(labels, ref)`` and ``base.ref_embeddings(embeddings, ref)`` turn into
    (B, M) masks and the reference rows (``ref.mask``, set by
    :class:`~calibrax.metric_learning.CrossBatchMemory`, marks the rows that exist). Set
    ``supports_ref = True`` when ``mine`` handles ``ref`` (default False: ``ref_emb`` raises).

    Args:
        distance: The distance used to mine (default: the miner's own, usually
            :class:`~calibrax.metric_learning.LpDistance`).
    """

    distance: BaseDistance | None = None
    supports_ref: ClassVar[bool] = False

    def default_distance(self) -> BaseDistance:
        """The distance used when none is given."""
        return LpDistance()

    @property
    def dist(self) -> BaseDistance:
        """The distance in use."""
        return self.distance if self.distance is not None else self.default_distance()

    def mine(self, embeddings: jax.Array, labels: jax.Array, ref: Any = None) -> Any:
        """The mask; implemented by each miner."""
        raise NotImplementedError

    def __call__(
        self,
        embeddings: jax.Array,
        labels: jax.Array,
        ref_emb: jax.Array | None = None,
        ref_labels: jax.Array | None = None,
        *,
        ref_mask: jax.Array | None = None,
        query_mask: jax.Array | None = None,
    ) -> Any:
        """Validate the inputs and mine.

        Args:
            embeddings: Embedding vectors, shape (batch, embedding_dim).
            labels: Integer class labels, shape (batch,).
            ref_emb: Optional reference embeddings, shape (ref_size, embedding_dim).
            ref_labels: Their labels, shape (ref_size,) (required with ``ref_emb``).
            ref_mask: Optional (ref_size,) bool: the reference rows that exist (the others are in
                no pair).
            query_mask: Optional (batch,) bool: the batch rows that are anchors (the others are
                in no pair); only with ``ref_emb``.

        Returns:
            A :class:`~calibrax.metric_learning.PairMask` or
            :class:`~calibrax.metric_learning.TripletMask` of shape (batch, ref_size).

        Raises:
            ValueError: If ``embeddings`` is not 2-D or holds NaN/Inf, the lengths differ, or
                ``ref_emb`` is given to a miner that does not support it.
            TypeError: If ``embeddings`` is not floating or ``labels`` is not integer.
        """
        embeddings, labels, _, ref = prepare_inputs(
            type(self).__name__,
            embeddings,
            labels,
            None,
            ref_emb,
            ref_labels,
            supports_ref=self.supports_ref,
            requires_labels=True,
        )
        embeddings = jax.lax.stop_gradient(embeddings)
        if ref is None:
            if ref_mask is not None or query_mask is not None:
                raise ValueError("got `ref_mask` or `query_mask` without `ref_emb`")
            return self.mine(embeddings, labels)
        if ref_mask is not None:
            checks.check_rank(ref_mask, 1, "ref_mask", "reference size")
            checks.check_same_length(ref.embeddings, ref_mask, "ref_emb", "ref_mask")
            ref = ref.replace(mask=jnp.asarray(ref_mask, bool))
        if query_mask is not None:
            checks.check_rank(query_mask, 1, "query_mask", "batch")
            checks.check_same_length(embeddings, query_mask, "embeddings", "query_mask")
            ref = ref.replace(query_mask=jnp.asarray(query_mask, bool))
        ref = ref.replace(embeddings=jax.lax.stop_gradient(ref.embeddings))
        return self.mine(embeddings, labels, ref=ref)
