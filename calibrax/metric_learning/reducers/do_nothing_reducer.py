"""DoNothingReducer: the loss returns its unreduced terms."""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import ClassVar

import jax

from calibrax.metric_learning.reducers.base_reducer import BaseReducer

__all__ = ["DoNothingReducer"]


@dataclasses.dataclass(frozen=True)
class DoNothingReducer(BaseReducer):
    """No reduction: ``loss(...)`` returns ``{name: LossTerm}``, as PML returns its loss dict.

    PML's dictionary holds per-tuple ``losses`` with their ``indices``; here each
    :class:`~calibrax.metric_learning.LossTerm` holds fixed-shape ``values`` with ``weights``
    (how often each pair/triplet/sample counts, 0 = not selected). Losses that reduce while they
    compute (:class:`~calibrax.metric_learning.TripletMarginLoss` streams its B³ triplets) have no
    unreduced terms and raise. Row-wise pair losses over all pairs return each sub-loss as two
    mirrored halves, ``"name/rows"`` and ``"name/cols"`` (``LossTerm.scale`` 0.5 each).
    """

    keeps_terms: ClassVar[bool] = True

    def terms(self, loss: Any, embeddings: jax.Array, labels: jax.Array, indices_tuple: Any) -> Any:
        """The loss's unreduced terms (called by the loss)."""
        try:
            return loss.compute_terms(embeddings, labels, indices_tuple)
        except NotImplementedError:
            raise ValueError(
                f"DoNothingReducer: {type(loss).__name__} reduces while it computes and has no "
                "unreduced terms"
            ) from None

    def __call__(self, values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(values, weights)`` unchanged."""
        return values, weights
