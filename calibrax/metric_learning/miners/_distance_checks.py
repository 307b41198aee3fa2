"""The distance PML's angular and distance-weighted miners require."""

from __future__ import annotations

from typing import Any

from calibrax.metric_learning.distances.lp_distance import LpDistance


def require_unit_l2(distance: Any, miner: str) -> None:
    """Raise ``ValueError`` unless ``distance`` is Euclidean on normalised embeddings (PML's
    ``assert_distance_type(LpDistance, p=2, power=1, normalize_embeddings=True)``)."""
    if distance is None:
        return
    ok = (
        type(distance) is LpDistance
        and distance.p == 2
        and distance.power == 1
        and distance.normalize_embeddings
    )
    if not ok:
        raise ValueError(
            f"expected {miner}'s `distance` to be LpDistance(p=2, power=1, "
            f"normalize_embeddings=True), got {distance!r}"
        )
