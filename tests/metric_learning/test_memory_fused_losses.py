"""The fused loss-against-a-memory paths (``losses/_memory_contrastive.py``, ``_memory_supcon.py``).

``CrossBatchMemory(ContrastiveLoss())`` (Euclidean distance) and ``CrossBatchMemory(SupConLoss())``
(cosine similarity), with their default reducers, take blocked kernels with their own backward
passes. Each test runs a sequence of batches through ours (a
fresh ``nnx.jit``-compiled step) and through pytorch-metric-learning 2.9's ``CrossBatchMemory``,
float64, and compares every step's loss and gradient w.r.t. the batch to 1e-6 relative (float64
agreement is ~1e-15; atol 1e-12 covers exact zeros). The cases: the degenerate memories (no
positive pair, every pair beyond its margin, fewer than two pairs of each kind, duplicate
embeddings at distance 0 with different labels, a memory not yet full), ``enqueue_mask``, other
margins, temperatures and unnormalised embeddings, and the block layouts of the kernels (one
block, a scan of full blocks, a remainder block), forced small with ``monkeypatch``; then float32
against the general path, the value without a gradient, forward mode (which must raise) and
second derivatives (which go through the written-out backward pass).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pml_memory import pml_memory_step
from flax import nnx
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as L

import calibrax.metric_learning as C
from calibrax.metric_learning.losses import _memory_blocks
from calibrax.metric_learning.tuples import Reference

RTOL, ATOL = 1e-6, 1e-12
DIM = 4
# Both fused losses, with their defaults (ours, pytorch-metric-learning's).
KINDS = {
    "contrastive": (C.ContrastiveLoss, L.ContrastiveLoss),
    "supcon": (C.SupConLoss, L.SupConLoss),
}


def _fresh_step():
    # A new jitted function per test: the block size is read when the step is traced.
    @nnx.jit
    def step(memory, x, labels, enqueue_mask):
        return nnx.value_and_grad(lambda x, m: m(x, labels, enqueue_mask=enqueue_mask))(x, memory)

    return step


def _compare(batches, memory_size, ours_loss=None, theirs_loss=None, kind="contrastive"):
    ours_loss = ours_loss or KINDS[kind][0]()
    theirs_loss = theirs_loss or KINDS[kind][1]()
    ours = C.CrossBatchMemory(ours_loss, batches[0][0].shape[1], memory_size, dtype=jnp.float64)
    theirs = L.CrossBatchMemory(theirs_loss, batches[0][0].shape[1], memory_size)
    step = _fresh_step()
    values = []
    for k, (emb, labels, mask) in enumerate(batches):
        value, grad = step(
            ours,
            jnp.asarray(emb),
            jnp.asarray(labels, jnp.int32),
            None if mask is None else jnp.asarray(mask),
        )
        v2, g2 = pml_memory_step(theirs, emb, labels, mask)
        np.testing.assert_allclose(float(value), v2, rtol=RTOL, atol=ATOL, err_msg=f"step {k}")
        np.testing.assert_allclose(np.asarray(grad), g2, rtol=RTOL, atol=ATOL, err_msg=f"step {k}")
        values.append(float(value))
    return values


def _random_batches(seed, steps, batch, n_labels, dim=DIM, enqueue=False):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(size=(batch, dim)),
            rng.integers(0, n_labels, batch),
            (rng.random(batch) < 0.5) if enqueue else None,
        )
        for _ in range(steps)
    ]


def _small_blocks(monkeypatch, pairs, minimum=1):
    monkeypatch.setattr(_memory_blocks, "_BLOCK_PAIRS", pairs)
    monkeypatch.setattr(_memory_blocks, "_MIN_BLOCK", minimum)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(
    ("pairs", "layout"),
    [(10**6, "one block"), (6 * 5, "scan of full blocks"), (6 * 3, "scan and a remainder")],
)
def test_block_layouts_match_pml(pairs, layout, kind, monkeypatch):
    # Memory 10, batch 6: one block of 10 columns; blocks of 5 (a scan of two); blocks of 3 (a
    # scan of three and a remainder of 1). The memory wraps around and starts partly filled.
    _small_blocks(monkeypatch, pairs)
    assert _memory_blocks.block_columns(6, 10) == {"one block": 10}.get(layout, pairs // 6)
    _compare(_random_batches(0, 5, 6, 3), 10, kind=kind)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_enqueue_mask_with_blocks_matches_pml(kind, monkeypatch):
    _small_blocks(monkeypatch, 6 * 4)
    _compare(_random_batches(1, 5, 6, 3, enqueue=True), 10, kind=kind)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_positive_pair_in_memory_matches_pml(kind):
    # Every label distinct: no positive pair (the own slot is not one). Contrastive: the negative
    # term alone (embeddings close together, negatives within the margin); SupCon: 0.
    rng = np.random.default_rng(2)
    batches = [
        (1 + 0.2 * rng.normal(size=(4, DIM)), np.arange(4 * k, 4 * k + 4), None) for k in range(3)
    ]
    values = _compare(batches, 12, kind=kind)
    assert all(v > 0 for v in values) if kind == "contrastive" else values == [0.0] * 3


def test_every_pair_beyond_its_margin_gives_zero_loss_and_gradient():
    # pos_margin 3 > every distance (at most 2), neg_margin 0: no non-zero pair loss.
    batches = _random_batches(3, 3, 6, 2)
    values = _compare(
        batches,
        10,
        C.ContrastiveLoss(pos_margin=3.0, neg_margin=0.0),
        L.ContrastiveLoss(pos_margin=3.0, neg_margin=0.0),
    )
    assert values == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fewer_than_two_pairs_of_each_kind_gives_zero_loss(kind):
    # Two rows per step, the first enqueued, the second the anchor (label 0), embeddings close
    # together (negatives within the margin). Step 0: one positive pair; step 1: one positive and
    # one negative: too few pairs, the loss is 0 (pytorch-metric-learning's GenericPairLoss);
    # step 2: two negatives.
    rng = np.random.default_rng(4)
    mask = np.array([True, False])
    batches = [(1 + 0.2 * rng.normal(size=(2, DIM)), np.array([lab, 0]), mask) for lab in (0, 1, 2)]
    values = _compare(batches, 8, kind=kind)
    assert values[:2] == [0.0, 0.0]
    assert values[2] > 0


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_duplicate_embeddings_at_distance_zero_match_pml(kind):
    # The same embeddings enqueued again with other labels: negative pairs at distance 0 (loss
    # neg_margin, zero gradient) and positives at distance 0 (loss 0).
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(4, DIM))
    batches = [(emb, np.array([0, 1, 0, 1]), None), (emb, np.array([1, 0, 2, 2]), None)]
    _compare(batches, 8, kind=kind)


def test_other_margins_temperatures_and_unnormalised_embeddings_match_pml(monkeypatch):
    _small_blocks(monkeypatch, 6 * 4)
    batches = _random_batches(6, 4, 6, 3)
    _compare(
        batches,
        10,
        C.ContrastiveLoss(pos_margin=0.4, neg_margin=2.5),
        L.ContrastiveLoss(pos_margin=0.4, neg_margin=2.5),
    )
    _compare(
        batches,
        10,
        C.ContrastiveLoss(neg_margin=3.0, distance=C.LpDistance(normalize_embeddings=False)),
        L.ContrastiveLoss(
            neg_margin=3.0, distance=pml_distances.LpDistance(normalize_embeddings=False)
        ),
    )
    _compare(batches, 10, C.SupConLoss(temperature=0.5), L.SupConLoss(temperature=0.5))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_realistic_shapes_with_default_blocks_match_pml(kind):
    # The default block size (2^18 pairs: 1024 columns for a batch of 256), memory 2200: a scan of
    # two full blocks and a remainder of 152 columns; 10 steps fill the memory and wrap around.
    assert _memory_blocks.block_columns(256, 2200) == 1024
    batches = _random_batches(7, 10, 256, 40, dim=16)
    _compare(batches, 2200, kind=kind)


def _memory_pair(loss, dtype):
    # A memory of 40 slots with 36 written (5 labels), set directly, and a batch of 12.
    rng = np.random.default_rng(8)
    memory = C.CrossBatchMemory(loss, 8, 40, dtype=dtype)
    memory.embedding_memory[...] = jnp.asarray(rng.normal(size=(40, 8)), dtype)
    memory.label_memory[...] = jnp.asarray(rng.integers(0, 5, 40), jnp.int32)
    memory.queue_idx[...] = jnp.asarray(36, jnp.int32)
    x = jnp.asarray(rng.normal(size=(12, 8)), dtype)
    return memory, x, jnp.asarray(rng.integers(0, 5, 12), jnp.int32)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_fused_path_equals_the_general_path(dtype, kind):
    # A ThresholdReducer(low=0) is the same reduction as AvgNonZeroReducer but takes the general
    # pair-loss path: float64 agrees to rounding (1e-12), float32 to 1e-5 (sums in another order,
    # and SupCon's log-sum-exp computed online).
    tol = 1e-12 if dtype == jnp.float64 else 1e-5
    make = KINDS[kind][0]
    fused, x, y = _memory_pair(make(), dtype)
    general, _, _ = _memory_pair(make(reducer=C.ThresholdReducer(low=0.0)), dtype)

    def value_and_grad(memory):
        return nnx.jit(lambda m, x: nnx.value_and_grad(lambda x, m: m(x, y))(x, m))(memory, x)

    v1, g1 = value_and_grad(fused)
    v2, g2 = value_and_grad(general)
    assert v1.dtype == dtype and g1.dtype == dtype
    np.testing.assert_allclose(float(v1), float(v2), rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_value_without_gradient_and_forward_mode(kind):
    fused, x, y = _memory_pair(KINDS[kind][0](), jnp.float64)
    graphdef, state = nnx.split(fused)

    @jax.jit
    def value_only(x, state):
        return nnx.merge(graphdef, state)(x, y)

    @jax.jit
    def value_and_grad(x, state):
        module = nnx.merge(graphdef, state)
        return nnx.value_and_grad(lambda x, m: m(x, y))(x, module)

    # The primal (no residuals kept) and the forward pass under grad give the same value.
    value = value_only(x, state)
    with_grad, _ = value_and_grad(x, state)
    np.testing.assert_allclose(float(value), float(with_grad), rtol=1e-15)
    # Reverse mode only: forward mode raises instead of returning a number.
    with pytest.raises(
        TypeError,
        match=re.escape("can't apply forward-mode autodiff (jvp) to a custom_vjp function."),
    ):
        jax.jvp(lambda x: value_only(x, state), (x,), (jnp.ones_like(x),))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_second_derivatives_match_the_general_path(kind):
    # The written-out backward pass is itself differentiable JAX code: Hessian-vector products,
    # reverse over reverse and forward over reverse, equal the general path's (float64, 1e-10).
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=(6, 4)))
    y = jnp.asarray(rng.integers(0, 3, 6), jnp.int32)
    ref = Reference(
        embeddings=jnp.asarray(0.3 * rng.normal(size=(10, 4)) + 0.5),
        labels=jnp.asarray(rng.integers(0, 3, 10), jnp.int32),
        mask=jnp.asarray(np.arange(10) < 8),
        frozen=True,
    )
    v = jnp.asarray(rng.normal(size=(6, 4)))
    make = KINDS[kind][0]
    results = []
    for loss in (make(), make(reducer=C.ThresholdReducer(low=0.0))):

        def grad(x, loss=loss):
            return jax.grad(lambda e: loss.prepared_loss(e, y, None, ref))(x)

        both = jax.jit(
            lambda x, grad=grad: (
                jax.grad(lambda e: jnp.vdot(grad(e), v))(x),
                jax.jvp(grad, (x,), (v,))[1],
            )
        )
        results.append(both(x))
    (r1, f1), (r2, f2) = results
    np.testing.assert_allclose(np.asarray(r1), np.asarray(r2), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(f1), np.asarray(f2), rtol=1e-10, atol=1e-10)
    assert float(jnp.max(jnp.abs(r1))) > 0
