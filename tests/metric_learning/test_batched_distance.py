"""BatchedDistance against pytorch-metric-learning's (float64): the same blocks, the same top-k."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import BatchedDistance as PMLBatched
from pytorch_metric_learning.distances import CosineSimilarity as PMLCosine
from pytorch_metric_learning.distances import LpDistance as PMLLp
from pytorch_metric_learning.utils.inference import CustomKNN

import calibrax.metric_learning as C

Q = np.random.default_rng(0).normal(size=(23, 6))
R = np.random.default_rng(1).normal(size=(17, 6))


@pytest.mark.parametrize(
    "ours_d, theirs_d", [(C.LpDistance(), PMLLp()), (C.CosineSimilarity(), PMLCosine())]
)
def test_blocks_and_callback_match_pml(ours_d, theirs_d):
    seen_ours, seen_theirs = [], []
    C.BatchedDistance(
        ours_d, lambda m, s, e: seen_ours.append((s, e, np.asarray(m))), batch_size=5
    )(Q, R)
    PMLBatched(theirs_d, lambda m, s, e: seen_theirs.append((s, e, m.numpy())), batch_size=5)(
        torch.tensor(Q), torch.tensor(R)
    )
    assert [(s, e) for s, e, _ in seen_ours] == [(s, min(e, 23)) for s, e, _ in seen_theirs]
    for (_, _, a), (_, _, b) in zip(seen_ours, seen_theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    full = C.BatchedDistance(ours_d, batch_size=5)(Q, R)
    np.testing.assert_allclose(
        np.asarray(full), np.asarray(ours_d(jnp.asarray(Q), jnp.asarray(R))), rtol=0, atol=0
    )
    assert C.BatchedDistance(ours_d).is_inverted == ours_d.is_inverted


def test_accumulated_top_k_matches_pml_custom_knn():
    """Blocked k-nearest neighbours (PML's CustomKNN with batch_size) as a jitted fold."""
    k = 4
    bd = C.BatchedDistance(C.LpDistance(), batch_size=6)

    def top_k(carry, mat, rows):
        dists, idx = carry
        d, i = jax.lax.top_k(-mat, k)
        safe = jnp.where(rows >= 0, rows, dists.shape[0])  # padding rows go out of bounds
        return dists.at[safe].set(-d, mode="drop"), idx.at[safe].set(i, mode="drop")

    init = (jnp.zeros((23, k)), jnp.zeros((23, k), jnp.int32))
    dists, idx = jax.jit(lambda q, r: bd.accumulate(top_k, init, q, r))(
        jnp.asarray(Q), jnp.asarray(R)
    )
    theirs_d, theirs_i = CustomKNN(PMLLp(), batch_size=6)(torch.tensor(Q), k, torch.tensor(R))
    np.testing.assert_array_equal(np.asarray(idx), theirs_i.numpy())
    np.testing.assert_allclose(
        np.asarray(dists), theirs_d.numpy(), rtol=1e-6
    )  # PML's buffer is float32


def test_errors():
    with pytest.raises(
        TypeError,
        match=re.escape("expected `distance` to be a calibrax.metric_learning distance, got str"),
    ):
        C.BatchedDistance("lp")
    with pytest.raises(TypeError, match=re.escape("expected `iter_fn` to be callable, got int")):
        C.BatchedDistance(C.LpDistance(), 3)
    with pytest.raises(
        ValueError, match=re.escape("expected `batch_size` to be a positive integer, got 0")
    ):
        C.BatchedDistance(C.LpDistance(), batch_size=0)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `query` to have 2 dims (batch, embedding_dim), got shape (3,)"),
    ):
        C.BatchedDistance(C.LpDistance())(np.ones(3))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `ref` to have embedding size 6 on axis 1, got shape (4, 2)"),
    ):
        next(C.BatchedDistance(C.LpDistance()).blocks(Q, np.ones((4, 2))))
