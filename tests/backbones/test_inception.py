"""InceptionV3-FID against pytorch-fid, through golden outputs from seeded weights.

``scripts/make_golden_backbones.py`` built pytorch-fid's FID InceptionV3 (torchvision's
``Inception3`` with pytorch-fid's FID blocks), filled it with the seeded weights of
``tests/fixtures/golden/seeded_weights.py`` and stored what pytorch-fid's ``InceptionV3`` wrapper
returns for blocks 0-3 (``resize_input=True, normalize_input=True``) and the 1008 logits. Here the
same weights go through our state-dict mapping, so a match tests the architecture (including the
TF-style pooling patches), the resizing and the key mapping together.
"""

import importlib.util
import pathlib
import re

import jax
import numpy as np
import pytest
from flax import nnx

from calibrax.backbones import load
from calibrax.backbones._mapping import StateDictMismatchError
from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones.inception import InceptionV3FID
from calibrax.core import FrozenWeight
from calibrax.io.weights import WeightsNotFoundError

_PATH = pathlib.Path(__file__).parents[1] / "fixtures" / "golden" / "seeded_weights.py"
_SPEC = importlib.util.spec_from_file_location("seeded_weights", _PATH)
seeded_weights = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(seeded_weights)


@pytest.fixture(scope="module")
def golden():
    arrays, state_dict = seeded_weights.golden("inception_fid")
    model = InceptionV3FID()
    load_state_dict(model, state_dict)
    return arrays, state_dict, model


@pytest.fixture(scope="module")
def forward(golden):
    """One compilation of the forward pass (~15 s on CPU): only slow tests use it."""
    arrays, _, model = golden
    out = model.forward(arrays["images"])
    # __call__ and logits() reuse the same compiled program (same graph, method and shapes).
    return out, model(arrays["images"]), model.logits(arrays["images"])


@pytest.mark.slow
def test_outputs_match_pytorch_fid(golden, forward):
    arrays = golden[0]
    out = forward[0]
    expected = {
        "logits": arrays["logits"],
        "features": arrays["pool_2048"],
        "features_768": arrays["pool_768"],
        "features_192": arrays["pool_192"],
        "features_64": arrays["pool_64"],
    }
    # __call__ and logits() are the tier-1 interface's views of the same forward pass.
    np.testing.assert_array_equal(forward[1], out.features)
    np.testing.assert_array_equal(forward[2], out.logits)
    for field, want in expected.items():
        got = getattr(out, field)
        assert got.dtype == np.float32
        # float32 on both sides, ~95 layers deep: measured differences are below 2e-6 of the
        # largest value; 1e-4 relative (with that scale as the floor for near-zero logits) still
        # fails on any wrong branch order, pooling mode or mis-mapped tensor.
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()), err_msg=field
        )


@pytest.mark.slow
def test_block_maps_match_pytorch_fid(golden):
    arrays, _, model = golden
    block0, _, block2, block3 = model.blocks(arrays["images"])
    assert block0.shape == (2, 73, 73, 64)
    assert block2.shape == (2, 17, 17, 768)
    assert block3.shape == (2, 1, 1, 2048)
    # Raw values at both corners, where padding and pooling boundaries matter most.
    for name, got in (
        ("block0_first", block0[:, :4, :4]),
        ("block0_last", block0[:, -4:, -4:]),
        ("block2_first", block2[:, :4, :4]),
    ):
        want = arrays[name]
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()), err_msg=name
        )


@pytest.mark.parametrize("tag", ["up", "down", "same"])
def test_resize_matches_torch_interpolate(golden, tag):
    # The module resizes with jax.image.resize(bilinear, antialias=False), claimed equal to torch's
    # F.interpolate(bilinear, align_corners=False): checked here up, down and at the same size.
    arrays = golden[0]
    want = arrays[f"resize_{tag}"]
    x = arrays["resize_input"]
    got = jax.image.resize(x, (2, *want.shape[1:3], 3), method="bilinear", antialias=False)
    assert got.dtype == np.float32
    # Two-tap float32 interpolation: torch and jax round differently at ~1 ulp (6e-8 x 2).
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_interface(golden):
    model = golden[2]
    assert model.input_size == (299, 299)
    assert model.num_features == 2048
    assert model.num_classes == 1008


def test_weights_are_frozen(golden):
    model = golden[2]
    assert nnx.state(model, nnx.Param) == nnx.State({})
    n_frozen = sum(np.size(v) for v in jax.tree.leaves(nnx.state(model, FrozenWeight)))
    n_torch = sum(np.size(v) for k, v in golden[1].items() if not k.endswith("num_batches_tracked"))
    assert n_frozen == n_torch


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (
            np.zeros((2, 32, 32, 1), np.float32),
            ValueError,
            "expected `images` to have 3 channels (last axis), got shape (2, 32, 32, 1)",
        ),
        (
            np.zeros((32, 32, 3), np.float32),
            ValueError,
            "expected `images` to have 4 dims (batch, height, width, channels), got shape "
            "(32, 32, 3)",
        ),
        (
            np.zeros((0, 32, 32, 3), np.float32),
            ValueError,
            "expected `images` to be non-empty, got shape (0, 32, 32, 3)",
        ),
        (
            np.zeros((1, 0, 32, 3), np.float32),
            ValueError,
            "expected `images` to have height and width at least 1, got shape (1, 0, 32, 3)",
        ),
        (
            np.zeros((1, 8, 8, 3), np.uint8),
            TypeError,
            "expected `images` to have a floating dtype, got uint8",
        ),
        (
            np.full((1, 8, 8, 3), 255.0, np.float32),
            ValueError,
            "expected `images` to be in [0, 1] (RGB scaled to [0, 1]), got values in [255, 255]",
        ),
        (
            np.full((1, 8, 8, 3), np.nan, np.float32),
            ValueError,
            "expected `images` to be finite, got 192 NaN and 0 Inf values",
        ),
    ],
)
@pytest.mark.parametrize("method", ["__call__", "forward", "blocks", "logits"])
def test_bad_images(golden, images, error, message, method):
    with pytest.raises(error, match=re.escape(message)):
        getattr(golden[2], method)(images)


def test_torchvision_inception_weights_are_refused(golden):
    # torchvision's own Inception3 weights have 1000 classes: the mapper names the mismatch.
    bad = dict(golden[1])
    bad["fc.weight"] = np.zeros((1000, 2048), np.float32)
    bad["fc.bias"] = np.zeros((1000,), np.float32)
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected `fc.bias` to have shape (1008,) for InceptionV3FID, got shape (1000,)"
        ),
    ):
        load_state_dict(InceptionV3FID(), bad)


def test_missing_key_in_state_dict(golden):
    bad = {k: v for k, v in golden[1].items() if k != "Mixed_7c.branch_pool.bn.running_var"}
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected the state dict to have key 'Mixed_7c.branch_pool.bn.running_var' needed by "
            "InceptionV3FID (shape (192,)), got no such key"
        ),
    ):
        load_state_dict(InceptionV3FID(), bad)


def test_load_without_weights_names_the_file(tmp_path):
    with pytest.raises(
        WeightsNotFoundError,
        match=re.escape(
            f"expected the weights 'inception-v3-fid' in the calibrax cache at "
            f"'{tmp_path / 'weights' / 'inception-v3-fid'}', got none. Import the file "
            "pt_inception-2015-12-05-6726825d.pth"
        ),
    ) as info:
        load("inception-v3-fid", home=tmp_path)
    assert str(info.value).endswith(
        "once with: calibrax weights import inception-v3-fid "
        "/path/to/pt_inception-2015-12-05-6726825d.pth"
    )
