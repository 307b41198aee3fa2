"""FID, KID and IS against torchmetrics (torch 2.13 CPU), on the same features and images."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.metrics import FrechetDistance
from calibrax.metrics import InceptionScore
from calibrax.metrics import KernelDistance
from calibrax.metrics.random_backbone import RandomConvBackbone

torch = pytest.importorskip("torch")
tm_fid = pytest.importorskip("torchmetrics.image.fid")
tm_kid = pytest.importorskip("torchmetrics.image.kid")
tm_is = pytest.importorskip("torchmetrics.image.inception")

# torchmetrics warns that KID/IS buffer features, and about std() of a single split.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Metric `.*` will save all extracted features"),
    pytest.mark.filterwarnings("ignore:std.*degrees of freedom"),
]

BACKBONE = RandomConvBackbone(num_features=10, channels=8, rngs=nnx.Rngs(3))


class TorchRandomConv(torch.nn.Module):
    """RandomConvBackbone in torch (NCHW), weights copied from the JAX module."""

    num_features = 10

    def __init__(self):
        super().__init__()
        conv = np.asarray(BACKBONE.conv[...])  # HWIO
        self.weight = torch.tensor(conv.transpose(3, 2, 0, 1).copy())
        self.bias = torch.tensor(np.asarray(BACKBONE.bias[...]))
        self.proj = torch.tensor(np.asarray(BACKBONE.proj[...]))

    def forward(self, x):
        y = torch.nn.functional.conv2d(x, self.weight, self.bias, stride=2, padding=1)
        return torch.relu(y).mean(dim=(2, 3)) @ self.proj


class TorchIdentity(torch.nn.Module):
    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


def _images(n, seed):
    return np.random.default_rng(seed).random((n, 16, 16, 3))  # float64 in [0, 1]


def test_fid_matches_torchmetrics_with_a_custom_feature_module():
    real, fake = _images(30, 0), _images(26, 1) ** 1.5
    ref = tm_fid.FrechetInceptionDistance(feature=TorchRandomConv(), normalize=True)
    ref.update(torch.tensor(real.transpose(0, 3, 1, 2)), real=True)
    ref.update(torch.tensor(fake.transpose(0, 3, 1, 2)), real=False)
    ours = FrechetDistance(backbone=BACKBONE, normalize=True)
    ours.update(images=jnp.asarray(real[:17]), real=True)
    ours.update(images=jnp.asarray(real[17:]), real=True)
    ours.update(images=jnp.asarray(fake), real=False)
    # float64 features on both sides (torchmetrics: eigvals of Σ1Σ2; ours: symmetric eigh).
    # The bound is the acceptance 1e-5 relative; observed agreement is ~1e-10.
    np.testing.assert_allclose(
        float(ours.compute()["frechet_distance"]), float(ref.compute()), rtol=1e-5
    )


def test_kid_matches_torchmetrics_when_the_subset_is_a_permutation():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(40, 16))
    fake = rng.normal(size=(40, 16)) * 1.1 + 0.2
    ref = tm_kid.KernelInceptionDistance(
        feature=TorchIdentity(16), subsets=1, subset_size=40, normalize=False
    )
    ref.update(torch.tensor(real), real=True)
    ref.update(torch.tensor(fake), real=False)
    ref_mean, ref_std = (float(v) for v in ref.compute())
    ours = KernelDistance(
        backbone=None, num_features=16, max_samples=64, subsets=1, subset_size=40, seed=5
    )
    ours.update(features=jnp.asarray(real), real=True)
    ours.update(features=jnp.asarray(fake), real=False)
    out = ours.compute()
    # One subset holding every sample: the draw is a permutation, the unbiased MMD² does not
    # depend on it, so both give the same float64 number up to summation order (1e-6 bound).
    np.testing.assert_allclose(float(out["kid_mean"]), ref_mean, rtol=1e-6)
    assert float(out["kid_std"]) == 0.0 and ref_std == 0.0


def test_inception_score_matches_torchmetrics_with_one_split():
    logits = np.random.default_rng(3).normal(size=(50, 9)) * 2
    ref = tm_is.InceptionScore(feature=TorchIdentity(9), splits=1)
    ref.update(torch.tensor(logits))
    ours = InceptionScore(backbone=None, num_classes=9, max_samples=64, splits=1)
    ours.update(logits=jnp.asarray(logits))
    # One split: torchmetrics' shuffle does not change the score; float64 on both sides.
    np.testing.assert_allclose(
        float(ours.compute()["inception_score_mean"]), float(ref.compute()[0]), rtol=1e-6
    )
