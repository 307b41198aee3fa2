"""Parity of calibrax.metric_learning.MarginLoss with pytorch-metric-learning 2.9 (float64, see
_pml_parity for the tolerances and why float64)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_parity import BATCHES
from _pml_parity import GRAD_ATOL
from _pml_parity import GRAD_RTOL
from _pml_parity import assert_parity
from flax import nnx
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C

CONFIGS = {
    "defaults": (lambda: C.MarginLoss(), lambda: L.MarginLoss()),
    "learn_beta": (
        lambda: C.MarginLoss(margin=0.1, nu=0.1, beta=0.9, learn_beta=True),
        lambda: L.MarginLoss(margin=0.1, nu=0.1, beta=0.9, learn_beta=True),
    ),
    "per_class_beta": (
        lambda: C.MarginLoss(nu=0.05, learn_beta=True, num_classes=14),
        lambda: L.MarginLoss(nu=0.05, learn_beta=True, num_classes=14),
    ),
}
MINED = {
    "easy_triplets": (
        lambda: C.TripletMarginMiner(margin=0.1, type_of_triplets="easy"),
        lambda: M.TripletMarginMiner(margin=0.1, type_of_triplets="easy"),
    ),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_margin_matches_pml(config):
    ours, theirs = CONFIGS[config]
    assert_parity(ours(), theirs())


@pytest.mark.parametrize("miner", sorted(MINED))
def test_margin_with_miner_matches_pml(miner):
    our_miner, their_miner = MINED[miner]
    ours, theirs = CONFIGS["defaults"]
    assert_parity(ours(), theirs(), our_miner=our_miner(), their_miner=their_miner())


@pytest.mark.parametrize("num_classes", [None, 14])
def test_margin_beta_gradient_matches_pml(num_classes):
    emb, lab = BATCHES["mixed"]
    ours = C.MarginLoss(nu=0.1, learn_beta=True, num_classes=num_classes)
    theirs = L.MarginLoss(nu=0.1, learn_beta=True, num_classes=num_classes)
    x, y = jnp.asarray(emb), jnp.asarray(lab, jnp.int32)
    grads = nnx.grad(lambda m: m(x, y), argnums=nnx.DiffState(0, nnx.Param))(ours)
    theirs(torch.tensor(emb), torch.tensor(lab)).backward()
    # beta is float32 in both libraries; its gradient is accumulated in float64 in both.
    np.testing.assert_allclose(
        np.asarray(grads.beta[...]), theirs.beta.grad.numpy(), rtol=GRAD_RTOL, atol=GRAD_ATOL
    )
