"""Parity of calibrax.metric_learning.TripletMarginLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import pytest
from _pml_parity import assert_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M
from pytorch_metric_learning import reducers as R

import calibrax.metric_learning as C

CONFIGS = {
    "cosine_threshold": (
        lambda: C.TripletMarginLoss(
            margin=0.3,
            distance=C.CosineSimilarity(),
            reducer=C.ThresholdReducer(low=0.05, high=0.4),
        ),
        lambda: L.TripletMarginLoss(
            margin=0.3,
            distance=D.CosineSimilarity(),
            reducer=R.ThresholdReducer(low=0.05, high=0.4),
        ),
    ),
    "mean_reducer": (
        lambda: C.TripletMarginLoss(margin=0.5, reducer=C.MeanReducer()),
        lambda: L.TripletMarginLoss(margin=0.5, reducer=R.MeanReducer()),
    ),
    "defaults": (lambda: C.TripletMarginLoss(), lambda: L.TripletMarginLoss()),
    "swap_smooth": (
        lambda: C.TripletMarginLoss(margin=0.3, swap=True, smooth_loss=True),
        lambda: L.TripletMarginLoss(margin=0.3, swap=True, smooth_loss=True),
    ),
    "cosine_swap_sum": (
        lambda: C.TripletMarginLoss(
            margin=0.2, swap=True, distance=C.CosineSimilarity(), reducer=C.SumReducer()
        ),
        lambda: L.TripletMarginLoss(
            margin=0.2, swap=True, distance=D.CosineSimilarity(), reducer=R.SumReducer()
        ),
    ),
}
MINED = {
    "batch_hard": (lambda: C.BatchHardMiner(), lambda: M.BatchHardMiner()),
    "hard_triplets": (
        lambda: C.TripletMarginMiner(margin=0.2, type_of_triplets="hard"),
        lambda: M.TripletMarginMiner(margin=0.2, type_of_triplets="hard"),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_triplet_margin_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_triplet_margin_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())
