"""BatchEasyHardMiner: per anchor, one positive and one negative chosen by strategy."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import PairMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["BatchEasyHardMiner"]

STRATEGIES = ("hard", "semihard", "easy", "all")


def _range(value: Any, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"expected `{name}` to be None or a (low, high) pair, got {value!r}"
        ) from None
    if not low <= high:
        raise ValueError(f"expected `{name}` to have low <= high, got {value!r}")
    return low, high


@dataclasses.dataclass(frozen=True)
class BatchEasyHardMiner(BaseMiner):
    """One positive and one negative per anchor by strategy, as pytorch-metric-learning's.

    Positives: ``"easy"`` = the closest, ``"hard"`` = the farthest, ``"semihard"`` = the farthest
    among those closer than the anchor's selected negative, ``"all"`` = every positive pair.
    Negatives: ``"easy"`` = the farthest, ``"hard"`` = the closest, ``"semihard"`` = the closest
    among those farther than the anchor's selected positive, ``"all"`` = every negative pair.
    ``allowed_pos_range`` / ``allowed_neg_range`` keep only pairs whose distance (or similarity)
    lies in ``[low, high]``. Without ``"all"``, an anchor takes part only if it has both a
    positive and a negative. Ties go to the lowest index (as ``torch.min``/``torch.max``).
    Returns a :class:`~calibrax.metric_learning.PairMask`.

    Args:
        pos_strategy: Default ``"easy"``.
        neg_strategy: Default ``"semihard"``.
        allowed_pos_range: Default None (no range).
        allowed_neg_range: Default None.
        distance: Default :class:`~calibrax.metric_learning.LpDistance`.

    Raises:
        ValueError: For an unknown strategy, both strategies ``"semihard"``, ``"semihard"``
            with ``"all"``, or a malformed range.
    """

    pos_strategy: str = "easy"
    neg_strategy: str = "semihard"
    allowed_pos_range: Any = None
    allowed_neg_range: Any = None

    def __post_init__(self) -> None:
        for name in ("pos_strategy", "neg_strategy"):
            value = getattr(self, name)
            if value not in STRATEGIES:
                raise ValueError(
                    f"expected `{name}` to be one of {', '.join(map(repr, STRATEGIES))}, "
                    f"got {value!r}"
                )
        if self.pos_strategy == self.neg_strategy == "semihard":
            raise ValueError(
                'expected at most one of `pos_strategy` and `neg_strategy` to be "semihard"'
            )
        if {self.pos_strategy, self.neg_strategy} == {"semihard", "all"}:
            raise ValueError('expected "semihard" not to be combined with "all"')
        object.__setattr__(
            self, "allowed_pos_range", _range(self.allowed_pos_range, "allowed_pos_range")
        )
        object.__setattr__(
            self, "allowed_neg_range", _range(self.allowed_neg_range, "allowed_neg_range")
        )

    def _per_row(
        self, smallest: bool, mat: jax.Array, keep: jax.Array, val_range: Any, thresholds: Any
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """PML's ``get_x_per_row``: (value, index, row has a candidate) of the min/max per row."""
        if thresholds is not None:
            beyond = mat <= thresholds[:, None] if smallest else mat >= thresholds[:, None]
            keep = keep & ~beyond
        if val_range is not None:
            keep = keep & ~((mat > val_range[1]) | (mat < val_range[0]))
        fill = jnp.asarray(jnp.inf if smallest else -jnp.inf, mat.dtype)
        masked = jnp.where(keep, mat, fill)
        index = jnp.argmin(masked, axis=1) if smallest else jnp.argmax(masked, axis=1)
        value = jnp.take_along_axis(masked, index[:, None], axis=1)[:, 0]
        return value, index, jnp.any(keep, axis=1)

    def mine(self, embeddings: jax.Array, labels: jax.Array) -> PairMask:
        mat = self.dist(embeddings)
        inverted = self.dist.is_inverted
        pos_mask, neg_mask = label_masks(labels)
        # Positives: hard/semihard = farthest (max distance, min similarity); easy = closest.
        pos_smallest = (self.pos_strategy == "easy") != inverted
        # Negatives: hard/semihard = closest; easy = farthest.
        neg_smallest = (self.neg_strategy in ("hard", "semihard")) != inverted

        def positives(thr: Any = None) -> tuple[jax.Array, jax.Array, jax.Array]:
            return self._per_row(pos_smallest, mat, pos_mask, self.allowed_pos_range, thr)

        def negatives(thr: Any = None) -> tuple[jax.Array, jax.Array, jax.Array]:
            return self._per_row(neg_smallest, mat, neg_mask, self.allowed_neg_range, thr)

        pos_all, neg_all = self.pos_strategy == "all", self.neg_strategy == "all"
        if self.pos_strategy == "semihard" and not neg_all:
            n_val, n_idx, n_ok = negatives()
            _, p_idx, p_ok = positives(n_val)
        elif self.neg_strategy == "semihard" and not pos_all:
            p_val, p_idx, p_ok = positives()
            _, n_idx, n_ok = negatives(p_val)
        else:
            if not pos_all:
                _, p_idx, p_ok = positives()
            if not neg_all:
                _, n_idx, n_ok = negatives()
        batch = labels.shape[0]
        if not (pos_all or neg_all):
            p_ok = n_ok = p_ok & n_ok
        pos = pos_mask if pos_all else jax.nn.one_hot(p_idx, batch, dtype=bool) & p_ok[:, None]
        neg = neg_mask if neg_all else jax.nn.one_hot(n_idx, batch, dtype=bool) & n_ok[:, None]
        return PairMask(pos=pos.astype(jnp.int32), neg=neg.astype(jnp.int32))
