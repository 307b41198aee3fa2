"""Parity of calibrax.metric_learning.MultiSimilarityLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import pytest
from _pml_parity import assert_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (lambda: C.MultiSimilarityLoss(), lambda: L.MultiSimilarityLoss()),
    "lp_distance": (
        lambda: C.MultiSimilarityLoss(alpha=1, beta=10, base=0.3, distance=C.LpDistance()),
        lambda: L.MultiSimilarityLoss(alpha=1, beta=10, base=0.3, distance=D.LpDistance()),
    ),
}
MINED = {
    "multi_similarity_miner": (
        lambda: C.MultiSimilarityMiner(epsilon=0.2),
        lambda: M.MultiSimilarityMiner(epsilon=0.2),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_multi_similarity_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_multi_similarity_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())
