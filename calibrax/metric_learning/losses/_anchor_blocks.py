"""Row-blocked evaluation of per-anchor work that builds a (B, B) array per anchor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["map_anchor_blocks"]


def map_anchor_blocks(
    fn: Callable[..., jax.Array],
    rows: tuple[jax.Array, ...],
    fills: tuple[Any, ...],
) -> jax.Array:
    """``fn(*row_blocks)`` over blocks of anchors, concatenated: shape (B, ...).

    Each array in ``rows`` is (B, ...); the last block is padded with rows of ``fills`` (chosen so
    that ``fn`` stays finite there; the padding is dropped). ``fn`` is rematerialised in the
    backward pass (``jax.checkpoint``), so memory stays at one block of intermediates instead
    of the residuals of every block a scan would keep.
    Blocks hold about 4M elements of (n, n) per anchor (``n`` the widest row); when the whole
    batch fits in one block, ``fn`` runs on it directly.
    """
    batch = rows[0].shape[0]
    width = max(x.shape[1] for x in rows)
    block = max(1, min(batch, (1 << 22) // max(1, width * width)))
    if block == batch:
        return fn(*rows)
    n_blocks = -(-batch // block)
    pad = n_blocks * block - batch

    def blocks(x: jax.Array, fill: Any) -> jax.Array:
        x = jnp.pad(x, ((0, pad), (0, 0)), constant_values=fill)
        return x.reshape(n_blocks, block, x.shape[1])

    out = jax.lax.map(
        jax.checkpoint(lambda args: fn(*args)),
        tuple(blocks(x, f) for x, f in zip(rows, fills, strict=True)),
    )
    return out.reshape((n_blocks * block, *out.shape[2:]))[:batch]
