"""Parity of calibrax.metric_learning.TupletMarginLoss with pytorch-metric-learning 2.9 (float64,
1e-6 relative on values and gradients, see _pml_strict_b)."""

import re

import pytest
from _pml_strict_b import assert_loss_parity
from _pml_strict_b import labelled_batches
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M
from pytorch_metric_learning import reducers as R

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (lambda: C.TupletMarginLoss(), lambda: L.TupletMarginLoss()),
    "small_scale_sum": (
        lambda: C.TupletMarginLoss(margin=20.0, scale=8.0, reducer=C.SumReducer()),
        lambda: L.TupletMarginLoss(margin=20.0, scale=8.0, reducer=R.SumReducer()),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_tuplet_margin_matches_pml(config):
    ours, theirs = CONFIGS[config]
    shapes = [(14, 6), (23, 9)] if config == "defaults" else [(14, 6)]
    for shape in shapes:
        assert_loss_parity(ours(), theirs(), labelled_batches(*shape, seed=shape[0] + 1))


MINERS = {
    # Triplets turned into pairs count each pair once per triplet (duplicates in the negatives'
    # sum); pair miners select each pair at most once.
    "triplets": (
        lambda: C.TripletMarginMiner(margin=0.5, type_of_triplets="all"),
        lambda: M.TripletMarginMiner(margin=0.5, type_of_triplets="all"),
    ),
    "pairs": (
        lambda: C.PairMarginMiner(pos_margin=0.5, neg_margin=0.5),
        lambda: M.PairMarginMiner(pos_margin=0.5, neg_margin=0.5),
    ),
}


@pytest.mark.parametrize("miner", sorted(MINERS))
def test_tuplet_margin_with_miner_matches_pml(miner):
    our_miner, their_miner = (m() for m in MINERS[miner])
    ours, theirs = C.TupletMarginLoss(scale=16.0), L.TupletMarginLoss(scale=16.0)
    assert_loss_parity(
        lambda e, l: ours(e, l, our_miner(e, l)),
        lambda e, l: theirs(e, l, their_miner(e, l)),
        labelled_batches(14, 6, seed=5),
    )


def test_rejects_other_distances():
    with pytest.raises(
        ValueError, match=re.escape("expected `distance` to be a CosineSimilarity, got LpDistance")
    ):
        C.TupletMarginLoss(distance=C.LpDistance())
