"""LPIPS mechanics on a small frozen trunk: closed forms, gradients, heads, lifecycle, bad input.

Parity with the reference ``lpips`` package on real architectures lives in
``tests/reference/test_lpips_reference.py``.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.core import FrozenWeight
from calibrax.core import StatefulMetricProtocol
from calibrax.learned import LPIPS
from calibrax.learned import load_official_heads
from calibrax.learned import lpips
from calibrax.learned._toy import ToyTrunk


@pytest.fixture(scope="module")
def trunk():
    return ToyTrunk(rngs=nnx.Rngs(0))


def _imgs(seed, shape=(3, 16, 16, 3)):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32, -1.0, 1.0)


def _model(trunk, **kw):
    kw.setdefault("pretrained", False)
    return LPIPS(net="alex", trunk=trunk, **kw)


def _numpy_lpips(trunk, weights, x, y, shift, scale):
    """Hand-written reference: unit-normalise taps, weighted squared difference, spatial mean."""
    sx = (np.asarray(x, np.float64) - shift) / scale
    sy = (np.asarray(y, np.float64) - shift) / scale
    tx = trunk.taps(jnp.asarray(sx, jnp.float32))
    ty = trunk.taps(jnp.asarray(sy, jnp.float32))
    total = 0.0
    for w, fx, fy in zip(weights, tx, ty, strict=True):
        fx, fy = np.asarray(fx, np.float64), np.asarray(fy, np.float64)
        nx = fx / (np.sqrt((fx**2).sum(-1, keepdims=True)) + 1e-10)
        ny = fy / (np.sqrt((fy**2).sum(-1, keepdims=True)) + 1e-10)
        total = total + (((nx - ny) ** 2) * w).sum(-1).mean(axis=(1, 2))
    return total


def test_matches_hand_written_formula(trunk):
    model = _model(trunk)
    rng = np.random.default_rng(0)
    heads = [rng.uniform(0, 1, c).astype(np.float32) for c in trunk.tap_channels]
    model.set_heads(heads)
    x, y = _imgs(0), _imgs(1)
    want = _numpy_lpips(trunk, heads, x, y, np.array(model.shift), np.array(model.scale))
    # float32 trunk and float32 normalisation against a float64 reduction: 1e-5 relative.
    np.testing.assert_allclose(np.asarray(model(x, y)), want, rtol=1e-5)


def test_identity_symmetry_and_baseline(trunk):
    x, y = _imgs(0), _imgs(1)
    model = _model(trunk)
    np.testing.assert_allclose(np.asarray(model(x, x)), 0.0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(model(x, y)), np.asarray(model(y, x)), rtol=1e-6)
    # Heads initialised to one: the weighted distance equals the unweighted baseline.
    base = _model(trunk, lpips=False)
    np.testing.assert_allclose(np.asarray(model(x, y)), np.asarray(base(x, y)), rtol=1e-6)


def test_per_layer_and_spatial(trunk):
    x, y = _imgs(0), _imgs(1)
    model = _model(trunk)
    total, layers = model(x, y, per_layer=True)
    assert len(layers) == 3
    np.testing.assert_allclose(np.asarray(sum(layers)), np.asarray(total), rtol=1e-6)
    spatial = _model(trunk, spatial=True)
    dmap = spatial(x, y)
    assert dmap.shape == (3, 16, 16)
    # The first tap is at full resolution: its map is not resampled, so its spatial mean is exact.
    _, maps = spatial(x, y, per_layer=True)
    np.testing.assert_allclose(
        np.asarray(maps[0].mean(axis=(1, 2))), np.asarray(layers[0]), rtol=1e-5
    )


def test_normalize_flag_maps_unit_interval_inputs(trunk):
    x, y = _imgs(0), _imgs(1)
    model = _model(trunk)
    np.testing.assert_allclose(
        np.asarray(model((x + 1) / 2, (y + 1) / 2, normalize=True)),
        np.asarray(model(x, y)),
        rtol=1e-5,
    )


def test_gradient_is_finite_when_inputs_are_identical(trunk):
    x = _imgs(0)
    model = _model(trunk)
    # One compiled gradient for both cases (eager autodiff compiles every op separately, ~10x
    # slower here); the zero-distance guards are the same formulas either way.
    grad = jax.jit(jax.grad(lambda a, b: lpips(a, b, model=model)))
    g = grad(x, x)
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)
    # Also where a whole tap is zero (dead ReLUs): constant images.
    flat = jnp.full((1, 16, 16, 3), -1.0, jnp.float32)
    g = grad(flat, flat)
    assert np.all(np.isfinite(np.asarray(g)))


def test_gradients_reach_heads_not_trunk(trunk):
    # Heads built for training (trainable=True) are nnx.Param and get gradients; the trunk never.
    model = _model(trunk, trainable=True)
    x, y = _imgs(0), _imgs(1)
    grads = nnx.grad(lambda m: jnp.mean(m(x, y)))(model)
    assert jax.tree.leaves(nnx.state(grads, FrozenWeight)) == []
    assert len(jax.tree.leaves(nnx.state(grads, nnx.Param))) == 3
    # Frozen heads (the default) are not parameters: there is nothing to differentiate.
    assert jax.tree.leaves(nnx.state(nnx.grad(lambda m: jnp.mean(m(x, y)))(_model(trunk)))) == []


def test_projection_clamps_heads(trunk):
    model = _model(trunk)
    model.set_heads([-np.ones(c, np.float32) for c in trunk.tap_channels])
    model.project()
    assert all(float(h.weight[...].min()) == 0.0 for h in model.heads)


def test_jit_and_streaming_lifecycle(trunk):
    x, y = _imgs(0), _imgs(1)
    model = _model(trunk)
    assert isinstance(model, StatefulMetricProtocol)
    eager = np.asarray(model(x, y))

    @nnx.jit
    def update(m, a, b):
        m.update(predictions=a, targets=b)

    update(model, x[:2], y[:2])
    update(model, x[2:], y[2:])
    np.testing.assert_allclose(float(model.compute()["lpips"]), eager.mean(), rtol=1e-5)
    other = _model(trunk)
    other.update(predictions=x, targets=y)
    model.merge(other)
    np.testing.assert_allclose(float(model.compute()["lpips"]), eager.mean(), rtol=1e-5)
    summed = _model(trunk, reduction="sum")
    summed.update(predictions=x, targets=y)
    np.testing.assert_allclose(float(summed.compute()["lpips"]), eager.sum(), rtol=1e-5)
    with pytest.raises(
        ValueError, match=re.escape("expected `other` to use reduction 'sum', got 'mean'")
    ):
        summed.merge(other)
    model.reset()
    assert int(model.count[...]) == 0
    mm = nnx.MultiMetric(lpips=_model(trunk), loss=nnx.metrics.Average("loss"))
    mm.update(predictions=x, targets=y, loss=jnp.float32(1.0))
    with jax.numpy_dtype_promotion("standard"):  # flax's Average divides float by int
        result = mm.compute()
    np.testing.assert_allclose(float(result["lpips"]["lpips"]), eager.mean(), rtol=1e-5)


def test_official_heads_are_packaged_and_nonnegative():
    for net, channels in {
        "alex": (64, 192, 384, 256, 256),
        "vgg": (64, 128, 256, 512, 512),
        "squeeze": (64, 128, 256, 384, 384, 512, 512),
    }.items():
        heads = load_official_heads(net)
        assert tuple(h.shape[0] for h in heads) == channels
        assert all(h.min() >= 0 for h in heads)


def test_heads_for_another_trunk_are_rejected(trunk):
    model = _model(trunk)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected 3 heads for trunk 'alex', got 5 (a head checkpoint for another trunk?)"
        ),
    ):
        model.set_heads(load_official_heads("alex"))
    with pytest.raises(
        ValueError, match=re.escape("expected head 0 of trunk 'alex' to have 8 channels, got 4")
    ):
        model.set_heads([np.ones(4), np.ones(16), np.ones(16)])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `net` to be one of 'alex', 'vgg', 'squeeze', got 'efficientnet-lite0'"
        ),
    ):
        load_official_heads("efficientnet-lite0")
    with pytest.raises(FileNotFoundError, match=re.escape("expected an LPIPS heads file at")):
        load_official_heads("alex", "/nonexistent/alex.pth")


def test_bad_input(trunk):
    model = _model(trunk)
    x = _imgs(0)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `x` and `y` to have the same shape, got (3, 16, 16, 3) and (2, 16, 16, 3)"
        ),
    ):
        model(x, x[:2])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `x` to have 4 dims (batch, height, width, channels), got shape (16, 16, 3)"
        ),
    ):
        model(x[0], x[0])
    with pytest.raises(
        ValueError,
        match=re.escape("expected `x` to have channels 3 on axis -1, got shape (3, 16, 16, 1)"),
    ):
        model(x[..., :1], x[..., :1])
    with pytest.raises(
        ValueError,
        match=re.escape("expected `x` to be in [-1, 1] (normalize=False), got values in [0, 2]"),
    ):
        model(jnp.full_like(x, 2.0).at[0, 0, 0, 0].set(0.0), x)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `x` to be in [0, 1] (normalize=True), got values in [-0.9999"),
    ):
        model(x, x, normalize=True)
    with pytest.raises(
        ValueError, match=re.escape("expected `x` to be finite, got 1 NaN and 0 Inf values")
    ):
        model(x.at[0, 0, 0, 0].set(jnp.nan), x)
    with pytest.raises(
        TypeError, match=re.escape("expected `x` to have a floating dtype, got uint8")
    ):
        model(jnp.zeros((1, 16, 16, 3), jnp.uint8), jnp.zeros((1, 16, 16, 3), jnp.uint8))
    with pytest.raises(
        ValueError, match=re.escape("expected images of at least 8x8 for trunk 'alex', got 4x4")
    ):
        model(x[:, :4, :4], x[:, :4, :4])
    with pytest.raises(
        ValueError, match=re.escape("expected `reduction` to be one of 'mean', 'sum', got 'max'")
    ):
        _model(trunk, reduction="max")
    with pytest.raises(
        ValueError, match=re.escape("expected `pretrained=False` for trunk 'efficientnet-lite0'")
    ):
        LPIPS(net="efficientnet-lite0", trunk=trunk)


def test_heads_checkpoint_round_trip_and_wrong_trunk(trunk, tmp_path):
    model = _model(trunk)
    rng = np.random.default_rng(1)
    model.set_heads([rng.uniform(0, 1, c).astype(np.float32) for c in trunk.tap_channels])
    model.save_heads(tmp_path / "heads")
    loaded = LPIPS.from_checkpoint(tmp_path / "heads", trunk=trunk)
    x, y = _imgs(0), _imgs(1)
    np.testing.assert_array_equal(np.asarray(loaded(x, y)), np.asarray(model(x, y)))

    class OtherTrunk(ToyTrunk):
        tap_channels = (8, 16)

        def taps(self, x):
            return super().taps(x)[:2]

    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected heads with channels [8, 16] for this trunk, got [8, 16, 16] (a head checkpoint for another trunk?)"
        ),
    ):
        LPIPS.from_checkpoint(tmp_path / "heads", trunk=OtherTrunk(rngs=nnx.Rngs(0)))
