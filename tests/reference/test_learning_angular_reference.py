"""Parity of calibrax.metric_learning.AngularLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on values and gradients; see _pml_strict)."""

import re

import numpy as np
import pytest
from _pml_parity import ours_value_and_grad_fn
from _pml_parity import pml_value_and_grad
from _pml_strict import assert_close
from _pml_strict import assert_strict_parity
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C
from calibrax.metric_learning.losses.angular import positive_buckets


def test_angular_defaults_match_pml():
    values = assert_strict_parity(C.AngularLoss(), L.AngularLoss())
    # The degenerate batches are exactly 0 on both sides; the others are not.
    assert values["one_class"] == values["all_singletons"] == 0.0
    assert values["mixed"] > 0 and values["one_pair"] > 0


def test_angular_alpha_and_mined_pairs_match_pml():
    assert_strict_parity(
        C.AngularLoss(alpha=25),
        L.AngularLoss(alpha=25),
        names=("mixed",),
    )
    assert_strict_parity(
        C.AngularLoss(),
        L.AngularLoss(),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes"),
    )
    assert_strict_parity(
        C.AngularLoss(),
        L.AngularLoss(),
        our_miner=C.PairMarginMiner(pos_margin=0.6, neg_margin=0.9),
        their_miner=M.PairMarginMiner(pos_margin=0.6, neg_margin=0.9),
        names=("mixed",),
    )


def test_angular_positive_slot_branches():
    # Above 64 samples the positives are gathered into 8, 64 or 72 slots per anchor, picked at
    # run time: one compilation, batches that take each branch.
    assert positive_buckets(72) == (8, 64, 72)
    rng = np.random.default_rng(4)
    emb = 3 * rng.normal(size=(72, 5))
    run = ours_value_and_grad_fn(C.AngularLoss())
    for most in (3, 40, 70):
        lab = np.concatenate([np.zeros(most + 1, int), np.arange(1, 72 - most)])
        theirs = pml_value_and_grad(L.AngularLoss(), emb, lab)
        assert theirs[0] > 0
        assert_close(run(emb, lab), theirs, f"{most} positives")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 90}, "expected `alpha` to be in (0, 90) degrees, got 90"),
        ({"alpha": "40"}, "expected `alpha` to be in (0, 90) degrees, got '40'"),
        (
            {"distance": C.CosineSimilarity()},
            "expected `distance` to be LpDistance(normalize_embeddings=True, p=2, power=1), "
            "got CosineSimilarity(normalize_embeddings=True, p=2, power=1)",
        ),
    ],
)
def test_angular_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        C.AngularLoss(**kwargs)
