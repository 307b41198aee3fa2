"""DISTS against the reference ``dists-pytorch`` package, through golden outputs.

``scripts/make_golden_dists.py`` ran ``DISTS_pytorch.DISTS`` with its shipped alpha/beta and a
torchvision VGG16 filled from the seeded weights of ``tests/fixtures/golden/seeded_weights.py``
(seed 3), on real photos from ``skimage.data``, in float32 and in float64. Here our VGG16 gets the
same weights through our state-dict mapping and our DISTS reads the same shipped ``weights.pt``
through the safe reader (without torch).
"""

import hashlib
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones._zoo import get_spec
from calibrax.backbones.vgg import VGG16
from calibrax.learned import DISTS
from calibrax.learned import load_official_dists_weights

GOLDEN = pathlib.Path(__file__).parents[1] / "fixtures" / "golden"
_SPEC = importlib.util.spec_from_file_location("seeded_weights", GOLDEN / "seeded_weights.py")
seeded_weights = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(seeded_weights)


@pytest.fixture(scope="module")
def case():
    if importlib.util.find_spec("DISTS_pytorch") is None:
        pytest.skip("dists-pytorch (its shipped weights) is not installed")
    _, state_dict = seeded_weights.golden("vgg16", zeros_for=("classifier.",))
    trunk = VGG16()
    load_state_dict(trunk, get_spec("vgg16").convert(state_dict))
    with np.load(GOLDEN / "dists.npz") as data:
        golden = dict(data)
    return trunk, golden


def test_shipped_weights_are_the_ones_the_fixture_used(case):
    _, golden = case
    origin = pathlib.Path(importlib.util.find_spec("DISTS_pytorch").origin).parent
    digest = hashlib.sha256((origin / "weights.pt").read_bytes()).hexdigest()
    assert digest == str(golden["weights_sha256"])
    alpha, beta = load_official_dists_weights()
    assert alpha.shape == beta.shape == (1475,)
    assert alpha.min() > 0.0 and beta.min() == 0.0  # their beta was clamped at 0


def test_scores_float32(case):
    trunk, golden = case
    model = DISTS(trunk=trunk)
    got = np.asarray(model(golden["x"], golden["y"]))
    # Both sides float32, convolutions summed in different orders (oneDNN vs XLA), and the score
    # is 1 minus a sum near 1: measured 3.6e-6 relative at worst, held to 1e-5.
    np.testing.assert_allclose(got, golden["score"], rtol=1e-5)


def test_scores_and_gradients_float64(case):
    # In float64 both sides are exact up to summation order: scores agree to 1e-12 and gradients
    # with respect to the images to 1e-10 of their largest value (measured 3e-15 and 1.2e-13).
    # Alpha and beta are float32 parameters, so their gradients come back as float32:
    # 1e-6 of the largest value (measured 3.4e-8).
    trunk, golden = case
    with jax.enable_x64(True):
        model = DISTS(trunk=trunk, trainable=True)
        x = jnp.asarray(golden["x"], jnp.float64)
        y = jnp.asarray(golden["y"], jnp.float64)

        @nnx.jit
        def run(m, a, b):
            grad_x = jax.grad(lambda a: jnp.sum(m(a, b)))(a)
            return m(a, b), grad_x, nnx.grad(lambda m: jnp.sum(m(a, b)))(m)

        score, grad_x, grads = run(model, x, y)
        np.testing.assert_allclose(np.asarray(score), golden["score_f64"], rtol=1e-12)
        scale = np.abs(golden["grad_x"]).max()
        np.testing.assert_allclose(
            np.asarray(grad_x), golden["grad_x"], rtol=1e-10, atol=1e-10 * scale
        )
        for name in ("alpha", "beta"):
            want = golden[f"grad_{name}"]
            got = np.asarray(getattr(grads.heads, name)[...])
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
