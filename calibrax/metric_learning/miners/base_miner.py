"""The miner interface: embeddings and labels in, a fixed-shape pair or triplet mask out."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from calibrax.metric_learning.base import validate_embeddings_and_labels
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.lp_distance import LpDistance

__all__ = ["BaseMiner"]


@dataclasses.dataclass(frozen=True)
class BaseMiner:
    """Base for miners: ``miner(embeddings, labels)`` returns a ``PairMask`` or ``TripletMask``.

    Mining sees the embeddings through ``jax.lax.stop_gradient`` (pytorch-metric-learning mines
    under ``torch.no_grad``). The output has a fixed shape, so a miner and a loss jit together.

    Args:
        distance: The distance used to mine (default: the miner's own, usually
            :class:`~calibrax.metric_learning.LpDistance`).
    """

    distance: BaseDistance | None = None

    def default_distance(self) -> BaseDistance:
        """The distance used when none is given."""
        return LpDistance()

    @property
    def dist(self) -> BaseDistance:
        """The distance in use."""
        return self.distance if self.distance is not None else self.default_distance()

    def mine(self, embeddings: jax.Array, labels: jax.Array) -> Any:
        """The mask; implemented by each miner."""
        raise NotImplementedError

    def __call__(self, embeddings: jax.Array, labels: jax.Array) -> Any:
        """Validate the inputs and mine.

        Args:
            embeddings: Embedding vectors, shape (batch, embedding_dim).
            labels: Integer class labels, shape (batch,).

        Returns:
            A :class:`~calibrax.metric_learning.PairMask` or :class:`~calibrax.metric_learning.TripletMask`.

        Raises:
            ValueError: If ``embeddings`` is not 2-D or holds NaN/Inf, or the lengths differ.
            TypeError: If ``embeddings`` is not floating or ``labels`` is not integer.
        """
        validate_embeddings_and_labels(embeddings, labels)
        return self.mine(jax.lax.stop_gradient(embeddings), labels)
