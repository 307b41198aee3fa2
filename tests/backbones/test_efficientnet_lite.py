"""EfficientNet-Lite0: architecture vs the shipped weights, real-image classification, interface,
jit, frozen weights, and bad input."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from calibrax.backbones import EfficientNetLite0
from calibrax.backbones import load
from calibrax.backbones import module_state_dict
from calibrax.core import FrozenWeight
from calibrax.core import registry
from calibrax.io import load_torch_checkpoint
from calibrax.io import weights

skimage_data = pytest.importorskip("skimage.data")


def imagenet_crop(image: np.ndarray, size: int = 224) -> np.ndarray:
    """Shorter side to ``size`` (PIL bilinear), centre crop, scaled to [0, 1] float32."""
    pil = Image.fromarray(image)
    w, h = pil.size
    scale = size / min(w, h)
    pil = pil.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = pil.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), np.float32) / 255.0


@pytest.fixture(scope="module")
def model():
    return load("efficientnet-lite0")  # CALIBRAX_HOME is tests/.calibrax_home (conftest)


@pytest.fixture(scope="module")
def forward(model):
    # Eager calls already run one compiled program (see EfficientNetLite0.forward).
    return model.forward


def test_architecture_matches_the_shipped_state_dict():
    shipped = load_torch_checkpoint(weights.packaged_file("efficientnet-lite0"))
    ours = module_state_dict(EfficientNetLite0())
    want = {k: v.shape for k, v in shipped.items() if not k.endswith("num_batches_tracked")}
    assert {k: v.shape for k, v in ours.items()} == want
    assert len(ours) == 247


def test_real_images_are_classified(forward):
    images = np.stack([imagenet_crop(skimage_data.chelsea()), imagenet_crop(skimage_data.coffee())])
    top1 = np.argmax(np.asarray(forward(images).logits), axis=-1)
    assert 281 <= top1[0] <= 285  # ImageNet cat classes (tabby ... Egyptian cat)
    assert top1[1] == 967  # espresso


def test_interface_and_shapes(model, forward):
    assert model.input_size == (224, 224)
    assert model.num_features == 1280 and model.num_classes == 1000
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 224, 224, 3)), jnp.float32)
    out = forward(x)
    assert out.logits.shape == (2, 1000) and out.logits.dtype == jnp.float32
    assert out.features.shape == (2, 1280) and out.features.dtype == jnp.float32
    sizes = [112, 56, 28, 14, 14, 7, 7]
    assert [s.shape for s in out.stages] == [
        (2, n, n, c) for n, c in zip(sizes, EfficientNetLite0.stage_channels, strict=True)
    ]
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(out.features))
    np.testing.assert_array_equal(np.asarray(model.logits(x)), np.asarray(out.logits))
    # Under an outer nnx.jit the forward inlines into another compilation; 1e-5 allows for
    # fusion-order rounding in float32.
    jitted = nnx.jit(lambda m, x: m.logits(x))(model, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(out.logits), atol=1e-5)


def _loss_and_grads(argnums):
    model = EfficientNetLite0(rngs=nnx.Rngs(3))
    graphdef, frozen = nnx.split(model, FrozenWeight)

    def loss(frozen, x):
        return jnp.sum(nnx.merge(graphdef, frozen)(x) ** 2)

    # Weights are arguments, not closed-over constants: XLA would constant-fold 5M parameters.
    return model, frozen, jax.jit(jax.value_and_grad(loss, argnums=argnums))


def test_frozen_weights_and_input_gradients():
    # Weight gradients are exactly zero (stop_gradient) also through the whole network; input
    # gradients are finite and non-zero.
    model, frozen, value_and_grads = _loss_and_grads((0, 1))
    assert nnx.state(model, nnx.Param) == nnx.State({})
    assert len(nnx.to_flat_state(frozen)) == 247
    x = np.random.default_rng(2).uniform(0.2, 0.8, size=(1, 32, 32, 3)).astype(np.float32)
    _, (g_frozen, g_x) = value_and_grads(frozen, jnp.asarray(x))
    assert all(float(jnp.abs(g[...]).max()) == 0.0 for _, g in nnx.to_flat_state(g_frozen))
    assert np.all(np.isfinite(np.asarray(g_x))) and float(jnp.abs(g_x).max()) > 0.0


@pytest.mark.slow
def test_input_gradient_matches_finite_differences():
    # float64 network (~1 min on CPU): a central finite difference along a random direction
    # (eps 1e-6: truncation and rounding errors ~1e-9 relative) agrees with reverse mode to 1e-5
    # unless a ReLU6 kink is crossed (probability ~0 at this eps).
    _, frozen, value_and_grads = _loss_and_grads(1)
    x = np.random.default_rng(2).uniform(0.2, 0.8, size=(1, 32, 32, 3))
    direction = np.random.default_rng(3).normal(size=x.shape)
    _, g_x = value_and_grads(frozen, jnp.asarray(x))
    eps = 1e-6
    plus = value_and_grads(frozen, jnp.asarray(x + eps * direction))[0]
    minus = value_and_grads(frozen, jnp.asarray(x - eps * direction))[0]
    fd = (float(plus) - float(minus)) / (2 * eps)
    np.testing.assert_allclose(np.sum(np.asarray(g_x) * direction), fd, rtol=1e-5)


def test_registered():
    entry = registry.get_entry("efficientnet-lite0")
    assert entry.obj is EfficientNetLite0
    assert (entry.kind, entry.tier, entry.domain) == ("backbone", 1, "vision")
    assert entry.jit_compatible and entry.differentiable


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (
            np.zeros((224, 224, 3), np.float32),
            ValueError,
            "expected `images` to have 4 dims (batch, height, width, channels), got shape "
            "(224, 224, 3)",
        ),
        (
            np.zeros((1, 224, 224, 1), np.float32),
            ValueError,
            "expected `images` to have channels 3 on axis 3, got shape (1, 224, 224, 1)",
        ),
        (
            np.zeros((1, 224, 224, 3), np.uint8),
            TypeError,
            "expected `images` to have a floating dtype, got uint8",
        ),
        (
            np.zeros((1, 31, 224, 3), np.float32),
            ValueError,
            "expected `images` to be at least 32x32 pixels (EfficientNet-Lite0 downsamples 32x), "
            "got shape (1, 31, 224, 3)",
        ),
        (
            np.full((1, 32, 32, 3), 255.0, np.float32),
            ValueError,
            "expected `images` to be in [0, 1] (RGB scaled to [0, 1]), got values in [255, 255]",
        ),
        (
            np.full((1, 32, 32, 3), -0.5, np.float32),
            ValueError,
            "expected `images` to be in [0, 1] (RGB scaled to [0, 1]), got values in [-0.5, -0.5]",
        ),
        (
            np.full((1, 32, 32, 3), np.nan, np.float32),
            ValueError,
            "expected `images` to be finite, got 3072 NaN and 0 Inf values",
        ),
    ],
    ids=["rank", "channels", "uint8", "too-small", "0-255", "negative", "nan"],
)
def test_bad_input(images, error, message):
    with pytest.raises(error, match=re.escape(message)):
        EfficientNetLite0()(images)
