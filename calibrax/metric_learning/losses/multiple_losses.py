"""MultipleLosses: a weighted sum of losses, each with its own optional miner."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.metric_learning.base import prepare_inputs

__all__ = ["MultipleLosses"]


def _multiple_example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
    from calibrax.metric_learning.losses.contrastive import ContrastiveLoss
    from calibrax.metric_learning.losses.triplet_margin import TripletMarginLoss

    embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
    labels = jnp.array([0, 0, 1, 1, 2, 2, 0, 1], jnp.int32)

    def fn(e: jax.Array, l: jax.Array) -> jax.Array:
        return MultipleLosses([ContrastiveLoss(), TripletMarginLoss()], weights=[1.0, 0.5])(e, l)

    return fn, (embeddings, labels)


@register(
    "multiple_losses",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=_multiple_example,
)
class MultipleLosses(nnx.Module):
    """The weighted sum of several losses, as pytorch-metric-learning 2.9's ``MultipleLosses``.

    ``losses`` is a list or a dict of losses; ``miners`` (optional) a list of the same length
    (``None`` where a loss gets no miner) or a dict over some of the keys; ``weights`` (default
    1 each) a list of the same length or a dict over all the keys. A call computes
    ``sum_i weights[i] * losses[i](embeddings, labels, indices_i)``, with ``indices_i`` the output
    of loss ``i``'s miner on the batch, or else the ``indices_tuple`` given to the call.

    Args:
        losses: A list/tuple or a dict of losses.
        miners: Optional list/tuple or dict of miners (see above).
        weights: Optional list/tuple or dict of floats (see above).

    Raises:
        ValueError: If ``losses`` is empty, or ``miners`` / ``weights`` do not match its form,
            length or keys.
        TypeError: If ``losses`` is neither a list/tuple nor a dict.
    """

    def __init__(self, losses: Any, miners: Any = None, weights: Any = None) -> None:
        if isinstance(losses, Mapping):
            self.is_dict = True
            keys = tuple(losses)
        elif isinstance(losses, Sequence) and not isinstance(losses, str):
            self.is_dict = False
            keys = tuple(range(len(losses)))
        else:
            raise TypeError(
                f"expected `losses` to be a list or a dict of losses, got {type(losses).__name__}"
            )
        if not keys:
            raise ValueError("expected at least one loss in `losses`, got none")
        self.keys = keys
        self.losses = (
            nnx.Dict({str(k): losses[k] for k in keys}) if self.is_dict else nnx.List(list(losses))
        )
        self.miners = self._per_loss(miners, "miners", match_all_keys=False, default=None)
        self.weights = tuple(
            float(w) for w in self._per_loss(weights, "weights", match_all_keys=True, default=1.0)
        )

    def _per_loss(self, x: Any, name: str, *, match_all_keys: bool, default: Any) -> tuple:
        """``x`` as a tuple aligned with ``self.keys`` (``default`` where absent)."""
        if x is None:
            return tuple(default for _ in self.keys)
        if self.is_dict:
            if not isinstance(x, Mapping):
                raise ValueError(
                    f"expected `{name}` to be a dict like `losses`, got {type(x).__name__}"
                )
            extra = sorted(str(k) for k in x if k not in self.keys)
            if extra:
                raise ValueError(
                    f"expected the keys of `{name}` to be keys of `losses`, got {extra}"
                )
            missing = sorted(str(k) for k in self.keys if k not in x)
            if match_all_keys and missing:
                raise ValueError(
                    f"expected `{name}` to have every key of `losses`, missing {missing}"
                )
            return tuple(x.get(k, default) for k in self.keys)
        if not isinstance(x, Sequence) or isinstance(x, str):
            raise ValueError(
                f"expected `{name}` to be a list like `losses`, got {type(x).__name__}"
            )
        if len(x) != len(self.keys):
            raise ValueError(
                f"expected `{name}` to have one entry per loss ({len(self.keys)}), got {len(x)}"
            )
        return tuple(x)

    def __call__(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any = None,
    ) -> Float[Array, ""]:
        """The weighted sum of the losses.

        Raises:
            ValueError: If ``indices_tuple`` is given while miners are set (pytorch-metric-learning
                asserts the same), or on the losses' own input errors.
        """
        if indices_tuple is not None and any(m is not None for m in self.miners):
            raise ValueError("expected no indices_tuple when MultipleLosses has miners")
        prepare_inputs("MultipleLosses", embeddings, labels, indices_tuple, None, None)
        total = None
        for i, key in enumerate(self.keys):
            loss = self.losses[str(key)] if self.is_dict else self.losses[i]
            miner = self.miners[i]
            indices = miner(embeddings, labels) if miner is not None else indices_tuple
            term = loss(embeddings, labels, indices) * self.weights[i]
            total = term if total is None else total + term
        return total
