"""Regression MetricProtocol classes and streaming classes against the functions."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec

import calibrax.functional as F
import calibrax.metrics as M
from calibrax.core import MetricProtocol
from calibrax.core import MetricState
from calibrax.core import StatefulMetricProtocol

from ._streaming import MODES
from ._streaming import assert_tree_close
from ._streaming import batches
from ._streaming import merged
from ._streaming import stream

RNG = np.random.default_rng(0)
TARGETS = jnp.asarray(RNG.normal(size=40) * 2 + 5, jnp.float32)
PREDICTIONS = jnp.asarray(np.asarray(TARGETS) + RNG.normal(size=40), jnp.float32)

CASES = [
    (M.StreamingMeanSquaredError, M.MeanSquaredError, F.mean_squared_error),
    (M.StreamingRootMeanSquaredError, M.RootMeanSquaredError, F.root_mean_squared_error),
    (M.StreamingMeanAbsoluteError, M.MeanAbsoluteError, F.mean_absolute_error),
    (
        M.StreamingMeanAbsolutePercentageError,
        M.MeanAbsolutePercentageError,
        F.mean_absolute_percentage_error,
    ),
    (M.StreamingR2Score, M.R2Score, F.r2_score),
    (M.StreamingPearsonCorrelation, M.PearsonCorrelation, F.pearson_correlation),
]
IDS = [c[0].__name__ for c in CASES]


@pytest.mark.parametrize(("streaming", "metric", "fn"), CASES, ids=IDS)
def test_metric_class_matches_function(streaming, metric, fn):
    del streaming
    m = metric()
    assert isinstance(m, MetricProtocol)
    assert m.name == fn.__name__
    assert m.higher_is_better == (fn in (F.r2_score, F.pearson_correlation))
    assert m.compute(PREDICTIONS, TARGETS) == fn(PREDICTIONS, TARGETS)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` and `targets` to have the same shape, got (40,) and (3,)"
        ),
    ):
        m.validate_inputs(PREDICTIONS, TARGETS[:3])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("streaming", "metric", "fn"), CASES, ids=IDS)
def test_any_batching_gives_the_whole(streaming, metric, fn, mode):
    del metric
    expected = fn(PREDICTIONS, TARGETS)
    m = stream(streaming, batches(PREDICTIONS, TARGETS), mode)
    assert isinstance(m, StatefulMetricProtocol)
    out = m.compute()
    assert list(out) == [streaming.name]
    # float32 state and inputs, different summation order: 1e-5 relative
    assert_tree_close(out[streaming.name], expected, rtol=1e-5)


@pytest.mark.parametrize(("streaming", "metric", "fn"), CASES, ids=IDS)
def test_merge_gives_the_whole(streaming, metric, fn):
    del metric
    m = merged(streaming, PREDICTIONS, TARGETS, cut=13)
    np.testing.assert_allclose(m.compute()[streaming.name], fn(PREDICTIONS, TARGETS), rtol=1e-5)


@pytest.mark.parametrize(("streaming", "metric", "fn"), CASES, ids=IDS)
def test_reset_and_compute_before_update(streaming, metric, fn):
    del metric, fn
    m = streaming()
    minimum = 2 if streaming in (M.StreamingR2Score, M.StreamingPearsonCorrelation) else 1
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected at least {minimum} samples accumulated by `update` before `compute`, got 0"
        ),
    ):
        m.compute()
    m.update(predictions=PREDICTIONS, targets=TARGETS)
    m.reset()
    assert all(
        np.all(np.asarray(v[...]) == 0)
        for v in jax.tree.leaves(
            nnx.state(m, MetricState), is_leaf=lambda x: isinstance(x, nnx.Variable)
        )
    )
    m.update(predictions=PREDICTIONS[:4], targets=TARGETS[:4], unused=jnp.zeros(3))
    assert int(m.count[...]) == 4


def test_chan_merge_with_a_one_sample_batch_and_constant_data():
    # a batch of 1 has zero centred sums; constant data must stay exactly zero-variance
    m = M.StreamingPearsonCorrelation()
    for i in range(5):
        m.update(predictions=jnp.full(1, 0.1, jnp.float32), targets=TARGETS[i : i + 1])
    assert float(m.sum_squares_predictions[...]) == 0.0
    assert np.isnan(m.compute()["pearson_correlation"])
    r2 = M.StreamingR2Score()
    r2.update(predictions=jnp.full(3, 0.1, jnp.float32), targets=jnp.full(3, 0.1, jnp.float32))
    r2.update(predictions=jnp.full(2, 0.1, jnp.float32), targets=jnp.full(2, 0.1, jnp.float32))
    assert float(r2.compute()["r2_score"]) == 1.0


def test_works_inside_multimetric():
    multi = nnx.MultiMetric(
        mse=M.StreamingMeanSquaredError(),
        r2=M.StreamingR2Score(),
    )
    # `loss` is meant for other members of a MultiMetric; ours ignore it
    multi.update(predictions=PREDICTIONS, targets=TARGETS, loss=jnp.float32(1.0))
    out = multi.compute()
    np.testing.assert_allclose(
        out["mse"]["mean_squared_error"], F.mean_squared_error(PREDICTIONS, TARGETS), rtol=1e-6
    )
    np.testing.assert_allclose(out["r2"]["r2_score"], F.r2_score(PREDICTIONS, TARGETS), rtol=1e-5)


@pytest.mark.parametrize("streaming", [M.StreamingPearsonCorrelation, M.StreamingMeanSquaredError])
def test_reduce_over_devices(streaming):
    # 8 simulated devices (tests/conftest.py), each streams its shard, then `reduce` combines
    mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
    graphdef, state = nnx.split(streaming())

    def per_device(state, p, t):
        m = nnx.merge(graphdef, state)
        m.update(predictions=p, targets=t)
        m.reduce("d")
        return m.compute()[streaming.name]

    fn = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec("d"), PartitionSpec("d")),
        out_specs=PartitionSpec(),
        # every device ends with the same reduced state; all_gather's result is not marked
        # replicated by the varying-axes checker, so the check is off
        check_vma=False,
    )
    np.testing.assert_allclose(
        fn(state, PREDICTIONS, TARGETS),
        getattr(F, streaming.name)(PREDICTIONS, TARGETS),
        rtol=1e-5,
    )


def test_merge_rejects_other_classes_and_dtypes():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `other` to be a StreamingR2Score, got StreamingPearsonCorrelation"
        ),
    ):
        M.StreamingR2Score().merge(M.StreamingPearsonCorrelation())
    with pytest.raises(ValueError, match="expected state `mean_targets` of `other`"):
        M.StreamingR2Score().merge(M.StreamingR2Score(dtype=jnp.float64))


def test_streaming_validates_each_batch():
    m = M.StreamingR2Score()
    with pytest.raises(
        ValueError,
        match=re.escape("expected `predictions` to have 1 dims (batch), got shape (2, 2)"),
    ):
        m.update(predictions=jnp.zeros((2, 2)), targets=jnp.zeros((2, 2)))
    with pytest.raises(
        TypeError, match=re.escape("expected `targets` to have a floating dtype, got int32")
    ):
        M.StreamingMeanSquaredError().update(
            predictions=PREDICTIONS, targets=jnp.zeros(40, jnp.int32)
        )
