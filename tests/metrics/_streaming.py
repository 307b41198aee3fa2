"""Shared driver for streaming-metric tests: feed batches eagerly, under ``nnx.jit``, or under
``jax.jit`` through ``nnx.split``/``nnx.merge``, and merge two half-streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

MODES = ("eager", "nnx_jit", "jax_jit")
SIZES = (1, 7)  # then the rest: a batch of one, an odd batch, and a large remainder


def batches(*arrays: Any, sizes=SIZES) -> list[tuple[Any, ...]]:
    """Split aligned arrays into consecutive batches of ``sizes`` followed by the rest."""
    out, start = [], 0
    for size in (*sizes, arrays[0].shape[0] - sum(sizes)):
        out.append(tuple(a[start : start + size] for a in arrays))
        start += size
    return out


@nnx.jit
def _nnx_step(metric, predictions, targets):
    metric.update(predictions=predictions, targets=targets)


def stream(make: Callable[[], Any], parts: list[tuple[Any, ...]], mode: str) -> Any:
    """A metric built by ``make`` after updating it with every batch in ``parts``."""
    metric = make()
    if mode == "eager":
        for p, t in parts:
            metric.update(predictions=p, targets=t)
        return metric
    if mode == "nnx_jit":
        for p, t in parts:
            _nnx_step(metric, p, t)
        return metric
    graphdef, state = nnx.split(metric)

    @jax.jit
    def step(state, p, t):
        m = nnx.merge(graphdef, state)
        m.update(predictions=p, targets=t)
        return nnx.state(m)

    for p, t in parts:
        state = step(state, p, t)
    return nnx.merge(graphdef, state)


def merged(make: Callable[[], Any], predictions: Any, targets: Any, cut: int) -> Any:
    """Two metrics on the two sides of ``cut``, merged into the first."""
    first, second = make(), make()
    first.update(predictions=predictions[:cut], targets=targets[:cut])
    second.update(predictions=predictions[cut:], targets=targets[cut:])
    first.merge(second)
    return first


def assert_tree_close(actual: Any, expected: Any, rtol: float, atol: float = 0.0) -> None:
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol),
        actual,
        expected,
    )
