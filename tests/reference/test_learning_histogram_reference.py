"""Parity of calibrax.metric_learning.HistogramLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on values and gradients; see _pml_strict)."""

import re

import numpy as np
import pytest
from _pml_parity import ours_value_and_grad_fn
from _pml_parity import pml_value_and_grad
from _pml_strict import ALL_BATCHES
from _pml_strict import assert_strict_parity
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

# PML indexes past the end of its histogram for a similarity of exactly 1 (the duplicates batch):
# it raises there, so that batch is compared in test_histogram_duplicate_embeddings below.
NAMES = (
    "mixed",
    "one_class",
    "all_singletons",
    "two_classes",
    "one_pair",
    "large_33x16",
)


def test_histogram_defaults_match_pml():
    values = assert_strict_parity(C.HistogramLoss(), L.HistogramLoss(), names=NAMES)
    assert values["one_class"] == values["all_singletons"] == 0.0
    assert values["mixed"] > 0


def test_histogram_bins_and_miners_match_pml():
    assert_strict_parity(
        C.HistogramLoss(n_bins=7),
        L.HistogramLoss(n_bins=7),
        our_miner=C.PairMarginMiner(pos_margin=0.6, neg_margin=0.9),
        their_miner=M.PairMarginMiner(pos_margin=0.6, neg_margin=0.9),
        names=("mixed", "two_classes"),
    )
    assert_strict_parity(
        C.HistogramLoss(delta=0.25),
        L.HistogramLoss(delta=0.25),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes"),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bins": 0}, "expected `n_bins` to be a positive integer, got 0"),
        ({"delta": -0.1}, "expected `delta` to be a positive number, got -0.1"),
        (
            {"n_bins": 10, "delta": 0.1},
            "expected `delta` to equal 2 / n_bins = 0.2, got delta=0.1 and n_bins=10",
        ),
    ],
)
def test_histogram_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        C.HistogramLoss(**kwargs)


def test_histogram_duplicate_embeddings():
    # Similarity exactly 1 sits on the last node; PML scatters its zero weight one node past the
    # end and raises. Ours drops that zero and stays a probability with finite gradients.
    emb, lab = ALL_BATCHES["duplicates"]
    with pytest.raises(RuntimeError, match="index"):
        pml_value_and_grad(L.HistogramLoss(), emb, lab)
    value, grad = ours_value_and_grad_fn(C.HistogramLoss())(emb, lab)
    assert 0 < value < 1 and np.all(np.isfinite(grad))
