"""TripletMarginLoss: a hand-written loop over triplets, and O(B²) memory for all triplets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calibrax.metric_learning as C
from calibrax.metric_learning.tuples import all_triplets


def _loop_reference(emb, labels, margin, swap):
    """Every triplet by explicit loops (float64 numpy), reduced with AvgNonZero."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    losses = []
    for a in range(len(x)):
        for p in range(len(x)):
            for n in range(len(x)):
                if p == a or labels[p] != labels[a] or labels[n] == labels[a]:
                    continue
                an = min(d[a, n], d[p, n]) if swap else d[a, n]
                losses.append(max(d[a, p] - an + margin, 0.0))
    losses = np.asarray(losses)
    return losses[losses > 0].mean() if np.any(losses > 0) else 0.0


def test_matches_loop_over_triplets():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(9, 3))
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 3, 1])
    loss = jax.jit(lambda e, l, m: C.TripletMarginLoss(margin=0.4, swap=m)(e, l), static_argnums=2)
    for swap in (False, True):
        got = loss(jnp.asarray(emb), jnp.asarray(labels, jnp.int32), swap)
        # float64 on both sides; the loop sums in a different order: rtol 1e-12.
        np.testing.assert_allclose(float(got), _loop_reference(emb, labels, 0.4, swap), rtol=1e-12)


def test_all_triplets_memory_is_quadratic_not_cubic():
    batch = 512
    emb = jnp.zeros((batch, 16), jnp.float32)
    labels = jnp.arange(batch, dtype=jnp.int32) // 4
    step = jax.jit(jax.value_and_grad(lambda e, l: C.TripletMarginLoss()(e, l)))
    stats = step.lower(emb, labels).compile().memory_analysis()
    # A materialised (B, B, B) float32 array would take 512 MiB; one block of the anchor loop
    # holds at most 4M elements (16 MiB) plus O(B²) matrices.
    assert stats.temp_size_in_bytes < 64 * 2**20


@pytest.mark.parametrize(
    ("reducer", "distance"),
    [
        (C.MeanReducer(), C.LpDistance()),
        (C.SumReducer(), C.CosineSimilarity()),
        (C.AvgNonZeroReducer(), C.CosineSimilarity()),
        (C.ThresholdReducer(low=0.1, high=0.5), C.LpDistance()),
        (C.ThresholdReducer(high=0.3), C.LpDistance()),
        (C.ThresholdReducer(low=-0.5, high=0.3), C.CosineSimilarity()),
    ],
)
def test_sorted_hinge_equals_blocked_evaluation(reducer, distance):
    """The O(B² log B) path and the anchor-block path compute the same reduction."""
    rng = np.random.default_rng(1)
    emb = jnp.asarray(rng.normal(size=(16, 4)))
    labels = jnp.asarray(rng.integers(0, 4, size=16), jnp.int32)
    loss = C.TripletMarginLoss(margin=0.3, distance=distance)
    mat = distance(emb)
    triplets = all_triplets(labels, mat.dtype)

    def both(m):
        return loss._sorted_hinge(m, triplets, reducer), loss._blocked(m, triplets, reducer)

    fast, blocked = jax.jit(both)(mat)
    g_fast = jax.jit(jax.grad(lambda x: both(x)[0]))(mat)
    g_blocked = jax.jit(jax.grad(lambda x: both(x)[1]))(mat)
    # float64; different summation orders: rtol 1e-10.
    np.testing.assert_allclose(float(fast), float(blocked), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_blocked), rtol=1e-8, atol=1e-12)
