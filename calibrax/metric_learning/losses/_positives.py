"""Each anchor's positives as a fixed-width table, with the width chosen at run time.

Losses whose cost is (anchors x positives x batch) would, over a dense (B, B) positive mask, do
B³ work where B² x (class size) suffices. The table width must be static under jit while the
class sizes are data, so the width is picked among a few static capacities (4, 8, 16, ..., B):
``lax.switch`` runs the branch of the smallest capacity that holds every anchor's positives, at
most twice the work of the largest class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["capacities", "switch_on_positives"]


def capacities(n: int) -> list[int]:
    """4, 8, 16, ... below ``n``, then ``n``."""
    caps, cap = [], 4
    while cap < n:
        caps.append(cap)
        cap *= 2
    return [*caps, n]


def switch_on_positives(pos: jax.Array, branch: Callable[[jax.Array, jax.Array], Any]) -> Any:
    """``branch(index, valid)`` with ``index`` (B, cap) int32 (each row's positive columns first,
    in column order, then the others) and ``valid`` (B, cap) bool, for the smallest capacity
    ``cap`` that holds the largest row count of the (B, n) bool mask ``pos``."""
    n = pos.shape[1]
    order = jnp.argsort(~pos, axis=1, stable=True).astype(jnp.int32)
    caps = capacities(n)
    largest = jnp.max(jnp.sum(pos, axis=1, dtype=jnp.int32))
    which = jnp.searchsorted(jnp.asarray(caps, jnp.int32), largest, side="left")

    def make(cap: int) -> Callable[[], Any]:
        def run() -> Any:
            index = order[:, :cap]
            return branch(index, jnp.take_along_axis(pos, index, axis=1))

        return run

    if len(caps) == 1:
        return make(caps[0])()
    return jax.lax.switch(jnp.minimum(which, len(caps) - 1), [make(c) for c in caps])
