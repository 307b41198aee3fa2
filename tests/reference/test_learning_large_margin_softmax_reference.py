"""Parity of calibrax.metric_learning.LargeMarginSoftmaxLoss and SphereFaceLoss with
pytorch-metric-learning 2.9: PML's initial ``W`` copied in, values and gradients w.r.t. the
embeddings and ``W`` to 1e-6 relative in float64 (see _pml_strict)."""

import re

import pytest
from _pml_strict import assert_class_weight_parity
from flax import nnx
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

PAIRS = {
    "large_margin_softmax": (C.LargeMarginSoftmaxLoss, L.LargeMarginSoftmaxLoss),
    "sphereface": (C.SphereFaceLoss, L.SphereFaceLoss),
}


def _factories(name, **kwargs):
    ours, theirs = PAIRS[name]
    return (
        lambda n, d: ours(n, d, param_dtype="float64", rngs=nnx.Rngs(0), **kwargs),
        lambda n, d: theirs(num_classes=n, embedding_size=d, **kwargs),
    )


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_defaults_match_pml(name):
    values = assert_class_weight_parity(*_factories(name), "W")
    assert all(v > 0 for v in values.values())


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_margin_scale_and_miner_match_pml(name):
    assert_class_weight_parity(
        *_factories(name, margin=3, scale=2.0),
        "W",
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes"),
    )


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"margin": 0}, ValueError, "expected `margin` to be a positive integer, got 0"),
        ({"margin": 2.5}, ValueError, "expected `margin` to be a positive integer, got 2.5"),
        ({"scale": -1.0}, ValueError, "expected `scale` to be a positive number, got -1.0"),
    ],
)
def test_bad_hyperparameters(kwargs, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        C.LargeMarginSoftmaxLoss(3, 4, rngs=nnx.Rngs(0), **kwargs)
