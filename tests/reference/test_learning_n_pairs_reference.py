"""Parity of calibrax.metric_learning.NPairsLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import pytest
from _pml_parity import assert_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (lambda: C.NPairsLoss(), lambda: L.NPairsLoss()),
    "lp_distance": (
        lambda: C.NPairsLoss(distance=C.LpDistance()),
        lambda: L.NPairsLoss(distance=D.LpDistance()),
    ),
}
MINED = {
    "pair_margin_miner": (
        lambda: C.PairMarginMiner(pos_margin=0.1, neg_margin=1.0),
        lambda: M.PairMarginMiner(pos_margin=0.1, neg_margin=1.0),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_n_pairs_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_n_pairs_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())
