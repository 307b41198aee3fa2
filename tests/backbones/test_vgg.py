"""VGG16 trunk against torchvision's, through golden outputs from seeded weights.

``scripts/make_golden_backbones.py`` filled torchvision's ``vgg16`` with the seeded weights of
``tests/fixtures/golden/seeded_weights.py`` and stored the five LPIPS taps (checked there against
lpips' own ``vgg16`` slices); here the same weights go through our state-dict mapping, so a
match tests the architecture and the key mapping together.
"""

import importlib.util
import pathlib
import re

import numpy as np
import pytest

from calibrax.backbones import load
from calibrax.backbones._mapping import StateDictMismatchError
from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones._zoo import get_spec
from calibrax.backbones.vgg import VGG16
from calibrax.io import weights

_PATH = pathlib.Path(__file__).parents[1] / "fixtures" / "golden" / "seeded_weights.py"
_SPEC = importlib.util.spec_from_file_location("seeded_weights", _PATH)
seeded_weights = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(seeded_weights)


@pytest.fixture(scope="module")
def golden():
    # The classifier does not feed the taps: zeros keep the fixture fast (123M of 138M parameters).
    arrays, state_dict = seeded_weights.golden("vgg16", zeros_for=("classifier.",))
    model = VGG16()
    load_state_dict(model, get_spec("vgg16").convert(state_dict))
    return arrays, state_dict, model


def test_taps_match_torchvision(golden):
    arrays, _, model = golden
    taps = model(arrays["images"])
    # taps() is the same computation as a tuple (the LPIPS trunk interface).
    for got, want in zip(model.taps(arrays["images"]), taps.values(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert tuple(taps) == VGG16.tap_names
    for name, channels in zip(VGG16.tap_names, VGG16.tap_channels, strict=True):
        assert taps[name].shape[-1] == channels
        assert taps[name].dtype == np.float32
        # Both sides are float32 convolutions summed in different orders (oneDNN vs XLA): their
        # relative difference is ~1e-6, so 1e-4 relative catches any architectural or mapping slip.
        seeded_weights.assert_tap_close(arrays, name, taps[name])


def test_min_size_is_torchvisions(golden):
    arrays, _, model = golden
    assert int(arrays["min_size"]) == VGG16.min_input_size
    size = VGG16.min_input_size
    taps = model(np.zeros((1, size, size, 3), np.float32))
    assert taps["relu5_3"].shape == (1, 1, 1, 512)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to have height and width at least 16, got shape (1, 15, 40, 3)"
        ),
    ):
        model(np.zeros((1, 15, 40, 3), np.float32))


@pytest.mark.parametrize(
    ("shape", "dtype", "error", "message"),
    [
        (
            (2, 32, 32, 4),
            np.float32,
            ValueError,
            "expected `images` to have 3 channels (last axis), got shape (2, 32, 32, 4)",
        ),
        (
            (32, 32, 3),
            np.float32,
            ValueError,
            "expected `images` to have 4 dims (batch, height, width, channels), got shape "
            "(32, 32, 3)",
        ),
        (
            (0, 32, 32, 3),
            np.float32,
            ValueError,
            "expected `images` to be non-empty, got shape (0, 32, 32, 3)",
        ),
        (
            (1, 32, 32, 3),
            np.uint8,
            TypeError,
            "expected `images` to have a floating dtype, got uint8",
        ),
    ],
)
def test_bad_images(golden, shape, dtype, error, message):
    with pytest.raises(error, match=re.escape(message)):
        golden[2](np.zeros(shape, dtype))


def test_wrong_shape_in_state_dict(golden):
    bad = dict(golden[1])
    bad["features.28.weight"] = np.zeros((512, 256, 3, 3), np.float32)
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected `features.28.weight` to have shape (512, 512, 3, 3) for VGG16, "
            "got shape (512, 256, 3, 3)"
        ),
    ):
        load_state_dict(VGG16(), get_spec("vgg16").convert(bad))


def test_missing_key_in_state_dict(golden):
    bad = {k: v for k, v in golden[1].items() if k != "features.0.bias"}
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected the state dict to have key 'features.0.bias' needed by VGG16 "
            "(shape (64,)), got no such key"
        ),
    ):
        load_state_dict(VGG16(), get_spec("vgg16").convert(bad))


def test_load_without_weights_names_the_file(tmp_path):
    with pytest.raises(
        weights.WeightsNotFoundError,
        match=re.escape(
            f"expected the weights 'vgg16' in the calibrax cache at "
            f"'{tmp_path / 'weights' / 'vgg16'}', got none. Import the file vgg16-397923af.pth"
        ),
    ) as info:
        load("vgg16", home=tmp_path)
    assert str(info.value).endswith(
        "once with: calibrax weights import vgg16 /path/to/vgg16-397923af.pth"
    )
