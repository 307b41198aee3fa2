"""Parity of calibrax.metric_learning.PNPLoss (every variant) with pytorch-metric-learning 2.9
(float64, 1e-6 relative on values and gradients, see _pml_strict_b)."""

import re

import pytest
from _pml_strict_b import assert_loss_parity
from _pml_strict_b import labelled_batches
from pytorch_metric_learning import losses as L

import calibrax.metric_learning as C

VARIANTS = {
    "O": {},
    "Ds": {"anneal": 0.05},
    "Dq": {"alpha": 2.0},
    "Iu": {"anneal": 0.2},
    "Ib": {"b": 3.0, "anneal": 0.1},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pnp_matches_pml(variant):
    kwargs = {"variant": variant, **VARIANTS[variant]}
    cases = labelled_batches(14, 6, seed=len(variant))
    if variant == "O":
        cases.update({f"{k}/9x4": v for k, v in labelled_batches(9, 4, seed=3).items()})
    assert_loss_parity(C.PNPLoss(**kwargs), L.PNPLoss(**kwargs), cases)


def test_bad_variant():
    with pytest.raises(
        ValueError,
        match=re.escape("expected `variant` to be one of 'Ds', 'Dq', 'Iu', 'Ib', 'O', got 'X'"),
    ):
        C.PNPLoss(variant="X")
