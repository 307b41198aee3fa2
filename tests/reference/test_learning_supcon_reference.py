"""Parity of calibrax.metric_learning.SupConLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import pytest
from _pml_parity import assert_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (lambda: C.SupConLoss(), lambda: L.SupConLoss()),
    "lp_squared": (
        lambda: C.SupConLoss(temperature=0.3, distance=C.LpDistance(power=2)),
        lambda: L.SupConLoss(temperature=0.3, distance=D.LpDistance(power=2)),
    ),
}
MINED = {
    "pair_margin_miner": (lambda: C.PairMarginMiner(), lambda: M.PairMarginMiner()),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_supcon_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_supcon_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())
