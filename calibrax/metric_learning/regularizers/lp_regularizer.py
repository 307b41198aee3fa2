"""LpRegularizer: the L``p`` norm of each row (raised to ``power``)."""

from __future__ import annotations

import dataclasses
import math

import jax

from calibrax.core.registry import register
from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.base_distance import safe_pow
from calibrax.metric_learning.regularizers.base_regularizer import BaseRegularizer
from calibrax.metric_learning.regularizers.base_regularizer import regularizer_example

__all__ = ["LpRegularizer"]


@register(
    "lp_regularizer",
    kind="regularizer",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    example=regularizer_example(lambda: LpRegularizer()),
)
@dataclasses.dataclass(frozen=True)
class LpRegularizer(BaseRegularizer):
    r"""Mean of ``||x_i||_p ** power``, as pytorch-metric-learning's ``LpRegularizer``.

    The norm's gradient at a zero row is 0 (as ``torch.norm``'s).

    Args:
        p: The norm's order, > 0 (default 2; ``math.inf`` allowed).
        power: Exponent of each norm, > 0 (default 1).
        reducer: Default :class:`~calibrax.metric_learning.MeanReducer`.

    Raises:
        ValueError: If ``p`` or ``power`` is not positive.
    """

    p: float = 2
    power: float = 1

    def __post_init__(self) -> None:
        if not self.p > 0:
            raise ValueError(f"expected `p` to be positive, got {self.p!r}")
        if not (self.power > 0 and math.isfinite(self.power)):
            raise ValueError(f"expected `power` to be a positive number, got {self.power!r}")

    def compute_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        norms = BaseDistance(normalize_embeddings=False, p=self.p).norm(x)
        values = safe_pow(norms, self.power)
        return values, jax.numpy.ones_like(values)
