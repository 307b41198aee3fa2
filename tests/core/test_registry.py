"""The registry: listing and filtering, and proof of every entry's flags.

Each entry's ``example`` gives a pure function of arrays; we jit it (it must agree with the eager
call) and, where the entry claims to be differentiable, take its gradient with respect to the first
argument (it must be finite).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calibrax
from calibrax import registry

ENTRIES = registry.list_entries()


def test_registry_is_populated_and_sorted():
    names = [e.name for e in ENTRIES]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert len(names) >= 1


def test_filters():
    for entry in ENTRIES:
        assert entry in registry.list_entries(tier=entry.tier, domain=entry.domain)
        assert entry in registry.list_entries(kind=entry.kind)
    for entry in registry.list_entries(differentiable=True):
        assert entry.differentiable
    assert registry.names(tier=99) == []


def test_get_and_unknown_name():
    entry = ENTRIES[0]
    assert registry.get(entry.name) is entry.obj
    with pytest.raises(
        KeyError, match=re.escape("expected a registered name, got 'no-such-metric'")
    ):
        registry.get("no-such-metric")


def test_register_rejects_bad_kind_domain_tier_and_duplicates():
    with pytest.raises(ValueError, match=re.escape("expected `kind` to be one of")):
        registry.register("x", kind="bogus", tier=0, domain="image")
    with pytest.raises(ValueError, match=re.escape("expected `domain` to be one of")):
        registry.register("x", kind="function", tier=0, domain="bogus")
    with pytest.raises(
        ValueError, match=re.escape("expected `tier` to be one of 0, 1, 2, 3, got 7")
    ):
        registry.register("x", kind="function", tier=7, domain="image")
    taken = ENTRIES[0].name
    with pytest.raises(ValueError, match=re.escape(f"got {taken!r} which is already taken")):
        registry.register(taken, kind="function", tier=0, domain="image")(lambda: None)


def test_every_metric_has_a_direction():
    for entry in ENTRIES:
        if entry.kind in ("function", "metric", "stateful_metric") and entry.domain != "vision":
            assert entry.higher_is_better in (True, False), entry.name


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.jit_compatible], ids=lambda e: e.name)
def test_jit_flag_is_true(entry):
    assert entry.example is not None, f"{entry.name} claims jit_compatible but has no example"
    fn, args = entry.example()
    eager = fn(*args)
    jitted = jax.jit(fn)(*args)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        # jit may fuse and reorder float ops: agreement to float32 rounding, not bit-exactness.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("entry", registry.list_entries(differentiable=True), ids=lambda e: e.name)
def test_differentiable_flag_is_true(entry):
    assert entry.example is not None, f"{entry.name} claims differentiable but has no example"
    fn, args = entry.example()

    def scalar(first, *rest):
        out = fn(first, *rest)
        return sum(jnp.sum(jnp.asarray(leaf, jnp.float32)) for leaf in jax.tree.leaves(out))

    grad = jax.grad(scalar)(*args)
    assert np.all(np.isfinite(np.asarray(grad, dtype=np.float64))), entry.name


@pytest.mark.parametrize("entry", registry.list_entries(differentiable=True), ids=lambda e: e.name)
def test_forward_mode_flag_says_whether_jvp_works(entry):
    # Entries with a hand-written reverse pass (jax.custom_vjp) are flagged forward_mode=False:
    # jax.jvp raises for them and works for every other differentiable entry. Lowered only
    # (the error comes at lowering; nothing is compiled or run).
    fn, args = entry.example()

    def tangent_of_first(first):
        return jax.jvp(lambda x: fn(x, *args[1:]), (first,), (jnp.ones_like(first),))

    if entry.forward_mode:
        jax.jit(tangent_of_first).lower(args[0])
    else:
        with pytest.raises(
            TypeError,
            match=re.escape("can't apply forward-mode autodiff (jvp) to a custom_vjp function."),
        ):
            jax.jit(tangent_of_first).lower(args[0])


def test_package_version():
    assert calibrax.__version__
