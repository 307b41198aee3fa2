"""Parity of calibrax.metric_learning.IntraPairVarianceLoss with pytorch-metric-learning 2.9
(float64, 1e-6 relative on values and gradients; see _pml_strict)."""

from _pml_strict import assert_strict_parity
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C


def test_intra_pair_variance_defaults_match_pml():
    values = assert_strict_parity(C.IntraPairVarianceLoss(), L.IntraPairVarianceLoss())
    assert values["all_singletons"] > 0  # negatives alone still give a loss
    assert values["mixed"] > 0


def test_intra_pair_variance_distance_eps_and_miner_match_pml():
    assert_strict_parity(
        C.IntraPairVarianceLoss(pos_eps=0.05, neg_eps=0.2, distance=C.LpDistance()),
        L.IntraPairVarianceLoss(pos_eps=0.05, neg_eps=0.2, distance=D.LpDistance()),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes", "duplicates"),
    )
