"""Parity of calibrax.metric_learning.RankedListLoss with pytorch-metric-learning 2.9 (float64,
1e-6 relative on values and gradients, see _pml_strict_b)."""

import re

import pytest
from _pml_strict_b import assert_loss_parity
from _pml_strict_b import labelled_batches
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import reducers as R

import calibrax.metric_learning as C

CONFIGS = {
    "simpler": (
        lambda: C.RankedListLoss(margin=0.4, Tn=4.0),
        lambda: L.RankedListLoss(margin=0.4, Tn=4.0),
    ),
    "weighted_positives_alpha": (
        lambda: C.RankedListLoss(margin=0.8, Tn=2.0, Tp=3.0, alpha=1.3, imbalance=0.3),
        lambda: L.RankedListLoss(margin=0.8, Tn=2.0, Tp=3.0, alpha=1.3, imbalance=0.3),
    ),
    "unnormalized_sum": (
        lambda: C.RankedListLoss(
            margin=1.0,
            Tn=1.0,
            alpha=3.0,
            distance=C.LpDistance(normalize_embeddings=False),
            reducer=C.SumReducer(),
        ),
        lambda: L.RankedListLoss(
            margin=1.0,
            Tn=1.0,
            alpha=3.0,
            distance=D.LpDistance(normalize_embeddings=False),
            reducer=R.SumReducer(),
        ),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_ranked_list_matches_pml(config):
    ours, theirs = CONFIGS[config]
    for shape in [(14, 6), (9, 3)] if config == "simpler" else [(14, 6)]:
        assert_loss_parity(ours(), theirs(), labelled_batches(*shape, seed=shape[0]))


def test_bad_hyperparameters():
    with pytest.raises(
        ValueError, match=re.escape("expected `imbalance` to be in [0, 1], got 1.5")
    ):
        C.RankedListLoss(margin=0.4, Tn=1.0, imbalance=1.5)
    with pytest.warns(UserWarning, match="Tp or Tn above 5"):
        C.RankedListLoss(margin=0.4, Tn=6.0)
