"""SelfSupervisedLoss and MultipleLosses: parity with pytorch-metric-learning 2.9 (float64,
values and gradients to 1e-6 relative; they agree to ~1e-14)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

RTOL, ATOL = 1e-6, 1e-12

SSL = {
    "ntxent": (lambda: C.NTXentLoss(), lambda: L.NTXentLoss()),
    "contrastive": (lambda: C.ContrastiveLoss(), lambda: L.ContrastiveLoss()),
    "supcon": (lambda: C.SupConLoss(), lambda: L.SupConLoss()),
    "triplet": (lambda: C.TripletMarginLoss(), lambda: L.TripletMarginLoss()),
}


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("name", sorted(SSL))
def test_self_supervised_matches_pml(name, symmetric):
    make_ours, make_theirs = SSL[name]
    ours = C.SelfSupervisedLoss(make_ours(), symmetric=symmetric)
    theirs = L.SelfSupervisedLoss(make_theirs(), symmetric=symmetric)
    f = jax.jit(jax.value_and_grad(lambda e, r: ours(e, r), argnums=(0, 1)))
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 5))
    views = {"noisy": emb + 0.3 * rng.normal(size=emb.shape), "identical": emb.copy()}
    for case, ref in views.items():
        value, (g_emb, g_ref) = f(jnp.asarray(emb), jnp.asarray(ref))
        e = torch.tensor(emb, requires_grad=True)
        r = torch.tensor(ref, requires_grad=True)
        expected = theirs(e, r)
        expected.backward()
        np.testing.assert_allclose(float(value), float(expected.detach()), rtol=RTOL, err_msg=case)
        for ours_grad, tensor in ((g_emb, e), (g_ref, r)):
            # No gradient path in torch (a loss of exactly 0) is a zero gradient.
            theirs_grad = np.zeros_like(emb) if tensor.grad is None else tensor.grad.numpy()
            np.testing.assert_allclose(
                np.asarray(ours_grad), theirs_grad, rtol=RTOL, atol=ATOL, err_msg=case
            )


def test_self_supervised_errors():
    with pytest.raises(
        ValueError, match=re.escape("SelfSupervisedLoss not supported for MarginLoss")
    ):
        C.SelfSupervisedLoss(C.MarginLoss())
    loss = C.SelfSupervisedLoss(C.NTXentLoss())
    x = jnp.ones((4, 3), jnp.float32)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `embeddings` and `ref_emb` to have the same shape, got (4, 3) and (3, 3)"
        ),
    ):
        loss(x, x[:3])
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `embeddings` and `ref_emb` to have the same dtype, got float32 and float64"
        ),
    ):
        loss(x, x.astype(jnp.float64))
    with pytest.raises(
        ValueError, match=re.escape("expected `ref_emb` to be finite, got 1 NaN and 0 Inf values")
    ):
        C.SelfSupervisedLoss(C.NTXentLoss(), symmetric=False)(x, x.at[1, 1].set(jnp.nan))


def _pml_value_and_grad(loss, emb, lab, indices=None):
    e = torch.tensor(emb, requires_grad=True)
    value = loss(e, torch.tensor(lab), indices)
    value.backward()
    return float(value.detach()), e.grad.numpy()


def test_multiple_losses_list_dict_weights_miners_match_pml():
    rng = np.random.default_rng(1)
    emb, lab = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    x, y = jnp.asarray(emb), jnp.asarray(lab, jnp.int32)
    configs = {
        "list": (
            C.MultipleLosses([C.ContrastiveLoss(), C.TripletMarginLoss()]),
            L.MultipleLosses([L.ContrastiveLoss(), L.TripletMarginLoss()]),
        ),
        "list_weights_miners": (
            C.MultipleLosses(
                [C.ContrastiveLoss(), C.TripletMarginLoss(), C.NTXentLoss()],
                miners=[C.PairMarginMiner(), None, C.MultiSimilarityMiner()],
                weights=[0.5, 2.0, 0.25],
            ),
            L.MultipleLosses(
                [L.ContrastiveLoss(), L.TripletMarginLoss(), L.NTXentLoss()],
                miners=[M.PairMarginMiner(), None, M.MultiSimilarityMiner()],
                weights=[0.5, 2.0, 0.25],
            ),
        ),
        "dict_weights_some_miners": (
            C.MultipleLosses(
                {"c": C.ContrastiveLoss(), "t": C.TripletMarginLoss()},
                miners={"t": C.BatchHardMiner()},
                weights={"c": 0.3, "t": 1.5},
            ),
            L.MultipleLosses(
                {"c": L.ContrastiveLoss(), "t": L.TripletMarginLoss()},
                miners={"t": M.BatchHardMiner()},
                weights={"c": 0.3, "t": 1.5},
            ),
        ),
    }
    for name, (ours, theirs) in configs.items():
        value, grad = jax.jit(jax.value_and_grad(lambda e, ours=ours: ours(e, y)))(x)
        v2, g2 = _pml_value_and_grad(theirs, emb, lab)
        np.testing.assert_allclose(float(value), v2, rtol=RTOL, err_msg=name)
        np.testing.assert_allclose(np.asarray(grad), g2, rtol=RTOL, atol=ATOL, err_msg=name)
    # An indices_tuple (no miners) is passed to every loss.
    ours, theirs = configs["list"]
    miner = C.TripletMarginMiner(margin=0.5)
    value = ours(x, y, miner(x, y))
    mined = M.TripletMarginMiner(margin=0.5)(torch.tensor(emb), torch.tensor(lab))
    v2, _ = _pml_value_and_grad(theirs, emb, lab, mined)
    np.testing.assert_allclose(float(value), v2, rtol=RTOL)


def test_multiple_losses_errors():
    c, t = C.ContrastiveLoss(), C.TripletMarginLoss()
    cases = [
        (
            lambda: C.MultipleLosses([]),
            ValueError,
            "expected at least one loss in `losses`, got none",
        ),
        (
            lambda: C.MultipleLosses(c),
            TypeError,
            "expected `losses` to be a list or a dict of losses, got ContrastiveLoss",
        ),
        (
            lambda: C.MultipleLosses([c, t], weights=[1.0]),
            ValueError,
            "expected `weights` to have one entry per loss (2), got 1",
        ),
        (
            lambda: C.MultipleLosses([c, t], miners={"a": None}),
            ValueError,
            "expected `miners` to be a list like `losses`, got dict",
        ),
        (
            lambda: C.MultipleLosses({"a": c, "b": t}, weights={"a": 1.0}),
            ValueError,
            "expected `weights` to have every key of `losses`, missing ['b']",
        ),
        (
            lambda: C.MultipleLosses({"a": c}, miners={"z": C.BatchHardMiner()}),
            ValueError,
            "expected the keys of `miners` to be keys of `losses`, got ['z']",
        ),
    ]
    for make, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            make()
    loss = C.MultipleLosses([c], miners=[C.BatchHardMiner()])
    x, y = jnp.ones((4, 3), jnp.float32), jnp.zeros((4,), jnp.int32)
    with pytest.raises(
        ValueError, match=re.escape("expected no indices_tuple when MultipleLosses has miners")
    ):
        loss(x, y, (y, y, y))
