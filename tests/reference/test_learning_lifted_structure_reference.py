"""Parity of calibrax.metric_learning.LiftedStructureLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import pytest
from _pml_parity import assert_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (lambda: C.LiftedStructureLoss(), lambda: L.LiftedStructureLoss()),
    "cosine": (
        lambda: C.LiftedStructureLoss(
            neg_margin=0.2, pos_margin=0.9, distance=C.CosineSimilarity()
        ),
        lambda: L.LiftedStructureLoss(
            neg_margin=0.2, pos_margin=0.9, distance=D.CosineSimilarity()
        ),
    ),
}
MINED = {
    "all_triplets_miner": (
        lambda: C.TripletMarginMiner(margin=0.5),
        lambda: M.TripletMarginMiner(margin=0.5),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_lifted_structure_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_lifted_structure_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())
