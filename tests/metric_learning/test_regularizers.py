"""Regularizers and ``weight_regularizer=`` / ``embedding_regularizer=``: parity with
pytorch-metric-learning 2.9.

Float64 on both sides (class weights too: ``param_dtype=float64``, and pytorch-metric-learning's
weights are set to ours), values and gradients (w.r.t. the input, the embeddings and the class
weights) to 1e-6 relative; the two agree to ~1e-14.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import regularizers as PR

import calibrax.metric_learning as C

RTOL, ATOL = 1e-6, 1e-12

REGULARIZERS = {
    "center_invariant": (lambda: C.CenterInvariantRegularizer(), PR.CenterInvariantRegularizer),
    "lp": (lambda: C.LpRegularizer(), PR.LpRegularizer),
    "lp_p1_power2": (
        lambda: C.LpRegularizer(p=1, power=2),
        lambda: PR.LpRegularizer(p=1, power=2),
    ),
    "zero_mean": (lambda: C.ZeroMeanRegularizer(), PR.ZeroMeanRegularizer),
    "regular_face": (lambda: C.RegularFaceRegularizer(), PR.RegularFaceRegularizer),
    "sparse_centers": (
        lambda: C.SparseCentersRegularizer(num_classes=4, centers_per_class=3),
        lambda: PR.SparseCentersRegularizer(4, 3),
    ),
}


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    duplicate = x.copy()
    duplicate[1] = duplicate[0]  # two identical rows (RegularFace's nearest at similarity 1)
    zero_row = x.copy()
    zero_row[3] = 0.0  # a zero row (norm and |sum| at 0: torch's zero subgradient)
    return {"random": x, "duplicate": duplicate, "zero_row": zero_row}


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_regularizer_matches_pml(name):
    make_ours, make_theirs = REGULARIZERS[name]
    f = jax.jit(jax.value_and_grad(make_ours()))
    for case, x in _inputs().items():
        if name == "sparse_centers" and case == "duplicate":
            continue  # similarity exactly 1: sqrt(tiny), an infinite-slope point in both
        value, grad = f(jnp.asarray(x))
        t = torch.tensor(x, requires_grad=True)
        expected = make_theirs()(t)
        expected.backward()
        np.testing.assert_allclose(float(value), float(expected.detach()), rtol=RTOL, err_msg=case)
        np.testing.assert_allclose(
            np.asarray(grad), t.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=case
        )


WEIGHT_LOSSES = {
    "arcface": (
        lambda **k: C.ArcFaceLoss(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **k),
        lambda **k: L.ArcFaceLoss(4, 5, **k),
        "W",
    ),
    "cosface": (
        lambda **k: C.CosFaceLoss(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **k),
        lambda **k: L.CosFaceLoss(4, 5, **k),
        "W",
    ),
    "subcenter_arcface": (
        lambda **k: C.SubCenterArcFaceLoss(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **k),
        lambda **k: L.SubCenterArcFaceLoss(num_classes=4, embedding_size=5, **k),
        "W",
    ),
    "normalized_softmax": (
        lambda **k: C.NormalizedSoftmaxLoss(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **k),
        lambda **k: L.NormalizedSoftmaxLoss(4, 5, **k),
        "W",
    ),
    "proxy_nca": (
        lambda **k: C.ProxyNCALoss(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **k),
        lambda **k: L.ProxyNCALoss(4, 5, **k),
        "proxies",
    ),
    "proxy_anchor": (
        lambda **k: C.ProxyAnchorLoss(4, 5, param_dtype=jnp.float64, rngs=nnx.Rngs(0), **k),
        lambda **k: L.ProxyAnchorLoss(4, 5, **k),
        "proxies",
    ),
}


def _weight_regularizers(name):
    if name == "subcenter_arcface":  # 4 classes x 3 sub-centres
        return (
            C.SparseCentersRegularizer(num_classes=4, centers_per_class=3),
            PR.SparseCentersRegularizer(4, 3),
        )
    return C.RegularFaceRegularizer(), PR.RegularFaceRegularizer()


@pytest.mark.parametrize("name", sorted(WEIGHT_LOSSES))
def test_weight_and_embedding_regularizers_match_pml(name):
    make_ours, make_theirs, attr = WEIGHT_LOSSES[name]
    our_reg, their_reg = _weight_regularizers(name)
    ours = make_ours(
        weight_regularizer=our_reg,
        weight_reg_weight=0.7,
        embedding_regularizer=C.LpRegularizer(),
        embedding_reg_weight=0.3,
    )
    theirs = make_theirs(
        weight_regularizer=their_reg,
        weight_reg_weight=0.7,
        embedding_regularizer=PR.LpRegularizer(),
        embedding_reg_weight=0.3,
    )
    getattr(theirs, attr).data = torch.tensor(np.asarray(getattr(ours, attr)[...]))
    rng = np.random.default_rng(1)
    emb, lab = rng.normal(size=(8, 5)), rng.integers(0, 4, 8)
    x, y = jnp.asarray(emb), jnp.asarray(lab, jnp.int32)
    value, (g_model, g_emb) = nnx.value_and_grad(lambda m, x: m(x, y), argnums=(0, 1))(ours, x)
    t = torch.tensor(emb, requires_grad=True)
    expected = theirs(t, torch.tensor(lab))
    expected.backward()
    np.testing.assert_allclose(float(value), float(expected.detach()), rtol=RTOL)
    np.testing.assert_allclose(np.asarray(g_emb), t.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        np.asarray(getattr(g_model, attr)[...]),
        getattr(theirs, attr).grad.numpy(),
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize(
    "pair",
    [
        (lambda **k: C.ContrastiveLoss(**k), lambda **k: L.ContrastiveLoss(**k)),
        (lambda **k: C.TripletMarginLoss(**k), lambda **k: L.TripletMarginLoss(**k)),
        (lambda **k: C.MarginLoss(**k), lambda **k: L.MarginLoss(**k)),
    ],
)
def test_embedding_regularizer_on_pair_losses_matches_pml(pair):
    make_ours, make_theirs = pair
    ours = make_ours(embedding_regularizer=C.ZeroMeanRegularizer(), embedding_reg_weight=0.4)
    theirs = make_theirs(embedding_regularizer=PR.ZeroMeanRegularizer(), embedding_reg_weight=0.4)
    rng = np.random.default_rng(2)
    emb, lab = rng.normal(size=(9, 4)), rng.integers(0, 3, 9)
    value, grad = jax.value_and_grad(lambda x: ours(x, jnp.asarray(lab, jnp.int32)))(
        jnp.asarray(emb)
    )
    t = torch.tensor(emb, requires_grad=True)
    expected = theirs(t, torch.tensor(lab))
    expected.backward()
    np.testing.assert_allclose(float(value), float(expected.detach()), rtol=RTOL)
    np.testing.assert_allclose(np.asarray(grad), t.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_regularizer_errors():
    reg = C.LpRegularizer()
    x = jnp.ones((3, 4), jnp.float32)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `x` to have 2 dims (rows, embedding_dim), got shape (4,)"),
    ):
        reg(x[0])
    with pytest.raises(
        TypeError, match=re.escape("expected `x` to have a floating dtype, got int32")
    ):
        reg(x.astype(jnp.int32))
    with pytest.raises(
        ValueError, match=re.escape("expected `x` to be non-empty, got shape (0, 4)")
    ):
        reg(x[:0])
    with pytest.raises(
        ValueError, match=re.escape("expected `x` to be finite, got 1 NaN and 0 Inf values")
    ):
        reg(x.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match=re.escape("expected `p` to be positive, got 0")):
        C.LpRegularizer(p=0)
    with pytest.raises(
        ValueError, match=re.escape("expected `power` to be a positive number, got -1")
    ):
        C.LpRegularizer(power=-1)
    with pytest.raises(
        ValueError, match=re.escape("expected `centers_per_class` to be at least 2, got 1")
    ):
        C.SparseCentersRegularizer(num_classes=3, centers_per_class=1)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `x` to have num_classes * centers_per_class rows 6 on axis 0, got shape (3, 4)"
        ),
    ):
        C.SparseCentersRegularizer(num_classes=3, centers_per_class=2)(x)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `distance` to be a similarity (is_inverted), got LpDistance"),
    ):
        C.RegularFaceRegularizer(distance=C.LpDistance())
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `weight_regularizer` to be a calibrax.metric_learning regularizer or None, "
            "got str"
        ),
    ):
        C.ArcFaceLoss(3, 4, weight_regularizer="lp", rngs=nnx.Rngs(0))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `embedding_regularizer` to be a calibrax.metric_learning regularizer or "
            "None, got int"
        ),
    ):
        C.ContrastiveLoss(embedding_regularizer=3)
    # Under jit a NaN input gives NaN, not a number.
    assert np.isnan(float(jax.jit(reg)(x.at[0, 0].set(jnp.nan))))
