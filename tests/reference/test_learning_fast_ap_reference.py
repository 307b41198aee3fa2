"""Parity of calibrax.metric_learning.FastAPLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on values and gradients; see _pml_strict)."""

import re

import pytest
from _pml_strict import assert_strict_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C


def test_fast_ap_defaults_match_pml():
    values = assert_strict_parity(C.FastAPLoss(), L.FastAPLoss())
    assert values["all_singletons"] == 0.0
    assert values["mixed"] > 0


def test_fast_ap_bins_power_and_miner_match_pml():
    assert_strict_parity(
        C.FastAPLoss(num_bins=4, distance=C.LpDistance()),
        L.FastAPLoss(num_bins=4, distance=D.LpDistance()),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes"),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_bins": 0}, "expected `num_bins` to be a positive integer, got 0"),
        (
            {"distance": C.CosineSimilarity()},
            "expected `distance` to be LpDistance(normalize_embeddings=True, p=2, power=...), "
            "got CosineSimilarity(",
        ),
    ],
)
def test_fast_ap_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        C.FastAPLoss(**kwargs)
