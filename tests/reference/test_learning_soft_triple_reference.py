"""Parity of calibrax.metric_learning.SoftTripleLoss with pytorch-metric-learning 2.9: PML's
initial ``fc`` copied in, values and gradients w.r.t. the embeddings and ``fc`` to 1e-6 relative
in float64 (see _pml_strict)."""

import re

import numpy as np
import pytest
from _pml_strict import assert_class_weight_parity
from flax import nnx
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C


def _factories(**kwargs):
    return (
        lambda n, d: C.SoftTripleLoss(n, d, param_dtype="float64", rngs=nnx.Rngs(0), **kwargs),
        lambda n, d: L.SoftTripleLoss(num_classes=n, embedding_size=d, **kwargs),
    )


def test_soft_triple_defaults_match_pml():
    values = assert_class_weight_parity(*_factories(), "fc")
    assert all(v > 0 for v in values.values())


def test_soft_triple_hyperparameters_and_miner_match_pml():
    assert_class_weight_parity(
        *_factories(centers_per_class=3, la=10.0, gamma=0.5, margin=0.2),
        "fc",
        our_miner=C.PairMarginMiner(pos_margin=0.6, neg_margin=0.9),
        their_miner=M.PairMarginMiner(pos_margin=0.6, neg_margin=0.9),
        names=("mixed", "one_class"),
    )


def test_soft_triple_init_is_pml_distribution():
    loss = C.SoftTripleLoss(50, 64, centers_per_class=10, rngs=nnx.Rngs(0))
    fc = np.asarray(loss.fc[...])
    bound = 1 / np.sqrt(500)
    assert fc.shape == (64, 500) and np.abs(fc).max() <= bound
    # Uniform on [-b, b]: standard deviation b / sqrt(3) (32000 draws: within 2%).
    np.testing.assert_allclose(fc.std(), bound / np.sqrt(3), rtol=2e-2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"centers_per_class": 0}, "expected `centers_per_class` to be a positive integer, got 0"),
        ({"la": 0.0}, "expected `la` to be a positive number, got 0.0"),
        ({"gamma": -0.1}, "expected `gamma` to be a positive number, got -0.1"),
        ({"margin": -0.5}, "expected `margin` to be >= 0, got -0.5"),
    ],
)
def test_soft_triple_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        C.SoftTripleLoss(3, 4, rngs=nnx.Rngs(0), **kwargs)
