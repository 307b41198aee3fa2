"""calibrax.metric_learning reducers against pytorch-metric-learning's on per-element, per-pair and
per-triplet loss lists (float64; the same sums, so rtol 1e-12)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import reducers as R

import calibrax.metric_learning as C

CASES = {
    "mean": (lambda: C.MeanReducer(), lambda: R.MeanReducer()),
    "sum": (lambda: C.SumReducer(), lambda: R.SumReducer()),
    "avg_non_zero": (lambda: C.AvgNonZeroReducer(), lambda: R.AvgNonZeroReducer()),
    "threshold_low": (lambda: C.ThresholdReducer(low=0.3), lambda: R.ThresholdReducer(low=0.3)),
    "threshold_high": (
        lambda: C.ThresholdReducer(high=0.6),
        lambda: R.ThresholdReducer(high=0.6),
    ),
    "threshold_both": (
        lambda: C.ThresholdReducer(low=0.2, high=0.7),
        lambda: R.ThresholdReducer(low=0.2, high=0.7),
    ),
}


def _theirs(reducer, losses, reduction_type):
    n = len(losses)
    idx = torch.arange(n)
    indices = {"element": idx, "pos_pair": (idx, idx), "triplet": (idx, idx, idx)}[reduction_type]
    loss_dict = {
        "loss": {
            "losses": torch.tensor(losses),
            "indices": indices,
            "reduction_type": reduction_type,
        }
    }
    return float(reducer(loss_dict, torch.zeros(max(n, 1), 2, dtype=torch.float64), None))


@pytest.mark.parametrize("reduction_type", ["element", "pos_pair", "triplet"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_reducer_matches_pml(name, reduction_type):
    ours, theirs = CASES[name]
    rng = np.random.default_rng(0)
    values = np.maximum(rng.normal(0.3, 0.4, size=(6, 6)), 0)  # some exact zeros
    weights = rng.integers(0, 3, size=(6, 6))  # 0 = not a pair, 2 = a pair listed twice
    listed = np.repeat(values.ravel(), weights.ravel())
    got = ours()(jnp.asarray(values), jnp.asarray(weights))
    np.testing.assert_allclose(float(got), _theirs(theirs(), listed, reduction_type), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_nothing_valid_gives_zero(name):
    ours, theirs = CASES[name]
    got = ours()(jnp.ones((3, 3)), jnp.zeros((3, 3)))
    assert float(got) == 0.0
    # pytorch-metric-learning's losses hand the reducer a plain 0 when nothing is valid.
    assert _theirs(theirs(), np.zeros(1), "element") == 0.0
