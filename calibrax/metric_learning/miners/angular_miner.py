"""AngularMiner: the triplets whose angle at the negative exceeds a threshold."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from calibrax.metric_learning.miners._distance_checks import require_unit_l2
from calibrax.metric_learning.miners.base_miner import BaseMiner
from calibrax.metric_learning.tuples import TripletMask
from calibrax.metric_learning.tuples import label_masks

__all__ = ["AngularMiner", "AngularTripletMask"]

# torch.nn.functional.pairwise_distance adds eps to the difference: ||x1 - x2 + eps||.
_TORCH_PAIRWISE_EPS = 1e-6


@struct.dataclass
class AngularTripletMask(TripletMask):
    """A :class:`~calibrax.metric_learning.TripletMask` whose rule is the angular condition.

    Triplet ``(a, p, n)`` is selected iff ``pos[a, p]``, ``neg[a, n]`` and
    ``atan(|x_a - x_p| / (2 |x_n - c|)) > angle``, ``c = (x_a + x_p) / 2``. Each anchor's
    (positive, negative) slice is computed on demand in O(B² + B·d) memory.
    """

    embeddings: Any = None
    angle: Any = None

    def anchor_slice(self, a: jax.Array) -> jax.Array:
        x = self.embeddings
        eps = jnp.asarray(_TORCH_PAIRWISE_EPS, x.dtype)
        xa = x[a]
        ap = jnp.sqrt(jnp.sum((xa[None, :] - x + eps) ** 2, axis=1))  # over p
        centers = (xa[None, :] + x) / 2  # over p
        u = x + eps  # over n: |x_n - c_p + eps|^2 = |u_n|^2 + |c_p|^2 - 2 u_n . c_p
        sq = (
            jnp.sum(centers * centers, axis=1)[:, None]
            + jnp.sum(u * u, axis=1)[None, :]
            - 2 * jnp.matmul(centers, u.T, precision=jax.lax.Precision.HIGHEST)
        )
        nc = jnp.sqrt(jnp.maximum(sq, 0))  # [p, n]
        angles = jnp.arctan(ap[:, None] / (2 * nc))
        return self.pos[a][:, None] & self.neg[a][None, :] & (angles > self.angle)


@dataclasses.dataclass(frozen=True)
class AngularMiner(BaseMiner):
    """Triplets with an angle above ``angle`` degrees, as pytorch-metric-learning's.

    The angle of triplet ``(a, p, n)`` is ``atan(d(a, p) / (2 d(n, c)))`` with ``c`` the
    midpoint of anchor and positive (Wang et al.'s angular loss). As in PML, the distances are
    ``torch.nn.functional.pairwise_distance`` of the raw embeddings (``|x - y + 1e-6|``, no
    normalisation), although the miner's distance must be Euclidean on normalised embeddings.
    Returns an :class:`AngularTripletMask` (O(B²) memory; a loss rebuilds one anchor's slice at
    a time).

    Args:
        angle: Threshold in degrees (default 20).
        distance: Must be ``LpDistance(p=2, power=1, normalize_embeddings=True)`` (the default).

    Raises:
        ValueError: If ``distance`` is another distance, or ``angle`` is not a finite number.

    References:
        Wang et al., 2017, "Deep Metric Learning with Angular Loss", arXiv:1708.01682.
    """

    angle: float = 20

    def __post_init__(self) -> None:
        require_unit_l2(self.distance, "AngularMiner")
        a = self.angle
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
            raise ValueError(f"expected `angle` to be a finite number of degrees, got {a!r}")

    def mine(self, embeddings: jax.Array, labels: jax.Array) -> AngularTripletMask:
        pos, neg = label_masks(labels)
        batch, dtype = labels.shape[0], embeddings.dtype
        return AngularTripletMask(
            pos=pos,
            neg=neg,
            score=jnp.zeros((batch, batch), dtype),
            low=jnp.asarray(-jnp.inf, dtype),
            high=jnp.asarray(jnp.inf, dtype),
            bounded=True,
            embeddings=embeddings,
            angle=jnp.asarray(math.radians(self.angle), dtype),
        )
