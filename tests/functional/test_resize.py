"""resize_images: the named modes under jit, their weights, the host path and bad input.

Parity with the reference tools' own code is in tests/reference/test_resize_reference.py.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calibrax.functional import JAX_RESIZE_METHODS
from calibrax.functional import RESIZE_MODES
from calibrax.functional import resize_images
from calibrax.functional import resize_images_numpy
from calibrax.functional import resize_matrix

# (in, out) pairs: down, up, unchanged, and a large non-integer downscale.
SIZES = [(13, 7), (7, 13), (9, 9), (50, 11)]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (2, 13, 50, 3)).astype(np.float32)


def test_mode_names():
    from calibrax.cli.main import RESIZE_CHOICES

    assert RESIZE_MODES == ("pytorch-fid", "tf1", "clean", "antialias")
    assert "bilinear" in JAX_RESIZE_METHODS
    assert RESIZE_CHOICES == (*RESIZE_MODES, "none")  # the CLI spells them out


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_jit_equals_eager_and_keeps_shape_and_dtype(images, mode):
    eager = resize_images(images, (7, 11), mode)
    jitted = jax.jit(resize_images, static_argnums=(1, 2))(images, (7, 11), mode)
    assert eager.shape == (2, 7, 11, 3) and eager.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-6)
    wide = resize_images(images.astype(np.float64), (7, 11), mode)  # x64 is on in the tests
    assert wide.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(wide), np.asarray(eager), atol=1e-6)


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_same_size_is_the_identity_exactly(images, mode):
    np.testing.assert_array_equal(np.asarray(resize_images(images, (13, 50), mode)), images)
    np.testing.assert_array_equal(resize_images_numpy(images, (13, 50), mode), images)


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize(("n_in", "n_out"), SIZES)
def test_weights_are_normalised_and_read_only(mode, n_in, n_out):
    w = resize_matrix(n_in, n_out, mode)
    assert w.shape == (n_out, n_in) and w.dtype == np.float64
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="read-only"):
        w[0, 0] = 1.0


def test_pytorch_fid_is_jax_bilinear_without_antialias(images):
    # The resize calibrax used before the named modes: the same kernel, up and down. jax rounds
    # the float32 source positions differently from torch (whose arithmetic the mode follows):
    # weights differ by a few 1e-6, and so do these noise images with jumps of up to 1.
    for size in ((7, 11), (29, 61)):
        want = jax.image.resize(images, (2, *size, 3), "bilinear", antialias=False)
        got = resize_images(images, size, "pytorch-fid")
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.parametrize("method", ["nearest", "bilinear", "lanczos3"])
def test_jax_method_names_are_jax_image_resize(images, method):
    want = jax.image.resize(images, (2, 7, 11, 3), method, antialias=False)
    np.testing.assert_array_equal(np.asarray(resize_images(images, (7, 11), method)), want)


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_host_path_matches_the_jax_path(images, mode):
    want = np.asarray(resize_images(images, (7, 29), mode))
    got = resize_images_numpy(images, (7, 29), mode)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(resize_images_numpy(images[0], (7, 29), mode), want[0], atol=1e-6)


def test_antialiased_modes_do_not_alias_a_fine_checkerboard():
    board = (np.indices((60, 60)).sum(0) % 2).astype(np.float32)[None, :, :, None]
    spread = {m: float(np.std(resize_images(board, (21, 21), m))) for m in RESIZE_MODES}
    # Pillow's filters widen with the downscale and average the pattern to grey; two-tap
    # bilinears sample it and keep a strong pattern.
    assert spread["clean"] < 0.01 and spread["antialias"] < 0.01
    assert spread["pytorch-fid"] > 0.1 and spread["tf1"] > 0.1


def test_clean_clips_the_bicubic_overshoot_to_the_image_range():
    step = np.zeros((1, 8, 8, 1), np.float32)
    step[:, :, 4:] = 1.0
    raw = resize_matrix(8, 29, "clean") @ step[0, 0, :, 0]
    assert raw.min() < -0.05 and raw.max() > 1.05  # bicubic rings at an edge
    out = np.asarray(resize_images(step, (8, 29), "clean"))
    assert out.min() == 0.0 and out.max() == 1.0


def test_empty_batch_is_fine():
    assert resize_images(np.zeros((0, 5, 5, 3), np.float32), (2, 3), "clean").shape == (0, 2, 3, 3)


MODES_LISTED = "'pytorch-fid', 'tf1', 'clean', 'antialias'"


@pytest.mark.parametrize(
    ("images", "size", "mode", "error", "message"),
    [
        (
            np.zeros((4, 4, 3), np.float32),
            (2, 2),
            "clean",
            ValueError,
            "expected `images` to have 4 dims (batch, height, width, channels), got shape (4, 4, 3)",
        ),
        (
            np.zeros((1, 4, 4, 3), np.uint8),
            (2, 2),
            "clean",
            TypeError,
            "expected `images` to have a floating dtype, got uint8",
        ),
        (
            np.zeros((1, 0, 4, 3), np.float32),
            (2, 2),
            "clean",
            ValueError,
            "expected `images` to have height and width at least 1, got shape (1, 0, 4, 3)",
        ),
        (
            np.zeros((1, 4, 4, 3), np.float32),
            (0, 2),
            "clean",
            ValueError,
            "expected `size` to be (height, width), two positive integers, got (0, 2)",
        ),
        (
            np.zeros((1, 4, 4, 3), np.float32),
            224,
            "clean",
            ValueError,
            "expected `size` to be (height, width), two positive integers, got 224",
        ),
        (
            np.zeros((1, 4, 4, 3), np.float32),
            (2.0, 2),
            "clean",
            ValueError,
            "expected `size` to be (height, width), two positive integers, got (2.0, 2)",
        ),
        (
            np.zeros((1, 4, 4, 3), np.float32),
            (2, 2),
            "area",
            ValueError,
            f"expected `mode` to be one of {MODES_LISTED}, 'nearest', 'bilinear', 'linear', "
            "'bicubic', 'cubic', 'lanczos3', 'lanczos5', got 'area'",
        ),
    ],
)
def test_bad_input_messages(images, size, mode, error, message):
    with pytest.raises(error, match=re.escape(message) + "$"):
        resize_images(images, size, mode)


def test_host_path_and_matrix_bad_input_messages():
    x = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(
        ValueError, match=re.escape(f"expected `mode` to be one of {MODES_LISTED}, got 'bilinear'")
    ):
        resize_images_numpy(x, (2, 2), "bilinear")
    with pytest.raises(
        ValueError, match=re.escape("expected `images` to have 3 or 4 dims, got shape (4, 4)")
    ):
        resize_images_numpy(x[..., 0], (2, 2), "clean")
    with pytest.raises(
        ValueError, match=re.escape("expected `in_size` to be a positive integer, got 0")
    ):
        resize_matrix(0, 3, "clean")
    with pytest.raises(
        ValueError, match=re.escape(f"expected `mode` to be one of {MODES_LISTED}, got 'cubic'")
    ):
        resize_matrix(4, 3, "cubic")


def test_backbone_defaults():
    from calibrax.backbones.efficientnet_lite import EfficientNetLite0
    from calibrax.backbones.inception import InceptionV3FID

    assert InceptionV3FID.resize_method == "pytorch-fid"
    assert EfficientNetLite0.resize_method == "antialias"


class _Pixels:
    """A backbone whose features are its input pixels: the metric's resize, seen directly."""

    input_size = (16, 12)
    num_features = 16 * 12 * 3

    def __call__(self, x):
        return x.reshape(x.shape[0], -1)


def test_metrics_resize_with_the_chosen_mode():
    from calibrax.metrics import FrechetDistance

    images = np.random.default_rng(1).integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
    metric = FrechetDistance(backbone=_Pixels(), resize_method="clean")
    want = resize_images(images.astype(np.float32) / 255.0, (16, 12), "clean")
    np.testing.assert_allclose(
        np.asarray(metric.features_of(images)), np.asarray(want).reshape(3, -1), atol=1e-6
    )
    with pytest.raises(
        ValueError,
        match=re.escape(f"expected `resize_method` to be one of {MODES_LISTED}, 'nearest'"),
    ):
        FrechetDistance(backbone=_Pixels(), resize_method="area")
