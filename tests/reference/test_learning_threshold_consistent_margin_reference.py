"""Parity of calibrax.metric_learning.ThresholdConsistentMarginLoss with pytorch-metric-learning
2.9 (float64, 1e-6 relative on values and gradients, see _pml_strict_b)."""

import numpy as np
import pytest
import torch
from _pml_strict_b import RTOL
from _pml_strict_b import assert_close
from _pml_strict_b import assert_loss_parity
from _pml_strict_b import labelled_batches
from _pml_strict_b import ours_value_and_grad
from _pml_strict_b import pml_value_and_grad
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (
        lambda: C.ThresholdConsistentMarginLoss(),
        lambda: L.ThresholdConsistentMarginLoss(),
    ),
    # Margins every pair violates, and none does (exactly 0).
    "wide": (
        lambda: C.ThresholdConsistentMarginLoss(
            lambda_plus=0.3, lambda_minus=2.0, margin_plus=1.5, margin_minus=-1.5
        ),
        lambda: L.ThresholdConsistentMarginLoss(
            lambda_plus=0.3, lambda_minus=2.0, margin_plus=1.5, margin_minus=-1.5
        ),
    ),
    "nothing_violates": (
        lambda: C.ThresholdConsistentMarginLoss(margin_plus=-1.5, margin_minus=1.5),
        lambda: L.ThresholdConsistentMarginLoss(margin_plus=-1.5, margin_minus=1.5),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_tcm_matches_pml(config):
    ours, theirs = CONFIGS[config]
    for shape in [(14, 6), (9, 3)] if config == "defaults" else [(14, 6)]:
        assert_loss_parity(ours(), theirs(), labelled_batches(*shape, seed=shape[0] + 2))


def test_tcm_with_miner_matches_pml():
    our_miner = C.TripletMarginMiner(margin=0.3, type_of_triplets="all")
    their_miner = M.TripletMarginMiner(margin=0.3, type_of_triplets="all")
    ours, theirs = C.ThresholdConsistentMarginLoss(), L.ThresholdConsistentMarginLoss()
    assert_loss_parity(
        lambda e, l: ours(e, l, our_miner(e, l)),
        lambda e, l: theirs(e, l, their_miner(e, l)),
        labelled_batches(14, 6, seed=8),
    )


def test_tcm_with_reference_set_matches_pml_on_the_stacked_batch():
    # PML indexes the batch with reference indices when given ref_emb (see the docstring). The
    # same pairs are PML's loss on the stacked batch [queries; references] with the
    # query-reference pairs as the indices tuple: compare values and both gradients with that.
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(6, 4)), rng.normal(size=(9, 4))
    lq, lr = rng.integers(0, 3, 6), rng.integers(0, 3, 9)
    kwargs = {"margin_plus": 0.4, "margin_minus": -0.2}
    ours = C.ThresholdConsistentMarginLoss(**kwargs)
    run = ours_value_and_grad(
        lambda a, b, la, lb: ours(a, la, ref_emb=b, ref_labels=lb), argnums=(0, 1)
    )
    value, (grad_q, grad_r) = run(q, r, lq, lr)
    same = lq[:, None] == lr[None, :]
    a1, p = np.nonzero(same)
    a2, n = np.nonzero(~same)
    pairs = tuple(torch.tensor(x) for x in (a1, p + 6, a2, n + 6))
    theirs = L.ThresholdConsistentMarginLoss(**kwargs)
    stacked = np.concatenate([q, r])
    want, (grad,) = pml_value_and_grad(
        lambda e, l: theirs(e, l, pairs), stacked, np.concatenate([lq, lr])
    )
    np.testing.assert_allclose(value, want, rtol=RTOL)
    assert_close(grad_q, grad[:6], "queries")
    assert_close(grad_r, grad[6:], "references")
