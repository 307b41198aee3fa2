"""Strict parity helpers (1e-6 relative, float64) for the losses added in issue 16.

Built on :mod:`_pml_parity` (same jitted value-and-gradient function on our side, same autograd on
PML's), with tighter tolerances and one more batch shape: the (14, 6) named batches of
``_pml_parity.BATCHES`` (one class, all singletons, duplicates, two classes, one positive pair)
plus a (33, 16) batch with another seed (each shape costs one more compilation per loss). Both
sides evaluate the same formulas in float64, so the measured differences are ~1e-15; 1e-6
relative (values and gradients; gradients also 1e-9 of the largest entry, at least 1e-12, for
entries that are ~0 on both sides) is the acceptance bound of the issue.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from _pml_parity import BATCHES
from _pml_parity import ours_value_and_grad_fn
from _pml_parity import pml_value_and_grad
from flax import nnx

RTOL = 1e-6


def _extra_batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    rng = np.random.default_rng(11)
    out["large_33x16"] = (rng.normal(size=(33, 16)), rng.integers(0, 8, size=33))
    return out


ALL_BATCHES = {**BATCHES, **_extra_batches()}


def assert_close(ours: tuple[float, np.ndarray], theirs: tuple[float, np.ndarray], name: str):
    """Values to 1e-6 relative, gradients to 1e-6 relative + 1e-9 of the largest entry (at least
    1e-12: a loss that is exactly flat, such as NCA on one class, has ~1e-18 rounding noise for
    a gradient on both sides)."""
    (v1, g1), (v2, g2) = ours, theirs
    np.testing.assert_allclose(v1, v2, rtol=RTOL, atol=1e-12, err_msg=name)
    scale = max(float(np.abs(g2).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(g1, g2, rtol=RTOL, atol=max(1e-9 * scale, 1e-12), err_msg=name)
    assert np.all(np.isfinite(g1)), name


def assert_strict_parity(
    ours: Any,
    theirs: Any,
    *,
    our_miner: Any = None,
    their_miner: Any = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Compare on every batch of :data:`ALL_BATCHES` (or ``names``); returns PML's values."""
    run = ours_value_and_grad_fn(ours, our_miner)
    values = {}
    for name in names or tuple(ALL_BATCHES):
        emb, lab = ALL_BATCHES[name]
        theirs_out = pml_value_and_grad(theirs, emb, lab, their_miner)
        assert_close(run(emb, lab), theirs_out, name)
        values[name] = theirs_out[0]
    return values


NUM_CLASSES = 16  # above every label of ALL_BATCHES


@functools.partial(jax.jit, static_argnums=0)
def _class_weight_value_and_grads(graphdef: Any, state: Any, emb: Any, lab: Any, tuples: Any):
    def f(state: Any, emb: Any) -> Any:
        return nnx.merge(graphdef, state)(emb, lab, tuples)

    return jax.value_and_grad(f, argnums=(0, 1))(state, emb)


def assert_class_weight_parity(
    make_ours: Any,
    make_theirs: Any,
    attr: str,
    *,
    our_miner: Any = None,
    their_miner: Any = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Class-weight losses: PML's freshly initialised weights ``attr`` are copied into ours
    (``make_ours(num_classes, embedding_size)`` / ``make_theirs(...)``, torch seeded), then the
    loss and its gradients w.r.t. the embeddings and the weights are compared on each batch
    (float64, 1e-6 relative). Returns PML's values."""
    values = {}
    for name in names or tuple(ALL_BATCHES):
        emb, lab = ALL_BATCHES[name]
        torch.manual_seed(len(name))
        theirs = make_theirs(NUM_CLASSES, emb.shape[1]).double()
        weights = getattr(theirs, attr).detach().numpy().copy()
        e = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
        l = torch.tensor(lab)
        tuples = their_miner(e, l) if their_miner is not None else None
        value = theirs(e, l, tuples)
        value.backward()
        their_w = getattr(theirs, attr).grad
        their_w = np.zeros_like(weights) if their_w is None else their_w.numpy()
        their_e = e.grad.numpy() if e.grad is not None else np.zeros_like(emb)

        ours = make_ours(NUM_CLASSES, emb.shape[1])
        getattr(ours, attr)[...] = jnp.asarray(weights)
        x, y = jnp.asarray(emb), jnp.asarray(lab, jnp.int32)
        our_tuples = our_miner(x, y) if our_miner is not None else None
        graphdef, state = nnx.split(ours)
        our_value, (g_state, g_emb) = _class_weight_value_and_grads(
            graphdef, state, x, y, our_tuples
        )
        our_w = np.asarray(getattr(nnx.merge(graphdef, g_state), attr)[...])
        assert_close((float(our_value), np.asarray(g_emb)), (float(value.detach()), their_e), name)
        assert_close((0.0, our_w), (0.0, their_w), f"{name}: weight gradient")
        values[name] = float(value.detach())
    return values
