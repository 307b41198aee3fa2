"""The PML 2.9 miners added for parity, against pytorch-metric-learning (float64).

Deterministic miners (BatchEasyHard, HDC, Angular, EmbeddingsAlreadyPackagedAsTriplets): the
mined pairs/triplets equal PML's exactly, over seeds, batch shapes and degenerate batches (one
class, all classes distinct). Random miners (DistanceWeighted, UniformHistogram): PML draws from
torch's global generator and we from a ``jax.random`` key, so the draws cannot be equal; we check
that both sample from the same distribution (PML's per-pair weights, captured from PML itself, to
1e-10) and that our draws obey PML's constraints.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.miners import distance_weighted_miner as pml_dw_module

import calibrax.metric_learning as C

LABELS = {
    "mixed": lambda n: np.random.default_rng(n).integers(0, 4, n),
    "one_class": lambda n: np.zeros(n, np.int64),
    "all_distinct": lambda n: np.arange(n),
}
SHAPES = [(12, 5), (21, 3)]


def _emb(seed, n, d):
    return np.random.default_rng(100 + seed).normal(size=(n, d))


def _pairs_of(mask):
    a1, p, a2, n = mask.to_indices()
    return sorted(zip(a1.tolist(), p.tolist(), strict=True)), sorted(
        zip(a2.tolist(), n.tolist(), strict=True)
    )


def _pml_pairs(out):
    a1, p, a2, n = (t.tolist() for t in out)
    return sorted(zip(a1, p, strict=True)), sorted(zip(a2, n, strict=True))


def _cases():
    for labels_name in LABELS:
        for shape_i, (n, d) in enumerate(SHAPES):
            yield labels_name, n, d, shape_i


STRATEGY_CASES = [
    ("easy", "semihard", None, None, False),
    ("hard", "hard", None, None, False),
    ("semihard", "easy", None, None, False),
    ("all", "hard", None, None, False),
    ("hard", "semihard", (0.2, 1.6), (0.3, 1.8), False),
    ("easy", "semihard", None, None, True),
    ("semihard", "hard", (0.0, 0.9), None, True),
]


@pytest.mark.parametrize(
    "case",
    STRATEGY_CASES,
    ids=lambda c: f"{c[0]}-{c[1]}{'-range' if c[2] else ''}{'-cos' if c[4] else ''}",
)
def test_batch_easy_hard_matches_pml(case):
    pos_s, neg_s, pos_r, neg_r, cosine = case
    ours_d = C.CosineSimilarity() if cosine else None
    from pytorch_metric_learning.distances import CosineSimilarity

    theirs = pml_miners.BatchEasyHardMiner(
        pos_strategy=pos_s,
        neg_strategy=neg_s,
        allowed_pos_range=pos_r,
        allowed_neg_range=neg_r,
        **({"distance": CosineSimilarity()} if cosine else {}),
    )
    ours = jax.jit(
        C.BatchEasyHardMiner(
            pos_strategy=pos_s,
            neg_strategy=neg_s,
            allowed_pos_range=pos_r,
            allowed_neg_range=neg_r,
            distance=ours_d,
        )
    )
    for labels_name, n, d, seed in _cases():
        x, y = _emb(seed, n, d), LABELS[labels_name](n)
        assert _pairs_of(ours(jnp.asarray(x), jnp.asarray(y))) == _pml_pairs(
            theirs(torch.tensor(x), torch.tensor(y))
        ), (labels_name, n)


@pytest.mark.parametrize("fraction, cosine", [(0.3, False), (0.25, True)])
def test_hdc_matches_pml(fraction, cosine):
    from pytorch_metric_learning.distances import CosineSimilarity

    theirs = pml_miners.HDCMiner(
        filter_percentage=fraction, **({"distance": CosineSimilarity()} if cosine else {})
    )
    ours = jax.jit(
        C.HDCMiner(filter_percentage=fraction, distance=C.CosineSimilarity() if cosine else None)
    )
    for labels_name, n, d, seed in _cases():
        x, y = _emb(seed, n, d), LABELS[labels_name](n)
        ours_pairs = _pairs_of(ours(jnp.asarray(x), jnp.asarray(y)))
        theirs_pairs = _pml_pairs(theirs(torch.tensor(x), torch.tensor(y)))
        for mine, ref in zip(ours_pairs, theirs_pairs, strict=True):
            if mine != ref:
                # The distance matrix is symmetric: (a, b) and (b, a) tie, and torch.topk's
                # order among ties is unspecified. Then the selected distances must agree.
                dist = C.CosineSimilarity() if cosine else C.LpDistance()
                mat = np.asarray(dist(jnp.asarray(x)))
                np.testing.assert_array_equal(
                    sorted(mat[tuple(zip(*mine, strict=True))]),
                    sorted(mat[tuple(zip(*ref, strict=True))]),
                )
                assert {tuple(sorted(t)) for t in mine} == {tuple(sorted(t)) for t in ref}


@pytest.mark.parametrize("angle", [20, 45])
def test_angular_matches_pml(angle):
    theirs = pml_miners.AngularMiner(angle=angle)
    ours = jax.jit(C.AngularMiner(angle=angle))
    for labels_name, n, d, seed in _cases():
        x, y = _emb(seed, n, d), LABELS[labels_name](n)
        mask = ours(jnp.asarray(x), jnp.asarray(y))
        got = sorted(zip(*(t.tolist() for t in mask.to_indices()), strict=True))
        want = sorted(
            zip(*(t.tolist() for t in theirs(torch.tensor(x), torch.tensor(y))), strict=True)
        )
        assert got == want, (labels_name, n)


def test_angular_mask_through_triplet_loss_matches_pml():
    x, y = _emb(7, 12, 4), LABELS["mixed"](12)
    ours_loss = C.TripletMarginLoss(margin=0.2)
    value, grad = jax.jit(
        jax.value_and_grad(
            lambda e: ours_loss(e, jnp.asarray(y), C.AngularMiner(angle=30)(e, jnp.asarray(y)))
        )
    )(jnp.asarray(x))
    e = torch.tensor(x, requires_grad=True)
    ref = pml_losses.TripletMarginLoss(margin=0.2)(
        e, torch.tensor(y), pml_miners.AngularMiner(30)(e, torch.tensor(y))
    )
    ref.backward()
    np.testing.assert_allclose(float(value), ref.item(), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(grad), e.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_embeddings_already_packaged_matches_pml():
    x = _emb(0, 12, 3)
    y = np.zeros(12, np.int64)
    got = jax.jit(C.EmbeddingsAlreadyPackagedAsTriplets())(
        jnp.asarray(x), jnp.asarray(y)
    ).to_indices()
    want = pml_miners.EmbeddingsAlreadyPackagedAsTriplets()(torch.tensor(x), torch.tensor(y))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.numpy())
    loss = C.ContrastiveLoss()
    mask = C.EmbeddingsAlreadyPackagedAsTriplets()(jnp.asarray(x), jnp.asarray(y))
    ref = pml_losses.ContrastiveLoss()(torch.tensor(x), torch.tensor(y), want)
    np.testing.assert_allclose(
        float(loss(jnp.asarray(x), jnp.asarray(y), mask)), ref.item(), rtol=1e-10
    )


def _capture_pml_weights(monkeypatch, x, y, **kwargs):
    seen = {}
    original = pml_dw_module.lmu.get_random_triplet_indices

    def spy(labels, ref_labels=None, t_per_anchor=None, weights=None):
        seen["weights"] = weights.clone()
        return original(labels, ref_labels=ref_labels, t_per_anchor=t_per_anchor, weights=weights)

    monkeypatch.setattr(pml_dw_module.lmu, "get_random_triplet_indices", spy)
    pml_miners.DistanceWeightedMiner(**kwargs)(torch.tensor(x), torch.tensor(y))
    return seen["weights"].numpy()


@pytest.mark.parametrize("kwargs", [{}, {"cutoff": 0.3, "nonzero_loss_cutoff": 1.2}])
def test_distance_weighted_weights_match_pml_and_draws_obey_constraints(monkeypatch, kwargs):
    n, d = 16, 4
    x, y = _emb(1, n, d), np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 0, 1, 2, 5])
    theirs = _capture_pml_weights(monkeypatch, x, y, **kwargs)
    miner = C.DistanceWeightedMiner(**kwargs)
    ours = np.asarray(miner.negative_weights(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-14, equal_nan=True)
    sample = jax.jit(lambda e, l, k: miner(e, l, key=k))
    class_size = np.array([np.sum(y == c) for c in y])
    counts = np.zeros((n, n))
    if not kwargs:
        return  # the draws are checked once, with the non-default cutoffs
    for i in range(40):
        a, p, neg = sample(jnp.asarray(x), jnp.asarray(y), jax.random.key(i)).to_indices()
        # PML's constraints: one triplet per class member for every eligible anchor, positives
        # of the anchor's class other than itself, negatives with non-zero weight.
        eligible = (class_size >= 2) & (np.nansum(theirs, axis=1) > 0)
        np.testing.assert_array_equal(
            np.bincount(a, minlength=n), np.where(eligible, class_size, 0)
        )
        assert np.all(y[p] == y[a]) and np.all(p != a)
        assert np.all(y[neg] != y[a]) and np.all(theirs[a, neg] > 0)
        np.add.at(counts, (a, neg), 1)
    # The negatives' frequencies follow the weights: 40 * class size draws per anchor, 6 sigma.
    rows = np.flatnonzero(eligible)
    draws = counts[rows].sum(1, keepdims=True)
    p_hat = counts[rows] / draws
    w = np.nan_to_num(theirs[rows])
    assert np.all(np.abs(p_hat - w) <= 6 * np.sqrt(w * (1 - w) / draws) + 1e-12)


def test_distance_weighted_draws_through_triplet_loss_match_pml():
    """The sampled mask (with repeated triplets) gives PML's loss on the same triplets."""
    x, y = _emb(2, 12, 4), np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    mask = C.DistanceWeightedMiner()(jnp.asarray(x), jnp.asarray(y), key=jax.random.key(0))
    a, p, n = mask.to_indices()
    assert len(a) > len(set(zip(a, p, n, strict=True)))  # repeats present
    loss = C.TripletMarginLoss(margin=0.5)
    value = loss(jnp.asarray(x), jnp.asarray(y), mask)
    ref = pml_losses.TripletMarginLoss(margin=0.5)(
        torch.tensor(x), torch.tensor(y), tuple(torch.tensor(t) for t in (a, p, n))
    )
    np.testing.assert_allclose(float(value), ref.item(), rtol=1e-10)
    # A pair loss counts each triplet's pairs once per draw (PML's convert_to_pairs).
    pair_value = C.ContrastiveLoss(reducer=C.MeanReducer())(jnp.asarray(x), jnp.asarray(y), mask)
    pair_ref = pml_losses.ContrastiveLoss(reducer=pml_reducers.MeanReducer())(
        torch.tensor(x), torch.tensor(y), tuple(torch.tensor(t) for t in (a, p, n))
    )
    np.testing.assert_allclose(float(pair_value), pair_ref.item(), rtol=1e-10)


def test_uniform_histogram_expected_counts_match_pml_bins_and_draws_obey_them():
    n, d = 20, 3
    x, y = _emb(3, n, d), LABELS["mixed"](n)
    theirs = pml_miners.UniformHistogramMiner(num_bins=7, pos_per_bin=3, neg_per_bin=5)
    miner = C.UniformHistogramMiner(num_bins=7, pos_per_bin=3, neg_per_bin=5)
    mat = np.asarray(C.LpDistance()(jnp.asarray(x)))
    same = y[:, None] == y[None, :]
    expected_ours = [np.asarray(e) for e in miner.expected_counts(jnp.asarray(x), jnp.asarray(y))]
    sample = jax.jit(lambda e, l, k: miner(e, l, key=k))
    for valid, per_bin, exp_ours, which in (
        (same & ~np.eye(n, dtype=bool), 3, expected_ours[0], "pos"),
        (~same, 5, expected_ours[1], "neg"),
    ):
        dists = torch.tensor(mat[valid])
        bins = theirs.get_bins(dists).numpy()
        member = np.full(mat.shape, -1)
        for i in range(7):
            hi_ok = mat < bins[i + 1] if i != 6 else mat <= bins[i + 1]
            member[valid & (bins[i] <= mat) & hi_ok] = i
        sizes = np.bincount(member[member >= 0], minlength=7)
        expected_pml = np.where(
            member >= 0, per_bin / np.maximum(sizes[np.maximum(member, 0)], 1), 0
        )
        np.testing.assert_allclose(exp_ours, expected_pml, rtol=1e-12, atol=0)
        for i in range(3):
            mask = sample(jnp.asarray(x), jnp.asarray(y), jax.random.key(i))
            counts = np.asarray(mask.pos if which == "pos" else mask.neg)
            assert np.all(counts[~valid] == 0)
            per_bin_drawn = np.bincount(member[counts > 0], weights=counts[counts > 0], minlength=7)
            np.testing.assert_array_equal(per_bin_drawn, np.where(sizes > 0, per_bin, 0))


def test_miner_errors():
    x, y = jnp.ones((5, 2)), jnp.zeros(5, jnp.int32)
    cases = [
        (
            lambda: C.BatchEasyHardMiner(pos_strategy="medium"),
            "expected `pos_strategy` to be one of 'hard', 'semihard', 'easy', 'all', got 'medium'",
        ),
        (
            lambda: C.BatchEasyHardMiner(pos_strategy="semihard", neg_strategy="semihard"),
            'expected at most one of `pos_strategy` and `neg_strategy` to be "semihard"',
        ),
        (
            lambda: C.BatchEasyHardMiner(pos_strategy="all", neg_strategy="semihard"),
            'expected "semihard" not to be combined with "all"',
        ),
        (
            lambda: C.BatchEasyHardMiner(allowed_pos_range=(1, 0)),
            "expected `allowed_pos_range` to have low <= high, got (1, 0)",
        ),
        (
            lambda: C.BatchEasyHardMiner(allowed_neg_range=3),
            "expected `allowed_neg_range` to be None or a (low, high) pair, got 3",
        ),
        (
            lambda: C.HDCMiner(filter_percentage=0),
            "expected `filter_percentage` to be in (0, 1], got 0",
        ),
        (
            lambda: C.AngularMiner(angle=float("nan")),
            "expected `angle` to be a finite number of degrees, got nan",
        ),
        (
            lambda: C.AngularMiner(distance=C.CosineSimilarity()),
            "expected AngularMiner's `distance` to be LpDistance(p=2, power=1, normalize_embeddings=True), got CosineSimilarity",
        ),
        (
            lambda: C.DistanceWeightedMiner(distance=C.LpDistance(p=1)),
            "expected DistanceWeightedMiner's `distance` to be LpDistance(p=2, power=1, normalize_embeddings=True), got LpDistance(normalize_embeddings=True, p=1",
        ),
        (
            lambda: C.UniformHistogramMiner(num_bins=0),
            "expected `num_bins` to be a positive integer, got 0",
        ),
        (
            lambda: C.EmbeddingsAlreadyPackagedAsTriplets()(x, y),
            "expected the batch size to be a multiple of 3 (anchor, positive, negative), got 5",
        ),
        (
            lambda: C.HDCMiner()(jnp.ones(5), y),
            "expected `embeddings` to have 2 dims (batch, embedding_dim), got shape (5,)",
        ),
        (
            lambda: C.DistanceWeightedMiner()(x.at[0, 0].set(jnp.nan), y, key=jax.random.key(0)),
            "expected `embeddings` to be finite",
        ),
        (
            lambda: C.UniformHistogramMiner()(x, y[:4], key=jax.random.key(0)),
            "expected `embeddings` and `labels` to have the same length, got 5 and 4",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
    with pytest.raises(
        TypeError, match=re.escape("missing 1 required keyword-only argument: 'key'")
    ):
        C.DistanceWeightedMiner()(x, y)
