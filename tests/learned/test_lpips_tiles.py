"""LPIPS of large images in overlapping tiles: equal to the whole-image value, bounded memory.

The trunks are randomly initialised (``pnet_rand``): tiling exactness is a property of the
architecture (receptive field, strides, padding), not of the weights, and needs no weight file.
"""

import io
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.learned import LPIPS
from calibrax.learned import lpips_tiled
from calibrax.learned import tile_plan
from calibrax.learned.lpips_tiles import default_margin
from calibrax.learned.lpips_tiles import default_tile


def _pair(height, width, seed=0):
    import skimage.data

    photo = skimage.data.astronaut().astype(np.float32) / 255.0
    x = np.asarray(jax.image.resize(photo, (height, width, 3), "linear")).clip(0.0, 1.0)
    rng = np.random.default_rng(seed)
    y = np.clip(x + rng.normal(0.0, 0.1, x.shape), 0.0, 1.0).astype(np.float32)
    return x[None], y[None]


@pytest.fixture(scope="module")
def alex():
    return LPIPS(net="alex", pretrained=False, pnet_rand=True, normalize=True, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def alex_pair():
    return _pair(600, 800)


@pytest.fixture(scope="module")
def whole():
    return nnx.jit(lambda m, a, b: m(a, b))  # one compilation per shape for the module


@pytest.fixture(scope="module")
def alex_whole(alex, alex_pair, whole):
    return np.asarray(whole(alex, *map(jnp.asarray, alex_pair)), np.float64)


def test_tiles_cover_each_tap_grid_once_with_one_window_shape():
    plan = tile_plan(600, 800, margin=96, tile=416)
    assert plan.window == (408, 416)  # 408 = 600 mod 32 and 416 = 800 mod 32, within 416
    # Steps of 192 and 224: the window less both margins, down to a multiple of 32.
    assert plan.rows == (0, 192) and plan.cols == (0, 224, 384)
    assert plan.row_bounds == (0, 288, 600) and plan.col_bounds == (0, 320, 480, 800)
    # Each owned range keeps `margin` pixels of context inside its window on both inner sides.
    for starts, bounds, win in (
        (plan.rows, plan.row_bounds, 408),
        (plan.cols, plan.col_bounds, 416),
    ):
        for i, s in enumerate(starts):
            lo, hi = bounds[i], bounds[i + 1]
            assert s <= lo and hi <= s + win
            assert i == 0 or lo - s >= 96
            assert i == len(starts) - 1 or s + win - hi >= 96


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_tiled_alexnet_equals_the_whole_image(alex, alex_pair, alex_whole, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)  # tqdm draws its bar on terminals only
    got = lpips_tiled(alex, *alex_pair, tile=416, progress=True)
    assert tile_plan(600, 800, margin=96, tile=416).num_tiles == 6
    assert "lpips tiles" in terminal.getvalue() and "6/6" in terminal.getvalue()
    # Same pixels and padding per kept position: only float32 rounding differs (seen: 3e-8).
    np.testing.assert_allclose(got, alex_whole, rtol=1e-6)


def test_a_margin_below_half_the_receptive_field_is_not_exact(alex, alex_pair, alex_whole):
    # The test above can fail: with 64 pixels of context (AlexNet's relu5 needs 82) the tiles
    # miss part of the receptive field (seen: 5e-5 relative).
    got = lpips_tiled(alex, *alex_pair, tile=416, margin=64)
    assert np.abs(got / alex_whole - 1).max() > 1e-5


def test_uint8_images_are_scaled_window_by_window(alex, alex_pair, whole):
    x8, y8 = (np.rint(a * 255).astype(np.uint8) for a in alex_pair)
    want = np.asarray(
        whole(alex, jnp.asarray(x8 / 255.0, jnp.float32), jnp.asarray(y8 / 255.0, jnp.float32))
    )
    np.testing.assert_allclose(lpips_tiled(alex, x8, y8, tile=416), want, rtol=1e-6)


@pytest.mark.slow  # two compilations of EfficientNet-Lite0 (~15 s each on a loaded 2-core CPU)
def test_tiled_efficientnet_lite0_with_same_padding_of_odd_sizes():
    # TensorFlow SAME padding depends on each layer's input parity: windows congruent to the
    # image modulo 32 pad as the image does. Odd height and width; receptive field 851.
    model = LPIPS(
        net="efficientnet-lite0", pretrained=False, pnet_rand=True, normalize=True, rngs=nnx.Rngs(1)
    )
    x, y = _pair(63, 1001)
    plan = tile_plan(63, 1001, margin=default_margin("efficientnet-lite0"), tile=1000)
    assert plan.margin == 448 and plan.window == (63, 969) and plan.cols == (0, 32)
    got = lpips_tiled(model, x, y, tile=1000)
    np.testing.assert_allclose(got, np.asarray(model(jnp.asarray(x), jnp.asarray(y))), rtol=1e-6)


def test_memory_is_bounded_by_the_window_not_the_image(alex):
    # A 3000x4000 photo (the 553 s, 3.5 GB report) runs as 12 windows of one shape at most
    # 1216 pixels a side (AlexNet's default tile), and a 6000x8000 one in windows as small.
    # XLA's memory analysis of the compiled programs: the window's is a fraction of the whole's.
    assert default_tile("alex") == 1216
    plan = tile_plan(3000, 4000, margin=96, tile=1216)
    assert plan.window == (1208, 1216) and plan.num_tiles == 12
    bigger = tile_plan(6000, 8000, margin=96, tile=1216)
    assert bigger.window == (1200, 1216) and bigger.num_tiles == 48
    graph, state = nnx.split(alex)
    fn = jax.jit(lambda s, a, b: nnx.merge(graph, s).tap_maps(a, b, normalize=True))

    def footprint(shape):
        arr = jax.ShapeDtypeStruct((1, *shape, 3), jnp.float32)
        m = fn.lower(state, arr, arr).compile().memory_analysis()
        return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes

    tile_bytes, whole_bytes = footprint(plan.window), footprint((3000, 4000))
    print(f"window {tile_bytes / 2**20:.0f} MiB, whole image {whole_bytes / 2**20:.0f} MiB")
    assert tile_bytes < 256 * 2**20 and 6 * tile_bytes < whole_bytes  # seen: 136 vs 981 MiB


def test_bad_arguments(alex, alex_pair):
    x, y = alex_pair
    with pytest.raises(
        ValueError, match=re.escape("expected `margin` to be a positive multiple of 32, got 40")
    ):
        lpips_tiled(alex, x, y, margin=40)
    with pytest.raises(
        ValueError, match=re.escape("expected `tile` >= 256 (twice the margin 96 plus 64), got 200")
    ):
        lpips_tiled(alex, x, y, tile=200)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `x` and `y` to have the same shape, got (1, 600, 800, 3) and (1, 600, 700, 3)"
        ),
    ):
        lpips_tiled(alex, x, y[:, :, :700])
    with pytest.raises(
        ValueError, match=re.escape("expected `y` to be in [0, 1] (normalize=True)")
    ):
        lpips_tiled(alex, x, y * 255)
    spatial = LPIPS(net="alex", pretrained=False, pnet_rand=True, spatial=True, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError,
        match=re.escape("expected an LPIPS model with `spatial=False`, got spatial=True"),
    ):
        lpips_tiled(spatial, x, y)
