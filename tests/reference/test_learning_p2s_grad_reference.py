"""Parity of calibrax.metric_learning.P2SGradLoss with pytorch-metric-learning 2.9: PML's initial
``weight`` copied in, values and gradients w.r.t. the embeddings and ``weight`` to 1e-6 relative
in float64 (see _pml_strict)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_strict import assert_class_weight_parity
from _pml_strict import assert_close
from flax import nnx
from pytorch_metric_learning import losses as L

import calibrax.metric_learning as C
from calibrax.metric_learning.losses.p2s_grad import _uses_gram


def _factories(form=None):
    def ours(n, d):
        loss = C.P2SGradLoss(d, n, param_dtype="float64", rngs=nnx.Rngs(0))
        loss._form = form  # None: chosen by cost (both forms occur on these batches)
        return loss

    return ours, lambda n, d: L.P2SGradLoss(descriptors_dim=d, num_classes=n)


def test_p2s_grad_matches_pml():
    values = assert_class_weight_parity(*_factories(), "weight")
    assert all(v > 0 for v in values.values())


@pytest.mark.parametrize("form", ["direct", "gram"])
def test_p2s_grad_each_form_matches_pml(form):
    # Both sides of the cost switch, forced, on every strict-parity batch (float64, 1e-6).
    assert_class_weight_parity(*_factories(form), "weight")


def test_p2s_grad_cost_switch_sides():
    # The benchmark sizes fall on opposite sides; each side's automatic choice against PML.
    assert not _uses_gram(256, 128, 64)
    assert _uses_gram(1024, 128, 256)
    assert not _uses_gram(512, 128, 128) and _uses_gram(256, 128, 512)
    # The strict-parity batches: (14, 6) ones on the Gram side, the (33, 16) one direct.
    assert _uses_gram(14, 6, 16) and not _uses_gram(33, 16, 16)
    assert not _uses_gram(12, 16, 4)
    emb = np.random.default_rng(5).normal(size=(12, 16))
    _compare_with_pml(emb, np.arange(12) % 4, 4, None, "float64")


def _compare_with_pml(emb, lab, classes, form, dtype, rtol=1e-6, weights=None):
    """Our value and gradients (embeddings, weight) against PML's in ``dtype``, PML's initial
    weights (or ``weights``) copied in."""
    torch.manual_seed(0)
    theirs = L.P2SGradLoss(descriptors_dim=emb.shape[1], num_classes=classes).to(
        getattr(torch, dtype)
    )
    if weights is not None:
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(weights))
    w = theirs.weight.detach().numpy().copy()
    e = torch.tensor(emb, dtype=getattr(torch, dtype), requires_grad=True)
    value = theirs(e, torch.tensor(lab))
    value.backward()
    ours = C.P2SGradLoss(emb.shape[1], classes, param_dtype=dtype, rngs=nnx.Rngs(0))
    ours.weight[...] = jnp.asarray(w)
    ours._form = form
    graphdef, state = nnx.split(ours)
    got, (g_state, g_emb) = jax.jit(
        jax.value_and_grad(lambda s, x: nnx.merge(graphdef, s)(x, jnp.asarray(lab)), (0, 1))
    )(state, jnp.asarray(emb, dtype))
    g_w = np.asarray(nnx.merge(graphdef, g_state).weight[...])
    if rtol == 1e-6:
        assert_close((float(got), np.asarray(g_emb)), (float(value.detach()), e.grad.numpy()), form)
        assert_close((0.0, g_w), (0.0, theirs.weight.grad.numpy()), f"{form}: weight")
    else:
        np.testing.assert_allclose(float(got), float(value.detach()), rtol=rtol)
        for ours_g, their_g in ((g_emb, e.grad), (g_w, theirs.weight.grad)):
            their_g = their_g.numpy()
            atol = rtol * np.abs(their_g).max()
            np.testing.assert_allclose(np.asarray(ours_g), their_g, rtol=rtol, atol=atol)
    return theirs


@pytest.mark.parametrize("form", ["direct", "gram"])
def test_p2s_grad_embedding_on_a_class_weight_matches_pml(form):
    # Embeddings along class columns: its own (x = w, and 2.5 w), another class's, and the
    # negated own and other columns. In float64 the cosines stay within 1 - 1e-7 of +-1 (the
    # columns' norm is n / (n + 1e-7)), so PML's clamp does not bite and both forms agree to
    # rounding (1e-6 asked).
    torch.manual_seed(0)
    w = L.P2SGradLoss(descriptors_dim=6, num_classes=5).double().weight.detach().numpy()
    emb = np.random.default_rng(1).normal(size=(10, 6))
    lab = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    emb[0], emb[1], emb[2] = w[:, 0], 2.5 * w[:, 1], w[:, 4]  # own, own, another class's
    emb[3], emb[4] = -w[:, 3], -3.0 * w[:, 0]  # negated own, negated another's
    theirs = _compare_with_pml(emb, lab, 5, form, "float64", weights=w)
    e = torch.tensor(emb)
    cos = (e @ theirs.weight.detach()) / e.norm(dim=1, keepdim=True)
    assert 1 - 2e-7 < float(cos.abs().max()) < 1  # on a column, yet inside the clamp


@pytest.mark.parametrize("form", ["direct", "gram"])
def test_p2s_grad_float32_matches_pml(form):
    # float32 on both sides, a batch of 4 per class: rounding of (64 x 32 x 16) products and,
    # in the Gram form, of sum cos^2 - 2 cos_y + 1 (see the class docstring). Measured: 4e-7
    # relative on both forms, values and gradients; 1e-5 asked (float32 eps x 100).
    emb = np.random.default_rng(2).normal(size=(64, 32)).astype(np.float32)
    _compare_with_pml(emb, np.arange(64) // 4, 16, form, "float32", rtol=1e-5)


@pytest.mark.parametrize("form", ["direct", "gram"])
def test_p2s_grad_zero_embedding_is_nan(form):
    # PML divides by the zero norm: NaN on both forms, as in PML.
    loss = C.P2SGradLoss(4, 3, rngs=nnx.Rngs(0))
    loss._form = form
    assert np.isnan(float(loss(jnp.ones((3, 4)).at[1].set(0.0), jnp.array([0, 1, 2]))))


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


@pytest.mark.parametrize("form", ["direct", "gram"])
@pytest.mark.parametrize("bad", ["nan", "inf", "label_-1", "label_3", "short_column"])
def test_p2s_grad_bad_values_under_jit_are_nan(form, bad):
    # Under jit no check can raise and none is recorded: the arithmetic itself must turn each
    # bad value into a NaN loss and a NaN gradient for the bad row (see P2SGradLoss.__call__).
    loss = C.P2SGradLoss(4, 3, rngs=nnx.Rngs(0))
    loss._form = form
    emb = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
    lab = jnp.array([0, 1, 2, 0, 1])
    if bad in ("nan", "inf"):
        emb = emb.at[2, 1].set(float(bad))
    elif bad.startswith("label"):
        lab = lab.at[2].set(int(bad.split("_")[1]))
    else:  # rescaled norm 0.005 / (0.005 + 1e-7): 2e-5 below 1, which PML's assertion rejects
        loss.weight[...] = loss.weight[...].at[:, 1].multiply(0.005)
    graphdef, state = nnx.split(loss)
    value, grad = jax.jit(
        jax.value_and_grad(lambda x, s, l: nnx.merge(graphdef, s)(x, l), argnums=(0, 1))
    )(emb, state, lab)
    assert np.isnan(float(value)), bad
    assert np.all(np.isnan(np.asarray(grad[0][2]))), bad
