"""Parity of calibrax.metric_learning.InstanceLoss with pytorch-metric-learning 2.9 (float64, 1e-6
relative on values and gradients; see _pml_strict)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_parity import ours_value_and_grad_fn
from _pml_parity import pml_value_and_grad
from _pml_strict import assert_close
from _pml_strict import assert_strict_parity
from pytorch_metric_learning import losses as L

import calibrax.metric_learning as C
from calibrax.metric_learning.losses.instance import _block_count
from calibrax.metric_learning.losses.instance import dense_rank


def test_instance_defaults_match_pml():
    values = assert_strict_parity(C.InstanceLoss(), L.InstanceLoss())
    assert all(v > 0 for v in values.values())


def test_instance_gamma_matches_pml():
    assert_strict_parity(C.InstanceLoss(gamma=8.0), L.InstanceLoss(gamma=8.0), names=("mixed",))


def _blocked(blocks, **kwargs):
    loss = C.InstanceLoss(**kwargs)
    loss._blocks = blocks
    return loss


@pytest.mark.parametrize(("blocks", "names"), [(2, None), (7, ("mixed", "one_class"))])
def test_instance_upper_block_gram_matches_pml(blocks, names):
    # The upper-block path (B >= 1024 when chosen by size), forced on the strict-parity
    # batches: 2 blocks of the (14, 6) batches (the 33-row one does not divide: the plain
    # path), 7 blocks of 2 rows (21 mirrored blocks). float64, 1e-6.
    assert_strict_parity(_blocked(blocks), L.InstanceLoss(), names=names)
    if blocks == 2:
        assert_strict_parity(
            _blocked(blocks, gamma=8.0), L.InstanceLoss(gamma=8.0), names=("mixed",)
        )


def test_instance_block_switch_sides():
    assert _block_count(1024) == 4 and _block_count(2048) == 4
    assert _block_count(256) == 1 and _block_count(1022) == 1
    # Each side against PML on a 1024-row batch (4 blocks) and a 1020-row one (plain), float64.
    rng = np.random.default_rng(3)
    for batch in (1024, 1020):
        emb = rng.normal(size=(batch, 8))
        lab = rng.integers(0, batch // 4, size=batch)
        ours = ours_value_and_grad_fn(C.InstanceLoss())(emb, lab)
        assert_close(ours, pml_value_and_grad(L.InstanceLoss(), emb, lab), f"B={batch}")


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


@pytest.mark.parametrize("blocks", [None, 4])
def test_instance_float32_matches_pml(blocks):
    # float32 on both sides, 4 per class, gamma 64 (which scales the cosines' rounding):
    # measured 0 on the value and 4e-7 of the largest gradient entry, plain and 4 blocks;
    # 1e-5 asked.
    emb = np.random.default_rng(4).normal(size=(64, 32)).astype(np.float32)
    lab = np.arange(64) // 4
    e = torch.tensor(emb, requires_grad=True)
    value = L.InstanceLoss()(e, torch.tensor(lab))
    value.backward()
    loss = _blocked(blocks)
    got, grad = jax.jit(jax.value_and_grad(lambda x, y: loss(x, y)))(
        jnp.asarray(emb), jnp.asarray(lab)
    )
    np.testing.assert_allclose(float(got), float(value.detach()), rtol=1e-5)
    want = e.grad.numpy()
    np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
