"""Miners return fixed-shape masks under jit; their rules on small hand-checked cases; errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calibrax.metric_learning as C

# Points on a line (unnormalised distances): classes 0 = {0, 1, 5}, 1 = {2, 3}.
X = jnp.array([[0.0], [1.0], [0.2], [3.0], [2.5]])
Y = jnp.array([0, 0, 1, 1, 0], jnp.int32)
RAW = C.LpDistance(normalize_embeddings=False)


def test_batch_hard_picks_farthest_positive_and_closest_negative():
    mask = jax.jit(C.BatchHardMiner(distance=RAW))(X, Y)
    a, p, n = mask.to_indices()
    # Anchor 0: positives 1 (d=1), 4 (d=2.5) -> 4; negatives 2 (0.2), 3 (3) -> 2.
    assert (a.tolist(), p.tolist(), n.tolist()) == (
        [0, 1, 2, 3, 4],
        [4, 4, 3, 2, 0],
        [2, 2, 0, 4, 3],
    )


def test_triplet_margin_miner_types_partition_all_triplets():
    kinds = {}
    for kind in ("hard", "semihard", "easy"):
        mask = jax.jit(C.TripletMarginMiner(margin=0.5, type_of_triplets=kind, distance=RAW))(X, Y)
        kinds[kind] = set(zip(*(t.tolist() for t in mask.to_indices()), strict=True))
    all_triplets = C.TripletMarginMiner(margin=1e9, type_of_triplets="all", distance=RAW)(X, Y)
    everything = set(zip(*(t.tolist() for t in all_triplets.to_indices()), strict=True))
    assert kinds["hard"] | kinds["semihard"] | kinds["easy"] == everything
    assert not (kinds["hard"] & kinds["semihard"]) and not (kinds["semihard"] & kinds["easy"])
    assert (0, 4, 2) in kinds["hard"]  # d(0,4)=2.5 > d(0,2)=0.2


def test_pair_masks_have_fixed_shapes_and_counts():
    for miner in (C.PairMarginMiner(), C.MultiSimilarityMiner()):
        mask = jax.jit(miner)(X, Y)
        assert mask.pos.shape == mask.neg.shape == (5, 5)
        assert mask.pos.dtype == jnp.int32
        pos, neg = np.asarray(mask.pos), np.asarray(mask.neg)
        same = np.asarray(Y)[:, None] == np.asarray(Y)[None, :]
        assert not np.any(pos & ~same) and not np.any(neg & same) and not np.any(np.diag(pos))


def test_triplet_mask_pair_counts_match_dense_triplets():
    mask = C.TripletMarginMiner(margin=0.8, type_of_triplets="all", distance=RAW)(X, Y)
    a, p, n = mask.to_indices()
    pos, neg = jax.jit(lambda m: m.pair_counts())(mask)
    want_pos, want_neg = np.zeros((5, 5), int), np.zeros((5, 5), int)
    np.add.at(want_pos, (a, p), 1)
    np.add.at(want_neg, (a, n), 1)
    np.testing.assert_array_equal(np.asarray(pos), want_pos)
    np.testing.assert_array_equal(np.asarray(neg), want_neg)


def test_miner_errors():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `type_of_triplets` to be one of 'all', 'hard', 'semihard', 'easy', got 'x'"
        ),
    ):
        C.TripletMarginMiner(type_of_triplets="x")
    with pytest.raises(
        TypeError, match=re.escape("expected `labels` to have an integer dtype, got float32")
    ):
        C.BatchHardMiner()(X, Y.astype(jnp.float32))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `embeddings` to be finite, got 0 NaN and 1 Inf values"),
    ):
        C.PairMarginMiner()(X.at[0, 0].set(jnp.inf), Y)
