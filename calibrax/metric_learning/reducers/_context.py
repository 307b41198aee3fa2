"""How the context-aware reducers read a loss term: which axis holds the anchors.

pytorch-metric-learning hands a reducer index tuples (``(anchors, others)`` for pairs, ``indices``
for elements) with every loss. Here a reducer sees fixed-shape ``values`` and ``weights`` only,
plus the batch labels bound by the loss (:meth:`~calibrax.metric_learning.BaseMetricLossFunction`
calls ``reducer.bind(labels)`` when a reducer has it). The anchor of each value follows from the
term's shape, for the shapes the tier-3 losses produce:

- ``(B, N)`` with ``N > 1``: one value per pair, anchor = row (``N`` is ``B``, or the reference
  set's size);
- ``(B,)`` or ``(B, 1)``: one value per sample (PML's "element" reduction);
- ``(1, B)``: one value per sample, laid out along the columns (the mirrored half of a row-wise
  pair loss).

Any other shape is ambiguous and raises.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def anchor_axis_kind(shape: tuple[int, ...], batch: int) -> str:
    """``"pair"`` (anchors on axis 0 of a (B, N) term), ``"rows"`` ((B,) or (B, 1)) or ``"cols"``
    ((1, B)); raises ``ValueError`` for any other shape."""
    if len(shape) == 1 and shape[0] == batch:
        return "rows"
    if len(shape) == 2 and shape[0] == batch and shape[1] == 1:
        return "rows"
    if len(shape) == 2 and shape[0] == batch:
        return "pair"
    if len(shape) == 2 and shape[0] == 1 and shape[1] == batch:
        return "cols"
    raise ValueError(
        f"expected loss values of shape ({batch},), ({batch}, 1), (1, {batch}) or ({batch}, N) "
        f"for a batch of {batch}, got shape {shape}"
    )


def per_anchor(x: jax.Array, shape: tuple[int, ...], batch: int) -> jax.Array:
    """Broadcast the (B,) per-anchor array ``x`` to a term of ``shape`` (see the module doc)."""
    kind = anchor_axis_kind(shape, batch)
    if kind == "cols":
        return x[None, :]
    if len(shape) == 1:
        return x
    return x[:, None]


def require_labels(labels: jax.Array | None, name: str) -> jax.Array:
    """The bound labels, or a ``ValueError`` naming how to bind them."""
    if labels is None:
        raise ValueError(
            f"{name} needs the batch labels: pass it as a loss's `reducer=` (the loss binds them), "
            "or call `reducer.bind(labels)` first"
        )
    return jnp.asarray(labels)
