"""Parity of calibrax.metric_learning.ContrastiveLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import pytest
from _pml_parity import assert_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M
from pytorch_metric_learning import reducers as R

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (lambda: C.ContrastiveLoss(), lambda: L.ContrastiveLoss()),
    "cosine_margins": (
        lambda: C.ContrastiveLoss(pos_margin=0.8, neg_margin=0.3, distance=C.CosineSimilarity()),
        lambda: L.ContrastiveLoss(pos_margin=0.8, neg_margin=0.3, distance=D.CosineSimilarity()),
    ),
    "mean_reducer_unnormalized": (
        lambda: C.ContrastiveLoss(
            neg_margin=2.5,
            distance=C.LpDistance(normalize_embeddings=False),
            reducer=C.MeanReducer(),
        ),
        lambda: L.ContrastiveLoss(
            neg_margin=2.5,
            distance=D.LpDistance(normalize_embeddings=False),
            reducer=R.MeanReducer(),
        ),
    ),
}
MINED = {
    "semihard_triplets": (
        lambda: C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        lambda: M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_contrastive_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_contrastive_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())
