"""Parity of calibrax.metric_learning.CircleLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import pytest
from _pml_parity import assert_parity
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (lambda: C.CircleLoss(), lambda: L.CircleLoss()),
    "face_setting": (
        lambda: C.CircleLoss(m=0.25, gamma=256),
        lambda: L.CircleLoss(m=0.25, gamma=256),
    ),
}
MINED = {
    "multi_similarity_miner": (lambda: C.MultiSimilarityMiner(), lambda: M.MultiSimilarityMiner()),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_circle_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_circle_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())
