"""SqueezeNet 1.1 trunk against torchvision's, through golden outputs from seeded weights.

``scripts/make_golden_backbones.py`` filled torchvision's ``squeezenet1_1`` with the seeded weights of
``tests/fixtures/golden/seeded_weights.py`` and stored the seven LPIPS taps (checked there against
lpips' own ``squeezenet`` slices); here the same weights go through our state-dict mapping, so a
match tests the architecture and the key mapping together.
"""

import dataclasses
import importlib.util
import pathlib
import re

import numpy as np
import pytest

from calibrax.backbones import load
from calibrax.backbones._mapping import StateDictMismatchError
from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones._zoo import get_spec
from calibrax.backbones.squeezenet import SqueezeNet1_1
from calibrax.io import weights

_PATH = pathlib.Path(__file__).parents[1] / "fixtures" / "golden" / "seeded_weights.py"
_SPEC = importlib.util.spec_from_file_location("seeded_weights", _PATH)
seeded_weights = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(seeded_weights)


@pytest.fixture(scope="module")
def golden():
    # The classifier does not feed the taps: zeros keep the fixture fast (0.5M of 1.2M parameters).
    arrays, state_dict = seeded_weights.golden("squeezenet1_1", zeros_for=("classifier.",))
    model = SqueezeNet1_1()
    load_state_dict(model, get_spec("squeezenet1_1").convert(state_dict))
    return arrays, state_dict, model


def test_taps_match_torchvision(golden):
    arrays, _, model = golden
    taps = model(arrays["images"])
    # taps() is the same computation as a tuple (the LPIPS trunk interface).
    for got, want in zip(model.taps(arrays["images"]), taps.values(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert tuple(taps) == SqueezeNet1_1.tap_names
    for name, channels in zip(SqueezeNet1_1.tap_names, SqueezeNet1_1.tap_channels, strict=True):
        assert taps[name].shape[-1] == channels
        assert taps[name].dtype == np.float32
        # Both sides are float32 convolutions summed in different orders (oneDNN vs XLA): their
        # relative difference is ~1e-6, so 1e-4 relative catches any architectural or mapping slip.
        seeded_weights.assert_tap_close(arrays, name, taps[name])


def test_min_size_is_torchvisions(golden):
    arrays, _, model = golden
    assert int(arrays["min_size"]) == SqueezeNet1_1.min_input_size
    size = SqueezeNet1_1.min_input_size
    taps = model(np.zeros((1, size, size, 3), np.float32))
    assert taps["relu7"].shape == (1, 1, 1, 512)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to have height and width at least 17, got shape (1, 16, 40, 3)"
        ),
    ):
        model(np.zeros((1, 16, 40, 3), np.float32))


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
    bad["features.12.expand3x3.weight"] = np.zeros((256, 64, 1, 1), np.float32)
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected `features.12.expand3x3.weight` to have shape (256, 64, 3, 3) for SqueezeNet1_1, "
            "got shape (256, 64, 1, 1)"
        ),
    ):
        load_state_dict(SqueezeNet1_1(), get_spec("squeezenet1_1").convert(bad))


def test_missing_key_in_state_dict(golden):
    bad = {k: v for k, v in golden[1].items() if k != "features.6.squeeze.bias"}
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected the state dict to have key 'features.6.squeeze.bias' needed by SqueezeNet1_1 "
            "(shape (32,)), got no such key"
        ),
    ):
        load_state_dict(SqueezeNet1_1(), get_spec("squeezenet1_1").convert(bad))


def test_pth_file_imports_and_loads(golden, tmp_path, monkeypatch):
    # The whole user path on a real torch file: safe reader, classifier dropped, mapping, Orbax
    # cache, load. The file holds the seeded weights, so the registry's sha256 is swapped for this
    # file's (the digest check itself is tested with the weight registry).
    torch = pytest.importorskip("torch")
    arrays, state_dict, _ = golden
    path = tmp_path / "squeezenet1_1-b8a52dc0.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    entry = dataclasses.replace(
        weights.KNOWN_WEIGHTS["squeezenet1_1"], sha256=weights.sha256_file(path)
    )
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "squeezenet1_1", entry)
    weights.import_weights("squeezenet1_1", path, home=tmp_path / "home")
    model = load("squeezenet1_1", home=tmp_path / "home")
    assert isinstance(model, SqueezeNet1_1)
    taps = model(arrays["images"])
    for name in SqueezeNet1_1.tap_names:
        seeded_weights.assert_tap_close(arrays, name, taps[name])


def test_load_without_weights_names_the_file(tmp_path):
    with pytest.raises(
        weights.WeightsNotFoundError,
        match=re.escape(
            f"expected the weights 'squeezenet1_1' in the calibrax cache at "
            f"'{tmp_path / 'weights' / 'squeezenet1_1'}', got none. Import the file squeezenet1_1-b8a52dc0.pth"
        ),
    ) as info:
        load("squeezenet1_1", home=tmp_path)
    assert str(info.value).endswith(
        "once with: calibrax weights import squeezenet1_1 /path/to/squeezenet1_1-b8a52dc0.pth"
    )
