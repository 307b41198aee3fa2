"""Parity of calibrax.metric_learning.InstanceLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on values and gradients; see _pml_strict)."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_strict import assert_strict_parity
from pytorch_metric_learning import losses as L

import calibrax.metric_learning as C
from calibrax.metric_learning.losses.instance import dense_rank


def test_instance_defaults_match_pml():
    values = assert_strict_parity(C.InstanceLoss(), L.InstanceLoss())
    assert all(v > 0 for v in values.values())


def test_instance_gamma_matches_pml():
    assert_strict_parity(C.InstanceLoss(gamma=8.0), L.InstanceLoss(gamma=8.0), names=("mixed",))


def test_dense_rank_is_torch_unique_inverse():
    labels = np.array([7, -2, 7, 3, 3, 100, -2, 0])
    want = torch.unique(torch.tensor(labels), return_inverse=True)[1].numpy()
    np.testing.assert_array_equal(np.asarray(dense_rank(jnp.asarray(labels))), want)


def test_instance_refuses_miner_and_other_distances():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `indices_tuple` to be None (InstanceLoss does not use a miner), got PairMask"
        ),
    ):
        mask = C.PairMask(pos=jnp.zeros((3, 3), jnp.int32), neg=jnp.zeros((3, 3), jnp.int32))
        C.InstanceLoss()(jnp.ones((3, 4)), jnp.array([0, 1, 2]), mask)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `distance` to be a CosineSimilarity, got LpDistance(normalize_embeddings=True"
        ),
    ):
        C.InstanceLoss(distance=C.LpDistance())
    with pytest.raises(
        ValueError, match=re.escape("expected `gamma` to be a positive number, got 0")
    ):
        C.InstanceLoss(gamma=0)
