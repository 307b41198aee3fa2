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

__all__ = ["capacities", "fold_positives", "positive_columns", "switch_on_positives"]


def capacities(n: int) -> list[int]:
    """4, 8, 16, ... below ``n``, then ``n``."""
    caps, cap = [], 4
    while cap < n:
        caps.append(cap)
        cap *= 2
    return [*caps, n]


# Up to this capacity a branch finds its columns by repeated row minima (``cap`` fused passes over
# the mask); above it by one stable argsort, which XLA on CPU runs at about 80 ms for a
# (1024, 1024) mask against 0.25 ms per pass.
_MAX_SCANNED = 64


def positive_columns(pos: jax.Array, cap: int) -> tuple[jax.Array, jax.Array]:
    """``(index, valid)``, (B, cap) each: each row's first ``cap`` positive columns of the (B, n)
    bool mask ``pos`` in column order, then column 0 (``valid`` False) where a row has fewer."""
    n = pos.shape[1]
    if cap > _MAX_SCANNED:
        index = jnp.argsort(~pos, axis=1, stable=True).astype(jnp.int32)[:, :cap]
        return index, jnp.take_along_axis(pos, index, axis=1)
    col = jnp.arange(n, dtype=jnp.int32)[None, :]
    prev = jnp.full((pos.shape[0], 1), -1, jnp.int32)
    found = []
    for _ in range(cap):
        prev = jnp.min(jnp.where(pos & (col > prev), col, n), axis=1, keepdims=True)
        found.append(prev[:, 0])
    index = jnp.stack(found, axis=1)
    valid = index < n
    return jnp.where(valid, index, 0), valid


def switch_on_positives(pos: jax.Array, branch: Callable[[jax.Array, jax.Array], Any]) -> Any:
    """``branch(index, valid)`` with ``index`` (B, cap) int32 (each row's positive columns first,
    in column order, then filler columns) and ``valid`` (B, cap) bool (whether a slot holds a
    positive), for the smallest capacity ``cap`` that holds the largest row count of the (B, n)
    bool mask ``pos`` (see :func:`positive_columns`)."""
    n = pos.shape[1]
    caps = capacities(n)
    largest = jnp.max(jnp.sum(pos, axis=1, dtype=jnp.int32))
    which = jnp.searchsorted(jnp.asarray(caps, jnp.int32), largest, side="left")

    def make(cap: int) -> Callable[[], Any]:
        def run() -> Any:
            return branch(*positive_columns(pos, cap))

        return run

    if len(caps) == 1:
        return make(caps[0])()
    return jax.lax.switch(jnp.minimum(which, len(caps) - 1), [make(c) for c in caps])


def fold_positives(
    pos: jax.Array, body: Callable[[Any, jax.Array, jax.Array], Any], init: Any
) -> Any:
    """Fold ``body(carry, index, valid)`` over the slots of each row's positive columns: in step
    ``j``, ``index`` (B,) int32 is each row's ``j``-th positive column of the (B, n) bool mask
    ``pos`` (column 0 where a row has fewer, ``valid`` False). A ``while_loop`` runs as many steps
    as the largest row count: O(B n) memory and B x n work per step, whatever the class sizes,
    with no branch per capacity (on CPU a ``lax.switch`` over (B, n) operands costs more than the
    work of a small table)."""
    n = pos.shape[1]
    col = jnp.arange(n, dtype=jnp.int32)[None, :]
    largest = jnp.max(jnp.sum(pos, axis=1, dtype=jnp.int32))

    def step(state: tuple[jax.Array, jax.Array, Any]) -> tuple[jax.Array, jax.Array, Any]:
        j, prev, carry = state
        found = jnp.min(jnp.where(pos & (col > prev[:, None]), col, n), axis=1)
        valid = found < n
        return j + 1, found, body(carry, jnp.where(valid, found, 0), valid)

    start = (jnp.zeros((), jnp.int32), jnp.full((pos.shape[0],), -1, jnp.int32), init)
    return jax.lax.while_loop(lambda state: state[0] < largest, step, start)[2]
