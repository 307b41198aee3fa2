"""LPIPS against the reference ``lpips`` package, through golden outputs.

``scripts/make_golden_lpips.py`` ran ``lpips.LPIPS`` (v0.1 heads as packaged) with trunks filled
from the seeded weights of ``tests/fixtures/golden/seeded_weights.py``. Here our trunks get the same
weights through our state-dict mapping, our LPIPS loads the same packaged heads through the safe
reader, and distances, per-layer values, spatial maps and the unweighted baseline must agree.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones._zoo import get_spec
from calibrax.backbones.alexnet import AlexNet
from calibrax.backbones.squeezenet import SqueezeNet1_1
from calibrax.backbones.vgg import VGG16
from calibrax.learned import LPIPS

GOLDEN = pathlib.Path(__file__).parents[1] / "fixtures" / "golden"
_SPEC = importlib.util.spec_from_file_location("seeded_weights", GOLDEN / "seeded_weights.py")
seeded_weights = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(seeded_weights)

TRUNKS = {
    "alex": (AlexNet, "alexnet"),
    "vgg": (VGG16, "vgg16"),
    "squeeze": (SqueezeNet1_1, "squeezenet1_1"),
}
# Both sides are float32 networks whose convolutions sum in different orders (oneDNN vs XLA):
# trunk taps differ at ~1e-6 relative, which after normalisation and squaring stays below 1e-5.
RTOL = 1e-5


@pytest.fixture(scope="module", params=list(TRUNKS))
def case(request):
    net = request.param
    cls, fixture = TRUNKS[net]
    _, state_dict = seeded_weights.golden(fixture, zeros_for=("classifier.",))
    trunk = cls()
    load_state_dict(trunk, get_spec(fixture).convert(state_dict))
    with np.load(GOLDEN / f"lpips_{net}.npz") as data:
        golden = dict(data)
    return net, trunk, golden


def test_distances_and_per_layer_values(case):
    net, trunk, golden = case
    model = LPIPS(net=net, trunk=trunk)
    d, layers = model(golden["x"], golden["y"], per_layer=True)
    np.testing.assert_allclose(np.asarray(d), golden["distance"], rtol=RTOL)
    np.testing.assert_allclose(
        np.stack([np.asarray(v) for v in layers]), golden["distance_layers"], rtol=RTOL
    )


def test_spatial_maps(case):
    net, trunk, golden = case
    model = LPIPS(net=net, trunk=trunk, spatial=True)
    d, layers = model(golden["x"], golden["y"], per_layer=True)
    # Maps hold many small values: relative 1e-5 with an absolute floor at 1e-5 of the map's scale.
    atol = 1e-5 * float(np.abs(golden["spatial"]).max())
    np.testing.assert_allclose(np.asarray(d), golden["spatial"], rtol=RTOL, atol=atol)
    np.testing.assert_allclose(
        np.stack([np.asarray(v) for v in layers]), golden["spatial_layers"], rtol=RTOL, atol=atol
    )


def test_unweighted_baseline(case):
    net, trunk, golden = case
    model = LPIPS(net=net, trunk=trunk, lpips=False)
    np.testing.assert_allclose(
        np.asarray(model(golden["x"], golden["y"])), golden["baseline"], rtol=RTOL
    )


def test_first_release_v0_0(case):
    # The reference's version="0.0": the packaged v0.0 heads, and the [-1, 1] images fed to the
    # trunk without the ImageNet shift and scale. Same seeded trunks and images as above.
    net, trunk, golden = case
    with np.load(GOLDEN / f"lpips_{net}_v0.0.npz") as data:
        first = dict(data)
    model = LPIPS(net=net, trunk=trunk, version="0.0")
    d, layers = model(golden["x"], golden["y"], per_layer=True)
    np.testing.assert_allclose(np.asarray(d), first["distance"], rtol=RTOL)
    np.testing.assert_allclose(
        np.stack([np.asarray(v) for v in layers]), first["distance_layers"], rtol=RTOL
    )
    # Not the v0.1 numbers by another name: heads and input scaling both differ.
    assert np.all(np.abs(first["distance"] - golden["distance"]) > 1e-3)
