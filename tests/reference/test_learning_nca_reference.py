"""Parity of calibrax.metric_learning.NCALoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on values and gradients; see _pml_strict)."""

import re

import numpy as np
import pytest
from _pml_parity import ours_value_and_grad_fn
from _pml_parity import pml_value_and_grad
from _pml_strict import ALL_BATCHES
from _pml_strict import assert_strict_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C


def test_nca_defaults_match_pml():
    names = tuple(n for n in ALL_BATCHES if n != "all_singletons")
    values = assert_strict_parity(C.NCALoss(), L.NCALoss(), names=names)
    assert values["mixed"] > 0


def test_nca_no_same_class_neighbour_is_zero_not_nan():
    # No sample has a same-class neighbour: PML 2.9 takes the mean of an empty tensor (NaN);
    # calibrax's reducers give exactly 0 with zero gradients when nothing is valid.
    emb, lab = ALL_BATCHES["all_singletons"]
    assert np.isnan(pml_value_and_grad(L.NCALoss(), emb, lab)[0])
    value, grad = ours_value_and_grad_fn(C.NCALoss())(emb, lab)
    assert value == 0.0 and np.all(grad == 0)


def test_nca_scale_distance_and_miners_match_pml():
    # Miner weights: each sample's count in the mined tuples over the largest count.
    assert_strict_parity(
        C.NCALoss(softmax_scale=8.0, distance=C.CosineSimilarity()),
        L.NCALoss(softmax_scale=8.0, distance=D.CosineSimilarity()),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes"),
    )
    assert_strict_parity(
        C.NCALoss(),
        L.NCALoss(),
        our_miner=C.PairMarginMiner(pos_margin=0.6, neg_margin=0.9),
        their_miner=M.PairMarginMiner(pos_margin=0.6, neg_margin=0.9),
        names=("mixed", "duplicates"),
    )


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), True])
def test_nca_bad_softmax_scale(scale):
    with pytest.raises(
        ValueError,
        match=re.escape(f"expected `softmax_scale` to be a positive number, got {scale!r}"),
    ):
        C.NCALoss(softmax_scale=scale)
