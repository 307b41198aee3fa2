"""CrossBatchMemory: parity with pytorch-metric-learning 2.9 over a sequence of batches.

Each configuration runs the same sequence of batches through ours (one ``nnx.jit``-compiled step,
memory as NNX state) and through pytorch-metric-learning's ``CrossBatchMemory``, in float64, and
compares every step's loss and its gradient w.r.t. the batch to 1e-6 relative (float64 agreement
is ~1e-15; atol covers exact zeros), and the memory contents. Memory 10, batches of 6 over 5
steps: the ring buffer wraps around twice, and the first step sees a partly filled memory.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _pml_memory import pml_memory_step
from flax import nnx
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M

import calibrax.metric_learning as C
from calibrax.io import restore_state
from calibrax.io import save_state

RTOL, ATOL = 1e-6, 1e-12
DIM, MEMORY, BATCH, STEPS = 4, 10, 6, 5

CONFIGS = {
    "contrastive": (lambda: C.ContrastiveLoss(), lambda: L.ContrastiveLoss(), None),
    "triplet": (
        lambda: C.TripletMarginLoss(margin=0.3),
        lambda: L.TripletMarginLoss(margin=0.3),
        None,
    ),
    "ntxent": (lambda: C.NTXentLoss(temperature=0.3), lambda: L.NTXentLoss(temperature=0.3), None),
    "supcon": (lambda: C.SupConLoss(), lambda: L.SupConLoss(), None),
    "multi_similarity": (lambda: C.MultiSimilarityLoss(), lambda: L.MultiSimilarityLoss(), None),
    "margin": (lambda: C.MarginLoss(), lambda: L.MarginLoss(), None),
    "triplet_ms_miner": (
        lambda: C.TripletMarginLoss(),
        lambda: L.TripletMarginLoss(),
        (lambda: C.MultiSimilarityMiner(), lambda: M.MultiSimilarityMiner()),
    ),
    "contrastive_batch_hard": (
        lambda: C.ContrastiveLoss(),
        lambda: L.ContrastiveLoss(),
        (lambda: C.BatchHardMiner(), lambda: M.BatchHardMiner()),
    ),
}


@nnx.jit
def _step(memory, x, labels, enqueue_mask):
    return nnx.value_and_grad(lambda x, m: m(x, labels, enqueue_mask=enqueue_mask))(x, memory)


def _batches(seed: int, enqueue: bool):
    rng = np.random.default_rng(seed)
    out = []
    for step in range(STEPS):
        emb = rng.normal(size=(BATCH, DIM))
        labels = rng.integers(0, 3, BATCH)
        if step == 2:
            labels[:] = 1  # one class in this batch (positives only from memory)
        mask = (rng.random(BATCH) < 0.5) if enqueue else None
        out.append((emb, labels, mask))
    return out


def _run(name: str, enqueue: bool, seed: int = 0) -> None:
    make_ours, make_theirs, miners = CONFIGS[name]
    ours = C.CrossBatchMemory(
        make_ours(), DIM, MEMORY, miner=None if miners is None else miners[0](), dtype=jnp.float64
    )
    theirs = L.CrossBatchMemory(
        make_theirs(), DIM, MEMORY, miner=None if miners is None else miners[1]()
    )
    for step, (emb, labels, mask) in enumerate(_batches(seed, enqueue)):
        value, grad = _step(
            ours,
            jnp.asarray(emb),
            jnp.asarray(labels, jnp.int32),
            None if mask is None else jnp.asarray(mask),
        )
        v2, g2 = pml_memory_step(theirs, emb, labels, mask)
        msg = f"{name} enqueue={enqueue} step {step}"
        np.testing.assert_allclose(float(value), v2, rtol=RTOL, atol=ATOL, err_msg=msg)
        np.testing.assert_allclose(np.asarray(grad), g2, rtol=RTOL, atol=ATOL, err_msg=msg)
        assert int(ours.queue_idx[...]) == theirs.queue_idx, msg
        assert bool(ours.has_been_filled[...]) == theirs.has_been_filled, msg
        filled = np.asarray(ours.filled_mask())
        np.testing.assert_array_equal(
            np.asarray(ours.embedding_memory[...])[filled],
            theirs.embedding_memory.numpy()[filled],
            err_msg=msg,
        )
        np.testing.assert_array_equal(
            np.asarray(ours.label_memory[...])[filled], theirs.label_memory.numpy()[filled]
        )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_pml_over_steps(name):
    _run(name, enqueue=False)


@pytest.mark.parametrize("name", ["contrastive", "supcon", "multi_similarity", "triplet_ms_miner"])
def test_enqueue_mask_matches_pml(name):
    _run(name, enqueue=True, seed=1)


def test_indices_tuple_is_added_to_the_memory_pairs_as_pml():
    # A user (a1, p, a2, n) tuple, its p/n indexing memory slots, padded with -1.
    ours = C.CrossBatchMemory(C.ContrastiveLoss(), DIM, MEMORY, dtype=jnp.float64)
    theirs = L.CrossBatchMemory(L.ContrastiveLoss(), DIM, MEMORY)
    rng = np.random.default_rng(5)
    for _ in range(3):
        emb, labels = rng.normal(size=(BATCH, DIM)), rng.integers(0, 3, BATCH)
        a = rng.integers(0, BATCH, 4)
        p = rng.integers(0, BATCH, 4)
        n = rng.integers(0, BATCH, 4)
        pad = np.full(3, -1)
        tup = tuple(jnp.asarray(np.concatenate([x, pad]), jnp.int32) for x in (a, p, a, n))
        value = ours(jnp.asarray(emb), jnp.asarray(labels, jnp.int32), tup)
        expected = theirs(
            torch.tensor(emb), torch.tensor(labels), tuple(torch.tensor(x) for x in (a, p, a, n))
        )
        np.testing.assert_allclose(float(value), float(expected), rtol=RTOL, atol=ATOL)


def test_checkpoint_round_trip_and_reset(tmp_path):
    memory = C.CrossBatchMemory(C.ContrastiveLoss(), DIM, MEMORY, dtype=jnp.float64)
    batches = _batches(3, enqueue=False)
    for emb, labels, _ in batches[:2]:
        _step(memory, jnp.asarray(emb), jnp.asarray(labels, jnp.int32), None)
    save_state(tmp_path / "cbm", memory)
    restored = restore_state(
        tmp_path / "cbm",
        nnx.eval_shape(
            lambda: C.CrossBatchMemory(C.ContrastiveLoss(), DIM, MEMORY, dtype=jnp.float64)
        ),
    )
    for name in ("embedding_memory", "label_memory", "queue_idx", "has_been_filled"):
        np.testing.assert_array_equal(
            np.asarray(getattr(restored, name)[...]), np.asarray(getattr(memory, name)[...])
        )
    emb, labels, _ = batches[2]
    args = (jnp.asarray(emb), jnp.asarray(labels, jnp.int32), None)
    v1, _ = _step(memory, *args)
    v2, _ = _step(restored, *args)
    assert float(v1) == float(v2)
    memory.reset_queue()
    assert int(memory.queue_idx[...]) == 0 and not bool(memory.has_been_filled[...])
    assert not np.any(np.asarray(memory.filled_mask()))
    assert np.all(np.asarray(memory.embedding_memory[...]) == 0)


def test_state_is_nnx_variables():
    memory = C.CrossBatchMemory(C.ContrastiveLoss(), DIM, MEMORY)
    state = nnx.state(memory)
    types = {type(v).__name__ for v in nnx.to_flat_state(state).leaves}
    assert {"MemoryEmbeddings", "MemoryLabels", "MemoryIndex", "MemoryFilled"} <= types
    assert not nnx.state(memory, nnx.Param)  # nothing trainable


def test_errors():
    with pytest.raises(
        ValueError, match=re.escape("CrossBatchMemory not supported for NPairsLoss")
    ):
        C.CrossBatchMemory(C.NPairsLoss(), DIM)
    with pytest.raises(
        ValueError, match=re.escape("CrossBatchMemory not supported for ArcFaceLoss")
    ):
        C.CrossBatchMemory(C.ArcFaceLoss(3, DIM, rngs=nnx.Rngs(0)), DIM)
    with pytest.raises(
        ValueError, match=re.escape("expected `memory_size` to be a positive integer, got 0")
    ):
        C.CrossBatchMemory(C.ContrastiveLoss(), DIM, 0)
    memory = C.CrossBatchMemory(C.ContrastiveLoss(), DIM, 4)
    x = jnp.ones((3, DIM), jnp.float32)
    y = jnp.zeros((3,), jnp.int32)
    with pytest.raises(
        ValueError, match=re.escape("expected at most memory_size=4 embeddings per batch, got 5")
    ):
        memory(jnp.ones((5, DIM), jnp.float32), jnp.zeros((5,), jnp.int32))
    with pytest.raises(
        ValueError, match=re.escape("indices_tuple and enqueue_mask are mutually exclusive")
    ):
        memory(x, y, (y, y, y), enqueue_mask=jnp.ones(3, bool))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `embeddings` to have embedding_size 4 on axis 1, got shape (3, 2)"
        ),
    ):
        memory(x[:, :2], y)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `embeddings` and `enqueue_mask` to have the same length, got 3 and 2"
        ),
    ):
        memory(x, y, enqueue_mask=jnp.ones(2, bool))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `embeddings` to be finite, got 1 NaN and 0 Inf values"),
    ):
        memory(x.at[0, 0].set(jnp.nan), y)
    # Nothing was enqueued by the failed calls.
    assert int(memory.queue_idx[...]) == 0
