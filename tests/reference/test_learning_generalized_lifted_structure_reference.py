"""Parity of calibrax.metric_learning.GeneralizedLiftedStructureLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import pytest
from _pml_parity import assert_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (
        lambda: C.GeneralizedLiftedStructureLoss(),
        lambda: L.GeneralizedLiftedStructureLoss(),
    ),
    "margins": (
        lambda: C.GeneralizedLiftedStructureLoss(
            neg_margin=0.5, pos_margin=0.1, distance=C.LpDistance(normalize_embeddings=False)
        ),
        lambda: L.GeneralizedLiftedStructureLoss(
            neg_margin=0.5, pos_margin=0.1, distance=D.LpDistance(normalize_embeddings=False)
        ),
    ),
}
MINED = {
    "pair_margin_miner": (lambda: C.PairMarginMiner(), lambda: M.PairMarginMiner()),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_generalized_lifted_structure_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_generalized_lifted_structure_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())
