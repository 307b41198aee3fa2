"""LPIPS of large images in overlapping tiles: bounded memory, the whole-image value.

LPIPS is, per tap, a spatial mean of per-position distances (see :mod:`calibrax.learned.lpips`).
Each position of a tap depends only on the pixels in its receptive field, so the image can be cut
into windows that overlap by a margin of at least half the deepest tap's receptive field: each
window is run through the trunk on its own, and each keeps only the positions it owns (those
whose receptive field lies inside it, or reaches the image border where the window does). The
owned positions of all windows partition every tap's grid, their distances are summed in float64
and divided by the grid's size, exactly as the whole-image mean.

Exactness. The positions kept are computed from exactly the pixels (and the zero padding at the
image border) that the whole-image pass uses, so the result equals the whole image's up to float
rounding: window origins are multiples of 32 (every tap's stride divides 32) and every window's
height and width are congruent to the image's modulo 32, so that a TensorFlow ``SAME``-padded
trunk (``efficientnet-lite0``) pads each window's edges as it pads the image's. What differs is
the order of float32 operations (XLA may choose another convolution algorithm for another shape)
and the summation of the means (float64 here): the tests bound the difference by 1e-6
relative (seen: below 1e-7).

Receptive fields (the deepest LPIPS tap, from the architectures): AlexNet relu5 163 pixels,
VGG16 relu5_3 196, SqueezeNet 1.1 fire9 207, EfficientNet-Lite0's last stage 851. Half of it is
enough context because every trunk pads (nearly) symmetrically, so a position's field reaches
about half of it on either side. The tests compare AlexNet and EfficientNet-Lite0 tiles with the
whole image, and check that less context (64 pixels for AlexNet) is not exact.

Memory. Every window has the same shape (one compilation), at most ``tile`` pixels a side, so the
device memory of a pass does not grow with the image; only the two decoded images are held on
the host (as their own dtype: a uint8 image is scaled to [0, 1] one window at a time).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "RECEPTIVE_FIELDS",
    "TILE_ALIGN",
    "TilePlan",
    "default_margin",
    "default_tile",
    "lpips_tiled",
    "tile_plan",
]

# The receptive field (pixels) of each trunk's deepest LPIPS tap.
RECEPTIVE_FIELDS = {"alex": 163, "vgg": 196, "squeeze": 207, "efficientnet-lite0": 851}
# Window origins and size residues: a multiple of every trunk's total stride (16 or 32).
TILE_ALIGN = 32
# New pixels per window side, beyond the two margins, of the default tile: on a 3000x4000 image
# with AlexNet (CPU), 1024 runs as fast as the whole image at once in half its peak memory; 512
# took 2.6 times as long (more overlap).
_DEFAULT_CORE = 1024


def default_margin(net: str) -> int:
    """Half the receptive field of ``net``'s deepest tap, rounded up to :data:`TILE_ALIGN`."""
    return TILE_ALIGN * math.ceil(RECEPTIVE_FIELDS[net] / (2 * TILE_ALIGN))


def default_tile(net: str) -> int:
    """The default window side for ``net``: both margins and 1024 new pixels (alex: 1216)."""
    return 2 * default_margin(net) + _DEFAULT_CORE


@dataclasses.dataclass(frozen=True)
class _Axis:
    window: int  # the windows' length along this axis
    starts: tuple[int, ...]  # the windows' origins
    bounds: tuple[int, ...]  # owned ranges [bounds[i], bounds[i + 1]) in pixels


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """The windows of :func:`lpips_tiled` for one image size.

    Attributes:
        height: Image height.
        width: Image width.
        margin: Pixels of context on each side of a window's owned region.
        window: (height, width) of every window.
        rows: Window origins along the height.
        cols: Window origins along the width.
    """

    height: int
    width: int
    margin: int
    window: tuple[int, int]
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    row_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]

    @property
    def num_tiles(self) -> int:
        return len(self.rows) * len(self.cols)


def _axis(length: int, margin: int, tile: int) -> _Axis:
    if length <= tile:
        return _Axis(length, (0,), (0, length))
    # The longest window within `tile` whose length is congruent to the image's modulo the
    # alignment (so that SAME padding treats its far edge as it treats the image's).
    window = tile - (tile - length) % TILE_ALIGN
    step = TILE_ALIGN * ((window - 2 * margin) // TILE_ALIGN)
    n = 1 + -(-(length - window) // step)
    starts = tuple(min(i * step, length - window) for i in range(n))
    bounds = (0, *(s + margin for s in starts[1:]), length)
    return _Axis(window, starts, bounds)


def tile_plan(height: int, width: int, *, margin: int, tile: int) -> TilePlan:
    """Overlapping windows covering a ``height`` x ``width`` image (see the module docstring).

    Args:
        height: Image height.
        width: Image width.
        margin: Context on each side, a multiple of :data:`TILE_ALIGN`.
        tile: The largest window side; at least ``2 * margin + 2 * TILE_ALIGN``.

    Raises:
        ValueError: If ``margin`` is not a positive multiple of the alignment, or ``tile`` is
            too small for it.
    """
    if margin <= 0 or margin % TILE_ALIGN:
        raise ValueError(
            f"expected `margin` to be a positive multiple of {TILE_ALIGN}, got {margin}"
        )
    least = 2 * margin + 2 * TILE_ALIGN
    if tile < least:
        raise ValueError(
            f"expected `tile` >= {least} (twice the margin {margin} plus {2 * TILE_ALIGN}), "
            f"got {tile}"
        )
    h, w = _axis(height, margin, tile), _axis(width, margin, tile)
    return TilePlan(
        height, width, margin, (h.window, w.window), h.starts, w.starts, h.bounds, w.bounds
    )


def _tap_sizes(model: Any, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    probe = jax.ShapeDtypeStruct(shape, jnp.float32)
    maps = jax.eval_shape(lambda a, b: model.tap_maps(a, b, normalize=False), probe, probe)
    return [tuple(int(d) for d in m.shape[1:3]) for m in maps]


def _owned(bounds: tuple[int, ...], i: int, stride: int, grid: int, start: int) -> slice:
    """The window-local slice of the tap positions owned by window ``i`` along one axis."""
    lo = 0 if i == 0 else bounds[i] // stride
    hi = grid if i == len(bounds) - 2 else bounds[i + 1] // stride
    return slice(lo - start // stride, hi - start // stride)


def lpips_tiled(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    tile: int | None = None,
    margin: int | None = None,
    normalize: bool | None = None,
    progress: bool = False,
) -> np.ndarray:
    """LPIPS of (large) images computed window by window, equal to ``model(x, y)``.

    Args:
        model: An :class:`~calibrax.learned.LPIPS` (not ``spatial``).
        x: Images (batch, height, width, 3) as float in the model's convention, or ``uint8`` in
            [0, 255] (then scaled to [0, 1] window by window, and ``normalize`` is True).
        y: Images of the same shape and dtype.
        tile: The largest window side in pixels (default ``2 * margin + 1024``: 1216 for
            ``alex``, 1920 for ``efficientnet-lite0``). Device memory grows with ``tile``, not
            with the image.
        margin: Context on each side of a window (default: half the receptive field of the
            trunk's deepest tap, rounded up to a multiple of 32; see :data:`RECEPTIVE_FIELDS`).
        normalize: The input convention (default: the model's); ignored for ``uint8``.
        progress: Show a progress bar over the windows (on a terminal, when there are several).

    Returns:
        float64 distances of shape (batch,).

    Raises:
        ValueError: As :meth:`LPIPS.__call__` for bad images (checked once on the host), for a
            spatial model, or for a ``tile`` too small for the margin.
    """
    if model.spatial:
        raise ValueError("expected an LPIPS model with `spatial=False`, got spatial=True")
    x, y = np.asarray(x), np.asarray(y)
    as_uint8 = x.dtype == np.uint8 and y.dtype == np.uint8
    if as_uint8:
        normalize = True
    else:
        normalize = model.normalize if normalize is None else normalize
    margin = default_margin(model.net) if margin is None else margin
    tile = 2 * margin + _DEFAULT_CORE if tile is None else tile  # default_tile(net)
    if as_uint8:
        # The shape checks of LPIPS.__call__ on zero-copy float views (uint8 is always in range).
        model._validate(_float_view(x), _float_view(y), normalize)
    else:
        model._validate(x, y, normalize)
    plan = tile_plan(x.shape[1], x.shape[2], margin=margin, tile=tile)
    full = _tap_sizes(model, x.shape)
    if plan.num_tiles == 1:
        strides = [1] * len(full)  # one window owns every position
    else:
        # Each tap's stride, from how its grid grows with the input (exact for every trunk here).
        local = _tap_sizes(model, (x.shape[0], *plan.window, 3))
        grown = _tap_sizes(model, (x.shape[0], plan.window[0] + TILE_ALIGN, plan.window[1], 3))
        strides = [TILE_ALIGN // (g[0] - lc[0]) for g, lc in zip(grown, local, strict=True)]
    maps_fn = _maps_fn(normalize)
    sums = np.zeros((len(full), x.shape[0]), np.float64)
    windows = [(i, r, j, c) for i, r in enumerate(plan.rows) for j, c in enumerate(plan.cols)]
    for i, r, j, c in _bar(windows, progress):
        xs = x[:, r : r + plan.window[0], c : c + plan.window[1]]
        ys = y[:, r : r + plan.window[0], c : c + plan.window[1]]
        if as_uint8:
            xs = xs.astype(np.float32) / np.float32(255.0)
            ys = ys.astype(np.float32) / np.float32(255.0)
        maps = maps_fn(model, jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32))
        for t, (m, (gh, gw), s) in enumerate(zip(maps, full, strides, strict=True)):
            rows = _owned(plan.row_bounds, i, s, gh, r)
            cols = _owned(plan.col_bounds, j, s, gw, c)
            if min(rows.start, cols.start) < 0 or rows.stop > m.shape[1] or cols.stop > m.shape[2]:
                raise RuntimeError(  # pragma: no cover - a trunk whose grid is not aligned
                    f"tap {t} of trunk {model.net!r} does not tile: window {plan.window} at "
                    f"({r}, {c}) has a {m.shape[1]}x{m.shape[2]} grid, owned rows {rows}, "
                    f"cols {cols}"
                )
            sums[t] += np.asarray(m[:, rows, cols], np.float64).sum(axis=(1, 2))
    return sum(sums[t] / (gh * gw) for t, (gh, gw) in enumerate(full))


def _float_view(a: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.float32(0.0), a.shape)


_MAPS_FNS: dict[bool, Any] = {}


def _maps_fn(normalize: bool):
    # One compiled program per window shape and model graph (nnx.jit's cache).
    if normalize not in _MAPS_FNS:
        _MAPS_FNS[normalize] = nnx.jit(lambda m, a, b: m.tap_maps(a, b, normalize=normalize))
    return _MAPS_FNS[normalize]


def _bar(items: list, enabled: bool):
    if not enabled or len(items) < 2:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is an optional extra
        return items
    return tqdm(items, desc="lpips tiles", unit="tile", file=sys.stderr, disable=None)
