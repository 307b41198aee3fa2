"""Calibration parity: torchmetrics (ECE/MCE, equal-width bins), a hand-written numpy loop
(equal-mass bins and reliability data), scikit-learn (Brier) and torch (NLL)."""

import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics as skm
import torch
import torchmetrics.functional.classification as tmc

import calibrax.functional as F
import calibrax.metrics as M

C = 5


def _data(seed, n=300, dtype=np.float64):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, C)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # labels drawn near the predicted distribution, so bins hold a mix of hits and misses
    labels = np.array([rng.choice(C, p=row) for row in probs**0.7 / (probs**0.7).sum(1)[:, None]])
    return logits.astype(dtype), probs.astype(dtype), labels


def _numpy_bins(confidence, outcome, n_bins, strategy):
    """Reference per-bin (count, mean confidence, accuracy) with explicit loops."""
    if strategy == "uniform":
        groups = [[] for _ in range(n_bins)]
        for i, c in enumerate(confidence):
            b = min(int(np.floor(c * n_bins)), n_bins - 1)
            groups[b].append(i)
    else:
        order = np.argsort(confidence, kind="stable")
        groups = [list(g) for g in np.array_split(order, n_bins)]
    count = np.array([len(g) for g in groups])
    conf = np.array([np.mean(confidence[g]) if g else 0.0 for g in groups])
    acc = np.array([np.mean(outcome[g]) if g else 0.0 for g in groups])
    return count, conf, acc


def _numpy_ece_mce(confidence, outcome, n_bins, strategy):
    count, conf, acc = _numpy_bins(confidence, outcome, n_bins, strategy)
    gaps = np.abs(acc - conf)
    ece = sum(count[b] / len(confidence) * gaps[b] for b in range(n_bins))
    mce = max(gaps[b] for b in range(n_bins) if count[b] > 0)
    return ece, mce


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_multiclass_ece_mce_match_torchmetrics(n_bins):
    _, probs, y = _data(0)
    tp, ty = torch.tensor(probs), torch.tensor(y)
    ece = tmc.multiclass_calibration_error(tp, ty, num_classes=C, n_bins=n_bins, norm="l1")
    mce = tmc.multiclass_calibration_error(tp, ty, num_classes=C, n_bins=n_bins, norm="max")
    # torchmetrics casts multiclass confidences to float32 (`.float()` in its update), so
    # agreement is to float32 precision: 1e-6 relative (float64 parity: the numpy-loop test)
    np.testing.assert_allclose(
        F.expected_calibration_error(jnp.asarray(probs), jnp.asarray(y), n_bins=n_bins),
        ece.item(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        M.MaximumCalibrationError(n_bins=n_bins)(jnp.asarray(probs), jnp.asarray(y)),
        mce.item(),
        rtol=1e-6,
    )


def test_binary_ece_mce_match_torchmetrics():
    _, probs, y = _data(1)
    p = probs[:, 0] / probs[:, :2].sum(1)
    yb = (y % 2).astype(int)
    tp, ty = torch.tensor(p), torch.tensor(yb)
    for norm, fn in (("l1", F.expected_calibration_error), ("max", F.maximum_calibration_error)):
        ref = tmc.binary_calibration_error(tp, ty, n_bins=12, norm=norm).item()
        np.testing.assert_allclose(fn(jnp.asarray(p), jnp.asarray(yb), n_bins=12), ref, rtol=1e-10)


def test_float32_ece_matches_torchmetrics():
    _, probs, y = _data(2, dtype=np.float32)
    ref = tmc.multiclass_calibration_error(
        torch.tensor(probs), torch.tensor(y), num_classes=C, n_bins=15
    ).item()
    # float32 per-bin sums of 300 values: 1e-5 relative
    got = F.expected_calibration_error(jnp.asarray(probs), jnp.asarray(y))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize(("n", "n_bins"), [(300, 15), (301, 7), (5, 8)])
def test_bins_match_numpy_loop(strategy, n, n_bins):
    _, probs, y = _data(3, n=n)
    confidence = probs.max(1)
    outcome = (probs.argmax(1) == y).astype(float)
    count, conf, acc = _numpy_bins(confidence, outcome, n_bins, strategy)
    diagram = F.reliability_diagram(
        jnp.asarray(probs), jnp.asarray(y), n_bins=n_bins, strategy=strategy
    )
    np.testing.assert_array_equal(diagram.count, count)
    # float64 means of the same values: 1e-12 relative (absolute for empty bins)
    np.testing.assert_allclose(diagram.confidence, conf, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(diagram.accuracy, acc, rtol=1e-12, atol=1e-15)
    ece, mce = _numpy_ece_mce(confidence, outcome, n_bins, strategy)
    kwargs = {"n_bins": n_bins, "strategy": strategy}
    np.testing.assert_allclose(
        F.expected_calibration_error(jnp.asarray(probs), jnp.asarray(y), **kwargs), ece, rtol=1e-10
    )
    np.testing.assert_allclose(
        F.maximum_calibration_error(jnp.asarray(probs), jnp.asarray(y), **kwargs), mce, rtol=1e-10
    )


def test_brier_matches_sklearn():
    _, probs, y = _data(4)
    # multiclass (>= 3 classes): scikit-learn does not halve either
    np.testing.assert_allclose(
        F.brier_score(jnp.asarray(probs), jnp.asarray(y)),
        skm.brier_score_loss(y, probs, labels=range(C)),
        rtol=1e-12,
    )
    # binary probabilities of class 1
    p = probs[:, 0] / probs[:, :2].sum(1)
    yb = (y % 2).astype(int)
    np.testing.assert_allclose(
        M.BrierScore()(jnp.asarray(p), jnp.asarray(yb)), skm.brier_score_loss(yb, p), rtol=1e-12
    )
    # two-column input is the unhalved multiclass score: twice scikit-learn's halved one
    two = np.stack([1 - p, p], axis=1)
    np.testing.assert_allclose(
        F.brier_score(jnp.asarray(two), jnp.asarray(yb)),
        2 * skm.brier_score_loss(yb, two, labels=[0, 1]),
        rtol=1e-12,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nll_matches_torch_cross_entropy(dtype):
    logits, _, y = _data(5, dtype=dtype)
    ref = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(y)).item()
    # float32: log-softmax and a 300-term sum in float32, 1e-5 relative
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(
        F.negative_log_likelihood(jnp.asarray(logits), jnp.asarray(y)), ref, rtol=rtol
    )
    np.testing.assert_allclose(
        M.NegativeLogLikelihood()(jnp.asarray(logits), jnp.asarray(y)), ref, rtol=rtol
    )
