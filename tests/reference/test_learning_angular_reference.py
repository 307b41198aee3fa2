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


def test_angular_defaults_match_pml():
    values = assert_strict_parity(C.AngularLoss(), L.AngularLoss())
    # The degenerate batches are exactly 0 on both sides; the others are not.
    assert values["one_class"] == values["all_singletons"] == 0.0
    assert values["mixed"] > 0 and values["one_pair"] > 0


def test_angular_alpha_with_miner_matches_pml():
    # Mined triplets become pairs counted once per triplet, as PML's convert_to_pairs.
    assert_strict_parity(
        C.AngularLoss(alpha=25),
        L.AngularLoss(alpha=25),
        our_miner=C.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        their_miner=M.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        names=("mixed", "two_classes"),
    )


def test_angular_large_norms_match_pml():
    # Raw embeddings of norm ~1e3: terms of e^(thousands); each pair takes its own shift, as
    # PML's logsumexp, so the values stay PML's.
    rng = np.random.default_rng(4)
    emb = 1000 * rng.normal(size=(12, 5))
    lab = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5])
    run = ours_value_and_grad_fn(C.AngularLoss())
    assert_close(run(emb, lab), pml_value_and_grad(L.AngularLoss(), emb, lab), "large norms")


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
