"""AlexNet, VGG16 and SqueezeNet 1.1 trunks against torchvision's, through golden outputs.

``scripts/make_golden_backbones.py`` filled torchvision's ``alexnet``, ``vgg16`` and
``squeezenet1_1`` with the seeded weights of ``tests/fixtures/golden/seeded_weights.py`` and stored
the LPIPS taps (five for AlexNet and VGG16, seven for SqueezeNet; checked there against lpips' own
``alexnet``, ``vgg16`` and ``squeezenet`` slices); here the same weights go through our state-dict
mapping, so a match tests the architecture and the key mapping together. Each network has a row
in ``CASES`` holding its own expected values and exact error messages.
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
from calibrax.backbones.alexnet import AlexNet
from calibrax.backbones.squeezenet import SqueezeNet1_1
from calibrax.backbones.vgg import VGG16
from calibrax.io import weights

_PATH = pathlib.Path(__file__).parents[1] / "fixtures" / "golden" / "seeded_weights.py"
_SPEC = importlib.util.spec_from_file_location("seeded_weights", _PATH)
seeded_weights = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(seeded_weights)


@dataclasses.dataclass(frozen=True)
class Case:
    """One torchvision trunk and everything its tests expect of it."""

    cls: type
    name: str  # registry, golden fixture and weights name
    zeros_for: tuple[str, ...]  # state-dict prefixes zeroed in the fixture (they feed no tap)
    last_tap: str  # the deepest tap, checked at the minimum input size
    last_tap_channels: int
    too_small: tuple[int, ...]  # an input one pixel below the minimum height
    min_size_message: str
    bad_shape_key: str
    bad_shape: tuple[int, ...]
    bad_shape_message: str
    missing_key: str
    missing_key_message: str
    weights_file: str


# The classifier does not feed the taps: zeroing it keeps the fixture fast (AlexNet: 58M of 61M
# parameters, VGG16: 123M of 138M, SqueezeNet 1.1: 0.5M of 1.2M).
ALEXNET = Case(
    cls=AlexNet,
    name="alexnet",
    zeros_for=("classifier.",),
    last_tap="relu5",
    last_tap_channels=256,
    too_small=(1, 30, 40, 3),
    min_size_message=(
        "expected `images` to have height and width at least 31, got shape (1, 30, 40, 3)"
    ),
    bad_shape_key="features.3.weight",
    bad_shape=(192, 64, 3, 3),
    bad_shape_message=(
        "expected `features.3.weight` to have shape (192, 64, 5, 5) for AlexNet, "
        "got shape (192, 64, 3, 3)"
    ),
    missing_key="features.10.bias",
    missing_key_message=(
        "expected the state dict to have key 'features.10.bias' needed by AlexNet "
        "(shape (256,)), got no such key"
    ),
    weights_file="alexnet-owt-7be5be79.pth",
)
VGG = Case(
    cls=VGG16,
    name="vgg16",
    zeros_for=("classifier.",),
    last_tap="relu5_3",
    last_tap_channels=512,
    too_small=(1, 15, 40, 3),
    min_size_message=(
        "expected `images` to have height and width at least 16, got shape (1, 15, 40, 3)"
    ),
    bad_shape_key="features.28.weight",
    bad_shape=(512, 256, 3, 3),
    bad_shape_message=(
        "expected `features.28.weight` to have shape (512, 512, 3, 3) for VGG16, "
        "got shape (512, 256, 3, 3)"
    ),
    missing_key="features.0.bias",
    missing_key_message=(
        "expected the state dict to have key 'features.0.bias' needed by VGG16 "
        "(shape (64,)), got no such key"
    ),
    weights_file="vgg16-397923af.pth",
)
SQUEEZENET = Case(
    cls=SqueezeNet1_1,
    name="squeezenet1_1",
    zeros_for=("classifier.",),
    last_tap="relu7",
    last_tap_channels=512,
    too_small=(1, 16, 40, 3),
    min_size_message=(
        "expected `images` to have height and width at least 17, got shape (1, 16, 40, 3)"
    ),
    bad_shape_key="features.12.expand3x3.weight",
    bad_shape=(256, 64, 1, 1),
    bad_shape_message=(
        "expected `features.12.expand3x3.weight` to have shape (256, 64, 3, 3) for SqueezeNet1_1, "
        "got shape (256, 64, 1, 1)"
    ),
    missing_key="features.6.squeeze.bias",
    missing_key_message=(
        "expected the state dict to have key 'features.6.squeeze.bias' needed by SqueezeNet1_1 "
        "(shape (32,)), got no such key"
    ),
    weights_file="squeezenet1_1-b8a52dc0.pth",
)
CASES = (ALEXNET, VGG, SQUEEZENET)


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def case(request):
    return request.param


@pytest.fixture(scope="module")
def golden(case):
    arrays, state_dict = seeded_weights.golden(case.name, zeros_for=case.zeros_for)
    model = case.cls()
    load_state_dict(model, get_spec(case.name).convert(state_dict))
    return arrays, state_dict, model


def test_taps_match_torchvision(case, golden):
    arrays, _, model = golden
    taps = model(arrays["images"])
    # taps() is the same computation as a tuple (the LPIPS trunk interface).
    for got, want in zip(model.taps(arrays["images"]), taps.values(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert tuple(taps) == case.cls.tap_names
    for name, channels in zip(case.cls.tap_names, case.cls.tap_channels, strict=True):
        assert taps[name].shape[-1] == channels
        assert taps[name].dtype == np.float32
        # Both sides are float32 convolutions summed in different orders (oneDNN vs XLA): their
        # relative difference is ~1e-6, so 1e-4 relative catches any architectural or mapping slip.
        seeded_weights.assert_tap_close(arrays, name, taps[name])


def test_min_size_is_torchvisions(case, golden):
    arrays, _, model = golden
    assert int(arrays["min_size"]) == case.cls.min_input_size
    size = case.cls.min_input_size
    taps = model(np.zeros((1, size, size, 3), np.float32))
    assert taps[case.last_tap].shape == (1, 1, 1, case.last_tap_channels)
    with pytest.raises(ValueError, match=re.escape(case.min_size_message)):
        model(np.zeros(case.too_small, np.float32))


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


def test_wrong_shape_in_state_dict(case, golden):
    bad = dict(golden[1])
    bad[case.bad_shape_key] = np.zeros(case.bad_shape, np.float32)
    with pytest.raises(StateDictMismatchError, match=re.escape(case.bad_shape_message)):
        load_state_dict(case.cls(), get_spec(case.name).convert(bad))


def test_missing_key_in_state_dict(case, golden):
    bad = {k: v for k, v in golden[1].items() if k != case.missing_key}
    with pytest.raises(StateDictMismatchError, match=re.escape(case.missing_key_message)):
        load_state_dict(case.cls(), get_spec(case.name).convert(bad))


@pytest.mark.parametrize("case", [SQUEEZENET], ids=lambda case: case.name, indirect=True)
def test_pth_file_imports_and_loads(case, golden, tmp_path, monkeypatch):
    # The whole user path on a real torch file: safe reader, classifier dropped, mapping, Orbax
    # cache, load. The file holds the seeded weights, so the registry's sha256 is swapped for this
    # file's (the digest check itself is tested with the weight registry). Run on SqueezeNet, the
    # smallest trunk, to keep the suite fast.
    torch = pytest.importorskip("torch")
    arrays, state_dict, _ = golden
    path = tmp_path / case.weights_file
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    entry = dataclasses.replace(weights.KNOWN_WEIGHTS[case.name], sha256=weights.sha256_file(path))
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, case.name, entry)
    weights.import_weights(case.name, path, home=tmp_path / "home")
    model = load(case.name, home=tmp_path / "home")
    assert isinstance(model, case.cls)
    taps = model(arrays["images"])
    for name in case.cls.tap_names:
        seeded_weights.assert_tap_close(arrays, name, taps[name])


def test_load_without_weights_names_the_file(case, tmp_path):
    with pytest.raises(
        weights.WeightsNotFoundError,
        match=re.escape(
            f"expected the weights '{case.name}' in the calibrax cache at "
            f"'{tmp_path / 'weights' / case.name}', got none. Import the file {case.weights_file}"
        ),
    ) as info:
        load(case.name, home=tmp_path)
    assert str(info.value).endswith(
        f"once with: calibrax weights import {case.name} /path/to/{case.weights_file}"
    )
