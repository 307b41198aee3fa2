"""Parity of calibrax.metric_learning.P2SGradLoss with pytorch-metric-learning 2.9: PML's initial
``weight`` copied in, values and gradients w.r.t. the embeddings and ``weight`` to 1e-6 relative
in float64 (see _pml_strict)."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_strict import assert_class_weight_parity
from flax import nnx
from pytorch_metric_learning import losses as L

import calibrax.metric_learning as C


def _factories():
    return (
        lambda n, d: C.P2SGradLoss(d, n, param_dtype="float64", rngs=nnx.Rngs(0)),
        lambda n, d: L.P2SGradLoss(descriptors_dim=d, num_classes=n),
    )


def test_p2s_grad_matches_pml():
    values = assert_class_weight_parity(*_factories(), "weight")
    assert all(v > 0 for v in values.values())


def test_p2s_grad_renormalize_follows_pml_in_place_rescaling():
    # PML rescales its stored weight on every call; ours does it in renormalize().
    torch.manual_seed(0)
    theirs = L.P2SGradLoss(descriptors_dim=4, num_classes=3).double()
    with torch.no_grad():
        theirs.weight.mul_(3.0)
    ours = C.P2SGradLoss(4, 3, param_dtype="float64", rngs=nnx.Rngs(0))
    ours.weight[...] = jnp.asarray(theirs.weight.detach().numpy())
    emb = np.random.default_rng(0).normal(size=(5, 4))
    theirs(torch.tensor(emb), torch.tensor([0, 1, 2, 0, 1]))
    ours.renormalize()
    np.testing.assert_allclose(np.asarray(ours.weight[...]), theirs.weight.detach().numpy(), 1e-15)
    norms = np.linalg.norm(np.asarray(ours.weight[...]), axis=0)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)


def test_p2s_grad_degenerate_weight_is_nan():
    loss = C.P2SGradLoss(4, 3, rngs=nnx.Rngs(0))
    loss.weight[...] = loss.weight[...].at[:, 1].set(1e-7)
    value = loss(jnp.ones((2, 4)), jnp.array([0, 1]))
    assert np.isnan(float(value))


def test_p2s_grad_refuses_miner_and_reference():
    loss = C.P2SGradLoss(4, 3, rngs=nnx.Rngs(0))
    emb, lab = jnp.ones((3, 4)), jnp.array([0, 1, 2])
    mask = C.PairMask(pos=jnp.zeros((3, 3), jnp.int32), neg=jnp.zeros((3, 3), jnp.int32))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `indices_tuple` to be None (P2SGradLoss does not use a miner), got PairMask"
        ),
    ):
        loss(emb, lab, mask)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `ref_emb` and `ref_labels` to be None (P2SGradLoss does not compare with "
            "a reference set), got ArrayImpl and ArrayImpl"
        ),
    ):
        loss(emb, lab, None, emb, lab)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `labels` to be in [0, 2] (num_classes=3), got values in [0, 5]"),
    ):
        loss(emb, jnp.array([0, 1, 5]))
