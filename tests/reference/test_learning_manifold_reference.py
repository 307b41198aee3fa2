"""Parity of calibrax.metric_learning.ManifoldLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on the value and on the gradients w.r.t. the embeddings and the proxies, see
_pml_strict_b). PML's proxies are copied into ours, and both get the same meta-classes."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_strict_b import RTOL
from _pml_strict_b import VALUE_ATOL
from _pml_strict_b import assert_close
from flax import nnx
from pytorch_metric_learning import losses as L

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": {},
    "wide_margin_intrinsic_only": {"lambdaC": 0.0, "alpha": 0.5, "margin": 0.01},
}


@pytest.fixture
def float64_inverse(monkeypatch):
    # PML casts to float32 before its inverse (for half precision); keep float64 so that the
    # comparison is at float64 precision.
    monkeypatch.setattr(torch.Tensor, "float", lambda self: self)


def step(loss):
    def f(e, model, meta):
        return model(e, indices_tuple=meta)

    return nnx.jit(nnx.value_and_grad(f, argnums=(0, 1)))


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_manifold_matches_pml(config, float64_inverse):
    kwargs = CONFIGS[config]
    rng = np.random.default_rng(len(config))
    shapes = [(12, 5, 4), (9, 3, 9)] if config == "defaults" else [(12, 5, 4)]
    for n, dim, k in shapes:
        torch.manual_seed(n)
        theirs = L.ManifoldLoss(l=dim, K=k, **kwargs).double()
        ours = C.ManifoldLoss(dim, K=k, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kwargs)
        ours.proxies[...] = jnp.asarray(theirs.proxies.detach().numpy())
        run = step(ours)
        emb = rng.normal(size=(n, dim))
        metas = {
            "random": rng.integers(0, k, size=n),
            "one_meta_class": np.zeros(n, np.int64),
            "every_proxy": np.arange(n) % k,
        }
        for name, meta in metas.items():
            value, (g_emb, g_model) = run(jnp.asarray(emb), ours, jnp.asarray(meta, jnp.int32))
            e = torch.tensor(emb, requires_grad=True)
            theirs.zero_grad()
            want = theirs(e, indices_tuple=torch.tensor(meta))
            want.backward()
            np.testing.assert_allclose(
                float(value), float(want.detach()), rtol=RTOL, atol=VALUE_ATOL
            )
            assert_close(np.asarray(g_emb), e.grad.numpy(), name)
            assert_close(np.asarray(g_model.proxies[...]), theirs.proxies.grad.numpy(), name)


def test_random_meta_classes_cover_every_proxy():
    loss = C.ManifoldLoss(4, K=5, rngs=nnx.Rngs(0, meta_classes=3))
    emb = jax.random.normal(jax.random.key(1), (12, 4))
    first = np.asarray(loss.sample_meta_classes(12))
    second = np.asarray(loss.sample_meta_classes(12))
    assert not np.array_equal(first, second)
    for meta in (first, second):
        assert set(meta.tolist()) == set(range(5)) and meta.min() >= 0 and meta.max() < 5
    # A call without meta-classes draws the next ones from the same stream.
    again = C.ManifoldLoss(4, K=5, rngs=nnx.Rngs(0, meta_classes=3))
    drawn = again.sample_meta_classes(12)
    explicit = nnx.jit(lambda m, e, meta: m(e, indices_tuple=meta))(again, emb, drawn)
    replay = C.ManifoldLoss(4, K=5, rngs=nnx.Rngs(0, meta_classes=3))
    value = nnx.jit(lambda m, e: m(e))(replay, emb)
    np.testing.assert_allclose(float(value), float(explicit), rtol=1e-6)


def test_bad_inputs():
    loss = C.ManifoldLoss(4, K=5, rngs=nnx.Rngs(0))
    emb = jnp.ones((6, 4)) + jnp.eye(6, 4)
    with pytest.raises(
        ValueError,
        match=re.escape("expected at least K=5 embeddings to draw the meta-classes, got 4"),
    ):
        loss(emb[:4])
    with pytest.raises(
        ValueError,
        match=re.escape("expected `indices_tuple` to be in [0, 4] (num_classes=5), got values"),
    ):
        loss(emb, indices_tuple=jnp.array([0, 1, 2, 3, 4, 5]))
    with pytest.raises(
        ValueError, match=re.escape("expected `embeddings` to have embedding size `l` 4 on axis 1")
    ):
        loss(jnp.ones((6, 3)))
    with pytest.raises(
        ValueError, match=re.escape("expected `labels` and `ref_labels` to be None (ManifoldLoss")
    ):
        loss(emb, jnp.zeros(6, jnp.int32))
    with pytest.raises(ValueError, match=re.escape("expected `lambdaC` to be non-negative")):
        C.ManifoldLoss(4, lambdaC=-1.0, rngs=nnx.Rngs(0))
