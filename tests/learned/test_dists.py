"""DISTS mechanics on a random VGG16: closed forms, L2 pooling, frozen weights, lifecycle, bad input.

Parity with the reference ``dists-pytorch`` lives in ``tests/reference/test_dists_reference.py``.
"""

import importlib.util
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.backbones import VGG16
from calibrax.backbones import unfreeze
from calibrax.backbones._layers import l2_pool2d
from calibrax.core import FrozenHead
from calibrax.core import StatefulMetricProtocol
from calibrax.learned import DISTS
from calibrax.learned import LPIPS
from calibrax.learned import SyntheticTwoAFC
from calibrax.learned import dists
from calibrax.learned import load_official_dists_weights
from calibrax.learned import train_dists
from calibrax.learned._toy import ToyTrunk


@pytest.fixture(scope="module")
def trunk():
    return VGG16(rngs=nnx.Rngs(0))


def _imgs(seed, shape=(3, 16, 24, 3)):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def _model(trunk, **kw):
    kw.setdefault("pretrained", False)
    return DISTS(trunk=trunk, **kw)


def _l2_pool_loop(x):
    """Hand-written L2 pooling: 3x3 window [1 2 1]^T [1 2 1] / 16, stride 2, zero padding 1."""
    g = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0
    n, h, w, c = x.shape
    padded = np.pad(np.asarray(x, np.float64) ** 2, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, (h + 1) // 2, (w + 1) // 2, c))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            window = padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
            out[:, i, j, :] = np.einsum("nabc,ab->nc", window, g)
    return np.sqrt(out + 1e-12)


def test_l2_pool_matches_a_loop_on_odd_and_even_sizes():
    for shape in ((2, 7, 6, 3), (1, 8, 5, 2)):
        x = np.random.default_rng(0).uniform(0, 2, shape).astype(np.float32)
        got = np.asarray(l2_pool2d(jnp.asarray(x)))
        assert got.shape == (shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2, shape[3])
        np.testing.assert_allclose(got, _l2_pool_loop(x), rtol=1e-6)  # float32 vs float64


def test_vgg_l2_taps_shapes_and_pool_choice(trunk):
    taps = trunk.taps(_imgs(0), pool="l2")
    # L2 pooling rounds up: 16x24 -> 8x12 -> 4x6 -> 2x3 -> 1x2.
    assert [t.shape[1:3] for t in taps] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    with pytest.raises(
        ValueError, match=re.escape("expected `pool` to be one of 'max', 'l2', got 'avg'")
    ):
        trunk.taps(_imgs(0), pool="avg")


def test_matches_hand_written_formula(trunk):
    model = _model(trunk)
    rng = np.random.default_rng(0)
    alpha, beta = rng.uniform(0, 1, 1475), rng.uniform(0, 1, 1475)
    model.set_weights(alpha, beta)
    x, y = _imgs(0), _imgs(1)
    got, shares = model(x, y, per_stage=True)
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    stages_x = [x, *trunk.taps(jnp.asarray((np.asarray(x) - mean) / std, jnp.float32), pool="l2")]
    stages_y = [y, *trunk.taps(jnp.asarray((np.asarray(y) - mean) / std, jnp.float32), pool="l2")]
    total = alpha.sum() + beta.sum()
    start, want = 0, []
    for fx, fy in zip(stages_x, stages_y, strict=True):
        fx, fy = np.asarray(fx, np.float64), np.asarray(fy, np.float64)
        c = fx.shape[-1]
        mx, my = fx.mean((1, 2)), fy.mean((1, 2))
        vx = ((fx - mx[:, None, None]) ** 2).mean((1, 2))
        vy = ((fy - my[:, None, None]) ** 2).mean((1, 2))
        cov = ((fx - mx[:, None, None]) * (fy - my[:, None, None])).mean((1, 2))
        texture = (2 * mx * my + 1e-6) / (mx**2 + my**2 + 1e-6)
        structure = (2 * cov + 1e-6) / (vx + vy + 1e-6)
        a, b = alpha[start : start + c] / total, beta[start : start + c] / total
        want.append(texture @ a + structure @ b)
        start += c
    assert start == 1475
    # float32 forward, float64 hand-written reduction: 1e-5 relative.
    np.testing.assert_allclose(np.stack([np.asarray(s) for s in shares]), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got), 1.0 - np.sum(want, axis=0), rtol=1e-5)


def test_identity_symmetry_and_uniform_start(trunk):
    model = _model(trunk)
    np.testing.assert_allclose(np.asarray(model.alpha), 0.1)
    x, y = _imgs(0), _imgs(1)
    np.testing.assert_allclose(np.asarray(model(x, x)), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model(x, y)), np.asarray(model(y, x)), rtol=1e-6)
    assert np.all(np.asarray(model(x, y)) > 0.0)


def test_frozen_by_default_trainable_on_request(trunk):
    model = _model(trunk)
    assert not model.trainable
    assert type(model.heads.alpha) is FrozenHead and type(model.heads.beta) is FrozenHead
    assert list(nnx.to_flat_state(nnx.state(model, nnx.Param))) == []
    # (Gradients to the images, against the reference's: tests/reference/test_dists_reference.py.)
    trainable = _model(trunk, trainable=True)
    params = nnx.state(trainable, nnx.Param)
    assert sorted(".".join(map(str, p)) for p, _ in nnx.to_flat_state(params)) == [
        "heads.alpha",
        "heads.beta",
    ]
    assert model.set_trainable(True) == 2 and model.trainable
    model.heads.alpha[...] = -model.heads.alpha[...]
    model.project()
    assert float(jnp.min(model.alpha)) == 0.0


def test_weights_checkpoint_round_trip(trunk, tmp_path):
    model = _model(trunk, trainable=True)
    rng = np.random.default_rng(3)
    model.set_weights(rng.uniform(0, 1, 1475), rng.uniform(0, 1, 1475))
    model.save_weights(tmp_path / "w")
    loaded = _model(trunk)
    loaded.load_weights(tmp_path / "w")
    assert not loaded.trainable  # frozen stays frozen
    np.testing.assert_array_equal(np.asarray(loaded.alpha), np.asarray(model.alpha))
    np.testing.assert_array_equal(np.asarray(loaded.beta), np.asarray(model.beta))
    lp = LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False)
    lp.save_heads(tmp_path / "lpips")
    with pytest.raises(ValueError, match=re.escape("expected a DISTS weights checkpoint at ")):
        loaded.load_weights(tmp_path / "lpips")


def test_jit_streaming_masks_and_weights(trunk):
    model = _model(trunk)
    assert isinstance(model, StatefulMetricProtocol)
    x, y = _imgs(0), _imgs(1)
    eager = np.asarray(model(x, y))
    np.testing.assert_allclose(float(dists(x, y, model=model)), eager.mean(), rtol=1e-6)
    per_pair = jax.jit(lambda a, b: model(a, b))
    np.testing.assert_allclose(np.asarray(per_pair(x, y)), eager, rtol=1e-5)

    @nnx.jit
    def update(m, a, b, mask, weight):
        m.update(predictions=a, targets=b, mask=mask, sample_weight=weight)

    mask = jnp.asarray([True, False, True])
    weight = jnp.asarray([1.0, 5.0, 3.0], jnp.float32)
    update(model, x, y, mask, weight)
    want = (eager[0] * 1.0 + eager[2] * 3.0) / 4.0
    np.testing.assert_allclose(float(model.compute()["dists"]), want, rtol=1e-5)
    other = _model(trunk)
    update(other, x, y, jnp.ones(3, bool), jnp.ones(3, jnp.float32))
    model.merge(other)
    np.testing.assert_allclose(
        float(model.compute()["dists"]), (4.0 * want + eager.sum()) / 7.0, rtol=1e-5
    )
    model.reduction = "sum"  # the same accumulated state, summed (no recompilation of update)
    np.testing.assert_allclose(
        float(model.compute()["dists"]), eager[0] + 3.0 * eager[2] + eager.sum(), rtol=1e-5
    )
    # Under jit, values cannot be checked: out-of-range or NaN pairs score NaN, the others do not.
    bad = np.asarray(per_pair(x.at[1, 0, 0, 0].set(1.5), y.at[2, 0, 0, 0].set(jnp.nan)))
    assert np.isnan(bad[1]) and np.isnan(bad[2])
    np.testing.assert_allclose(bad[0], eager[0], rtol=1e-5)


def test_train_dists_trains_alpha_beta_and_hands_back_frozen():
    data = SyntheticTwoAFC(16, patch_size=16, seed=0)
    model = DISTS(trunk=VGG16(rngs=nnx.Rngs(1)), pretrained=False)
    alpha0 = np.asarray(model.alpha)
    trunk0 = jax.tree.leaves(nnx.state(model.trunk))
    hist = train_dists(model, data, epochs=1, decay_epochs=0, batch_size=16, progress=False)
    assert np.all(np.isfinite(hist["loss"])) and hist["epoch"] == [1]
    assert np.any(np.asarray(model.alpha) != alpha0)
    assert np.all(np.asarray(model.alpha) >= 0.0) and np.all(np.asarray(model.beta) >= 0.0)
    assert not model.trainable
    for a, b in zip(trunk0, jax.tree.leaves(nnx.state(model.trunk)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TypeError, match=re.escape("expected `model` to be a DISTS, got LPIPS")):
        train_dists(LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False), data)


def test_bad_input(trunk):
    model = _model(trunk)
    x = _imgs(0)
    cases = [
        (
            (x, x[:2]),
            "expected `x` and `y` to have the same shape, got (3, 16, 24, 3) and (2, 16, 24, 3)",
        ),
        (
            (x[0], x[0]),
            "expected `x` to have 4 dims (batch, height, width, channels), got shape (16, 24, 3)",
        ),
        ((x[..., :1], x[..., :1]), "expected `x` to have channels 3 on axis -1, got shape"),
        ((x[:, :8, :8], x[:, :8, :8]), "expected images of at least 16x16 for DISTS, got 8x8"),
        ((2.0 * x - 1.0, x), "expected `x` to be in [0, 1], got values in [-0.99"),
        ((x, x.at[0, 0, 0, 0].set(jnp.nan)), "expected `y` to be finite, got 1 NaN and 0 Inf"),
        ((x[:0], x[:0]), "expected `x` to be non-empty"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            model(*args)
    with pytest.raises(
        TypeError, match=re.escape("expected `x` to have a floating dtype, got uint8")
    ):
        model(jnp.zeros((1, 16, 16, 3), jnp.uint8), jnp.zeros((1, 16, 16, 3), jnp.uint8))


def test_bad_construction(trunk, tmp_path):
    with pytest.raises(
        TypeError,
        match=re.escape("expected `trunk` to be a calibrax.backbones.VGG16, got ToyTrunk"),
    ):
        DISTS(trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False)
    tuned = VGG16(rngs=nnx.Rngs(0))
    unfreeze(tuned)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected a frozen VGG16 trunk for DISTS, got trainable weight `features.0.bias` "
            "(26 in all; calibrax.backbones.freeze(trunk) freezes it)"
        ),
    ):
        DISTS(trunk=tuned, pretrained=False)
    model = _model(trunk)
    with pytest.raises(ValueError, match=re.escape("expected `alpha` to have 1475 values, got 3")):
        model.set_weights(np.ones(3), np.ones(1475))
    with pytest.raises(
        ValueError, match=re.escape("expected `reduction` to be one of 'mean', 'sum', got 'max'")
    ):
        _model(trunk, reduction="max")
    with pytest.raises(
        FileNotFoundError,
        match=re.escape("expected a DISTS weights file at '/nonexistent/weights.pt', got none"),
    ):
        load_official_dists_weights("/nonexistent/weights.pt")
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.origin is not None:
        heads = pathlib.Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
        with pytest.raises(ValueError, match=re.escape("expected `alpha` with 1475 values in ")):
            load_official_dists_weights(heads)
