"""Parity helpers at the issue-16 tolerance (1e-6 relative, float64) for the losses added with it.

Each case is ``(embeddings, labels)`` as numpy arrays; ours is jitted once per loss and shape and
differentiated with ``jax.value_and_grad``, pytorch-metric-learning's by autograd, both in float64
(see ``_pml_parity`` for why float64). The absolute terms only matter for values that are exactly 0
on one side and rounding-level (~1e-17) on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

RTOL = 1e-6
VALUE_ATOL = 1e-12
GRAD_ATOL = 1e-10


def labelled_batches(
    batch: int, dim: int, seed: int, *, equal_classes: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named (embeddings, labels) batches of one shape: mixed classes, one class, all distinct
    classes, two classes, one positive pair only. With ``equal_classes`` the mixed batch has
    classes of equal size in contiguous blocks (SmoothAP's requirement) and "one_pair" is left
    out."""
    rng = np.random.default_rng(seed)

    def emb() -> np.ndarray:
        return rng.normal(size=(batch, dim))

    out = {}
    if equal_classes:
        per = 2 if batch % 2 == 0 else 1
        out["mixed"] = (emb(), np.repeat(np.arange(batch // per), per))
        if batch % 4 == 0:
            out["blocks_of_4"] = (emb(), np.repeat(np.arange(batch // 4) * 3 + 1, 4))
    else:
        out["mixed"] = (emb(), rng.integers(0, max(2, batch // 3), size=batch))
        out["one_pair"] = (emb(), np.concatenate([[0, 0], np.arange(1, batch - 1)]))
    out["one_class"] = (emb(), np.full(batch, 5))
    out["all_distinct"] = (emb(), np.arange(batch))
    out["two_classes"] = (emb(), np.arange(batch) % 2)
    return {k: (e, l.astype(np.int64)) for k, (e, l) in out.items()}


def ours_value_and_grad(
    fn: Callable[..., jax.Array], argnums: int | tuple[int, ...] = 0
) -> Callable[..., tuple[float, Any]]:
    """Jitted ``fn(*arrays) -> (value, grads)`` on float64 / int32 copies of numpy inputs."""
    step = jax.jit(jax.value_and_grad(fn, argnums=argnums))

    def run(*arrays: Any) -> tuple[float, Any]:
        args = [
            None
            if a is None
            else jnp.asarray(a, jnp.float64 if np.issubdtype(a.dtype, np.floating) else jnp.int32)
            for a in arrays
        ]
        value, grads = step(*args)
        return float(value), jax.tree.map(np.asarray, grads)

    return run


def pml_value_and_grad(
    fn: Callable[..., Any], *arrays: Any, wrt: tuple[int, ...] = (0,)
) -> tuple[float, list[np.ndarray]]:
    """``fn(*tensors)`` of pytorch-metric-learning and its gradients w.r.t. the float inputs at
    ``wrt`` (zeros where autograd gives none)."""
    tensors = []
    for i, a in enumerate(arrays):
        if a is None:
            tensors.append(None)
        elif np.issubdtype(a.dtype, np.floating):
            tensors.append(torch.tensor(a, dtype=torch.float64, requires_grad=i in wrt))
        else:
            tensors.append(torch.tensor(a))
    value = fn(*tensors)
    value = torch.as_tensor(value, dtype=torch.float64)
    if value.requires_grad:
        value.backward()
    grads = []
    for i in wrt:
        g = tensors[i].grad
        grads.append(np.zeros_like(arrays[i]) if g is None else g.numpy())
    return float(value.detach()), grads


def assert_close(ours: Any, theirs: Any, name: str, *, atol: float = GRAD_ATOL) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=atol, err_msg=name)
    assert np.all(np.isfinite(ours)), name


def assert_loss_parity(
    ours_fn: Callable[..., jax.Array],
    theirs_fn: Callable[..., Any],
    cases: dict[str, tuple[np.ndarray, ...]],
) -> None:
    """Value and gradient w.r.t. the first input, ours vs pytorch-metric-learning's, per case.

    ``ours_fn(embeddings, labels)`` and ``theirs_fn(embeddings, labels)`` (torch tensors).
    """
    run = ours_value_and_grad(ours_fn)
    for name, arrays in cases.items():
        v1, g1 = run(*arrays)
        v2, (g2,) = pml_value_and_grad(theirs_fn, *arrays)
        np.testing.assert_allclose(v1, v2, rtol=RTOL, atol=VALUE_ATOL, err_msg=name)
        assert_close(g1, g2, name)
