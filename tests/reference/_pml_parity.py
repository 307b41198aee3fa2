"""Shared helpers for the pytorch-metric-learning parity tests of calibrax.metric_learning.

Parity runs in float64 on both sides: the losses exponentiate similarities scaled by up to 1/0.07
or 80 (NTXent, Circle), which turns float32 rounding of the distance matrix (~1e-7) into relative
differences above the 1e-5 tolerance; in float64 the two implementations agree to ~1e-12.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

# Value tolerance 1e-5 relative and gradient tolerance 1e-4 (the acceptance criteria); the atol
# terms only matter for values that are exactly 0 on one side and ~1e-17 on the other.
VALUE_RTOL, VALUE_ATOL = 1e-5, 1e-12
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-9


BATCH, DIM = 14, 6


def _batch(seed: int, labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(labels), DIM)), np.asarray(labels, np.int64)


def batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named (embeddings, labels) batches, all (14, 6) so one compilation serves them all."""
    out = {}
    # Classes of sizes 4, 3, 3, 2 and two singletons.
    out["mixed"] = _batch(0, [0, 1, 0, 2, 1, 3, 0, 2, 4, 1, 2, 0, 5, 3])
    out["one_class"] = _batch(1, [7] * BATCH)
    out["all_singletons"] = _batch(2, list(range(BATCH)))
    emb, lab = _batch(3, [0, 0, 1, 1, 2, 2, 0, 1, 3, 2, 0, 1, 4, 4])
    emb[1] = emb[0]  # duplicate positive pair
    emb[3] = emb[0]  # duplicate negative pair
    out["duplicates"] = (emb, lab)
    out["two_classes"] = _batch(5, [i % 2 for i in range(BATCH)])
    out["one_pair"] = _batch(6, [0, 0, *range(1, BATCH - 1)])
    return out


BATCHES = batches()


def ours_value_and_grad_fn(
    loss: Callable[..., Any], miner: Any = None
) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    """A jitted (embeddings, labels) -> (loss, gradient w.r.t. embeddings), float64."""

    def f(x: jax.Array, l: jax.Array) -> jax.Array:
        tuples = miner(x, l) if miner is not None else None
        return loss(x, l, tuples)

    value_and_grad = jax.jit(jax.value_and_grad(f))

    def run(emb: np.ndarray, lab: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(jnp.asarray(emb, jnp.float64), jnp.asarray(lab, jnp.int32))
        return float(value), np.asarray(grad)

    return run


def pml_value_and_grad(
    loss: Any, emb: np.ndarray, lab: np.ndarray, miner: Any = None
) -> tuple[float, np.ndarray]:
    """pytorch-metric-learning's loss and its autograd gradient (float64)."""
    e = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
    l = torch.tensor(lab)
    tuples = miner(e, l) if miner is not None else None
    value = loss(e, l, tuples)
    if value.requires_grad:
        value.backward()
        grad = e.grad.numpy() if e.grad is not None else np.zeros_like(emb)
    else:
        grad = np.zeros_like(emb)
    return float(value.detach()), grad


def assert_parity(
    ours: Callable[..., Any],
    theirs: Any,
    *,
    our_miner: Any = None,
    their_miner: Any = None,
    names: tuple[str, ...] | None = None,
) -> None:
    """Loss values to 1e-5 relative, gradients to 1e-4, against pytorch-metric-learning, on every
    named batch (one compilation of ours for all of them)."""
    run = ours_value_and_grad_fn(ours, our_miner)
    for name in names or tuple(BATCHES):
        emb, lab = BATCHES[name]
        v1, g1 = run(emb, lab)
        v2, g2 = pml_value_and_grad(theirs, emb, lab, their_miner)
        np.testing.assert_allclose(v1, v2, rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=name)
        np.testing.assert_allclose(g1, g2, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=name)
        assert np.all(np.isfinite(g1)), name
