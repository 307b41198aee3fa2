"""MPerClassSampler: PML 2.9's guarantees and error conditions (same configurations)."""

import re

import numpy as np
import pytest
from pytorch_metric_learning.samplers import MPerClassSampler as PMLSampler

from calibrax.metric_learning import MPerClassSampler

# 7 classes of sizes 1..13 (some smaller than m), shuffled in the dataset.
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(7), [1, 2, 4, 6, 9, 11, 13]))


@pytest.mark.parametrize(
    "m, batch_size, length",
    [(4, 12, 1000), (2, 14, 100), (3, None, 1000), (4, 28, 28), (5, None, 20), (1, 7, 50)],
)
def test_guarantees_and_length_match_pml(m, batch_size, length):
    ours = MPerClassSampler(LABELS, m, batch_size, length, seed=1)
    pml = PMLSampler(LABELS, m, batch_size, length)
    pml_indices = list(iter(pml))
    # PML's len; when one pass is longer than the epoch PML writes the whole pass past it.
    assert len(ours) == max(len(pml), len(pml_indices))
    epoch = list(ours)
    batch_len = batch_size if batch_size is not None else m * 7
    assert len(epoch) == ours.num_batches == len(ours) // batch_len
    for batch in epoch:
        assert batch.shape == (batch_len,) and batch.dtype == np.int64
        labels = LABELS[batch]
        classes, counts = np.unique(labels, return_counts=True)
        assert len(classes) == batch_len // m and np.all(counts == m)
        for c in classes:
            picked = batch[labels == c]
            n_c = np.sum(LABELS == c)
            if n_c >= m:  # without replacement
                assert len(np.unique(picked)) == m
    # PML's batches have the same structure (checked on its index list cut into batches).
    for s in range(0, len(pml_indices) - batch_len + 1, batch_len):
        _, counts = np.unique(LABELS[pml_indices[s : s + batch_len]], return_counts=True)
        assert np.all(counts == m)


def test_seeded_and_each_epoch_new():
    a = MPerClassSampler(LABELS, 2, 6, 600, seed=3)
    b = MPerClassSampler(LABELS, 2, 6, 600, seed=3)
    first_a, first_b = np.stack(list(a)), np.stack(list(b))
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.array_equal(np.stack(list(a)), first_a)
    assert not np.array_equal(np.stack(list(MPerClassSampler(LABELS, 2, 6, 600, seed=4))), first_a)


def test_sampling_is_uniform_over_classes_and_samples():
    """Classes: each batch draws 3 of 7 uniformly (expected share 3/7 per batch); samples: within
    the 13-sample class every sample is equally likely. 3000 batches: 6-sigma bounds."""
    sampler = MPerClassSampler(LABELS, 3, 9, 27000, seed=0)
    epoch = np.stack(list(sampler))
    per_batch = np.stack([np.isin(np.arange(7), LABELS[b]) for b in epoch])
    share = per_batch.mean(0)
    sigma = np.sqrt(3 / 7 * 4 / 7 / len(epoch))
    assert np.all(np.abs(share - 3 / 7) < 6 * sigma)
    big = np.flatnonzero(LABELS == 6)
    hits = np.array([np.sum(epoch == i) for i in big])
    expected = hits.sum() / len(big)
    assert np.all(np.abs(hits - expected) < 6 * np.sqrt(expected))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"m": 4, "batch_size": 12, "length_before_new_iter": 8},
            "expected `length_before_new_iter` (8) to be at least `batch_size` (12)",
        ),
        (
            {"m": 2, "batch_size": 16, "length_before_new_iter": 100},
            "expected m * (number of classes) (2 * 7 = 14) to be at least `batch_size` (16)",
        ),
        (
            {"m": 4, "batch_size": 10, "length_before_new_iter": 100},
            "expected `m` (4) to divide `batch_size` (10) without remainder",
        ),
    ],
)
def test_pml_error_conditions(kwargs, message):
    with pytest.raises(AssertionError):
        PMLSampler(LABELS, **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        MPerClassSampler(LABELS, **kwargs)


def test_bad_arguments():
    cases = [
        (
            {"labels": np.zeros((2, 2), int), "m": 1},
            "expected `labels` to be a non-empty 1-D array of integer labels, got shape (2, 2) and dtype int64",
        ),
        (
            {"labels": np.array([], int), "m": 1},
            "expected `labels` to be a non-empty 1-D array of integer labels, got shape (0,) and dtype int64",
        ),
        (
            {"labels": np.array([0.5, 1.0]), "m": 1},
            "expected `labels` to be a non-empty 1-D array of integer labels, got shape (2,) and dtype float64",
        ),
        ({"labels": LABELS, "m": 0}, "expected `m` to be an integer >= 1, got 0"),
        (
            {"labels": LABELS, "m": 2, "batch_size": 2.0},
            "expected `batch_size` to be an integer >= 1, got 2.0",
        ),
        (
            {"labels": LABELS, "m": 2, "length_before_new_iter": 0},
            "expected `length_before_new_iter` to be an integer >= 1, got 0",
        ),
        ({"labels": LABELS, "m": 2, "seed": -1}, "expected `seed` to be an integer >= 0, got -1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            MPerClassSampler(**kwargs)
