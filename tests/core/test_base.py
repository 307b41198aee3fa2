"""The ``StatefulMetric`` lifecycle: update under jit, MultiMetric, split/merge, save/restore,
merge, reset and the cross-device reduce; and the ``Metric`` base class.

The test metric keeps a sum of squares per column and a row count; the reference is numpy on the
concatenated batches. Float32 tolerances (rtol 1e-6) cover only the different order of summation
between a streamed and a one-shot sum.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.core import Metric
from calibrax.core import MetricState
from calibrax.core import StatefulMetric
from calibrax.core import checks
from calibrax.core.state import FrozenWeight
from calibrax.io import restore_state
from calibrax.io import save_state

from ._instances import construct
from ._instances import names


class SumOfSquares(StatefulMetric):
    """Mean of squares per column: additive state, so the base ``reset``/``merge``/``reduce`` fit."""

    name = "sum_of_squares"
    higher_is_better = False

    def __init__(self, *, dim: int = 3, dtype=jnp.float32, track_max: bool = False) -> None:
        self.total = MetricState(jnp.zeros((dim,), dtype))
        self.count = MetricState(jnp.zeros((), jnp.int32))
        if track_max:
            self.peak = MetricState(jnp.zeros((dim,), dtype))

    def update(self, *, values: jax.Array, **kwargs) -> None:
        checks.check_rank(values, 2, "values", "batch, dim")
        self.total[...] += jnp.sum(values**2, axis=0).astype(self.total[...].dtype)
        self.count[...] += values.shape[0]

    def compute(self) -> dict[str, jax.Array]:
        total = self.total[...]
        return {"mean_square": total / self.count[...].astype(total.dtype)}


class Other(SumOfSquares):
    """Same state, another class: merging must refuse it."""


RNG = np.random.default_rng(0)
BATCHES = [RNG.standard_normal((n, 3)).astype(np.float32) for n in (4, 7, 1, 5)]
ALL = np.concatenate(BATCHES)
EXPECTED = (ALL.astype(np.float64) ** 2).sum(0) / len(ALL)


def _assert_result(metric: SumOfSquares, rows: np.ndarray = ALL) -> None:
    expected = (rows.astype(np.float64) ** 2).sum(0) / len(rows)
    out = metric.compute()["mean_square"]
    assert out.dtype == jnp.float32
    # float32 sums of ~20 values of order 1, accumulated in a different order: rtol 1e-6.
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)
    assert int(metric.count[...]) == len(rows)


def _state(metric) -> list[tuple[tuple, np.ndarray]]:
    return [(p, np.asarray(v.get_value())) for p, v in nnx.to_flat_state(nnx.state(metric))]


def _assert_same_state(a, b) -> None:
    sa, sb = _state(a), _state(b)
    assert [p for p, _ in sa] == [p for p, _ in sb]
    for (path, x), (_, y) in zip(sa, sb, strict=True):
        assert x.dtype == y.dtype, path
        np.testing.assert_array_equal(x, y, err_msg=str(path))


@nnx.jit
def _nnx_step(metric, values):
    metric.update(values=values)


def test_eager_update_matches_numpy():
    metric = SumOfSquares()
    for batch in BATCHES:
        metric.update(values=jnp.asarray(batch))
    _assert_result(metric)


def test_update_under_nnx_jit_equals_eager():
    eager, jitted = SumOfSquares(), SumOfSquares()
    for batch in BATCHES:
        eager.update(values=jnp.asarray(batch))
        _nnx_step(jitted, jnp.asarray(batch))
    _assert_result(jitted)
    # XLA may fuse the square into the column sum and reorder it: float32 rtol 1e-6.
    np.testing.assert_allclose(
        np.asarray(jitted.total[...]), np.asarray(eager.total[...]), rtol=1e-6
    )
    assert int(jitted.count[...]) == int(eager.count[...])


def test_update_under_jax_jit_via_split_merge():
    graphdef, state = nnx.split(SumOfSquares())

    @jax.jit
    def step(state, values):
        metric = nnx.merge(graphdef, state)
        metric.update(values=values)
        return nnx.state(metric)

    for batch in BATCHES:
        state = step(state, jnp.asarray(batch))
    _assert_result(nnx.merge(graphdef, state))


def test_inside_nnx_multimetric_next_to_average():
    losses = [np.float32(i) / 3 for i in range(len(BATCHES))]

    @nnx.jit
    def step(metrics, values, loss):
        metrics.update(values=values, loss=loss)

    metrics = nnx.MultiMetric(sos=SumOfSquares(), avg=nnx.metrics.Average("loss"))
    for batch, loss in zip(BATCHES, losses, strict=True):
        step(metrics, jnp.asarray(batch), jnp.asarray(loss))
    # flax's Average divides its float32 total by its int32 count, which the strict promotion set
    # in tests/conftest.py forbids; calibrax metrics cast explicitly and need no such context.
    with jax.numpy_dtype_promotion("standard"):
        out = metrics.compute()
    np.testing.assert_allclose(np.asarray(out["sos"]["mean_square"]), EXPECTED, rtol=1e-6)
    # The Average sees one scalar per batch: mean of 4 float32 values, rtol 1e-6.
    np.testing.assert_allclose(float(out["avg"]), np.mean(losses, dtype=np.float64), rtol=1e-6)
    metrics.reset()
    assert int(metrics.sos.count[...]) == 0 and int(metrics.avg.count[...]) == 0
    np.testing.assert_array_equal(np.asarray(metrics.sos.total[...]), np.zeros(3, np.float32))


def test_split_mid_stream_merge_back_and_continue():
    reference, metric = SumOfSquares(), SumOfSquares()
    for batch in BATCHES:
        _nnx_step(reference, jnp.asarray(batch))
    for batch in BATCHES[:2]:
        _nnx_step(metric, jnp.asarray(batch))
    graphdef, state = nnx.split(metric)
    resumed = nnx.merge(graphdef, state)
    for batch in BATCHES[2:]:
        _nnx_step(resumed, jnp.asarray(batch))
    _assert_same_state(reference, resumed)
    _assert_result(resumed)


def test_save_restore_mid_stream_and_continue(tmp_path):
    reference, metric = SumOfSquares(), SumOfSquares()
    for batch in BATCHES:
        _nnx_step(reference, jnp.asarray(batch))
    for batch in BATCHES[:2]:
        _nnx_step(metric, jnp.asarray(batch))
    save_state(tmp_path / "mid", metric, metadata={"batches_seen": 2})
    resumed = restore_state(tmp_path / "mid", nnx.eval_shape(SumOfSquares))
    for batch in BATCHES[2:]:
        _nnx_step(resumed, jnp.asarray(batch))
    _assert_same_state(reference, resumed)


def test_merge_of_two_metrics_equals_one_stream():
    a, b = SumOfSquares(), SumOfSquares()
    for batch in BATCHES[:2]:
        a.update(values=jnp.asarray(batch))
    for batch in BATCHES[2:]:
        b.update(values=jnp.asarray(batch))
    a.merge(b)
    _assert_result(a)
    # ``other`` is left as it was.
    _assert_result(b, np.concatenate(BATCHES[2:]))


def test_merge_refuses_another_class():
    msg = "expected `other` to be a SumOfSquares, got Other"
    with pytest.raises(TypeError, match=re.escape(msg)):
        SumOfSquares().merge(Other())


def test_merge_refuses_another_shape_or_dtype():
    msg = (
        "expected state `total` of `other` to have shape (3,) and dtype float32, "
        "got shape (4,) and dtype float32"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        SumOfSquares().merge(SumOfSquares(dim=4))
    msg = (
        "expected state `total` of `other` to have shape (3,) and dtype float32, "
        "got shape (3,) and dtype float64"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        SumOfSquares().merge(SumOfSquares(dtype=jnp.float64))


def test_merge_refuses_other_state_variables():
    msg = (
        "expected `other` to have the state variables ['count', 'total'], "
        "got ['count', 'peak', 'total']"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        SumOfSquares().merge(SumOfSquares(track_max=True))


def test_reset_zeroes_the_state_and_restarts_the_stream():
    metric = SumOfSquares()
    for batch in BATCHES:
        metric.update(values=jnp.asarray(batch))
    metric.reset()
    _assert_same_state(metric, SumOfSquares())
    for batch in BATCHES[:2]:
        metric.update(values=jnp.asarray(batch))
    _assert_result(metric, np.concatenate(BATCHES[:2]))


def test_reduce_inside_shard_map_equals_single_device():
    n_dev = 8
    assert len(jax.devices()) >= n_dev, "tests/conftest.py simulates 8 CPU devices"
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:n_dev]), ("data",))
    rows = RNG.standard_normal((n_dev * 3, 3)).astype(np.float32)
    graphdef, state = nnx.split(SumOfSquares())

    def per_device(state, values):
        metric = nnx.merge(graphdef, state)
        metric.update(values=values)
        metric.reduce("data")
        return nnx.state(metric)

    sharded = jax.jit(
        jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("data")),
            out_specs=jax.sharding.PartitionSpec(),
        )
    )
    reduced = nnx.merge(graphdef, sharded(state, jnp.asarray(rows)))
    single = SumOfSquares()
    single.update(values=jnp.asarray(rows))
    assert int(reduced.count[...]) == len(rows)
    # psum of 8 partial float32 sums vs one sum of 24 rows: rtol 1e-6.
    np.testing.assert_allclose(
        np.asarray(reduced.total[...]), np.asarray(single.total[...]), rtol=1e-6
    )
    _assert_result(reduced, rows)


def test_update_ignores_keywords_it_does_not_use():
    metric = SumOfSquares()
    metric.update(values=jnp.asarray(ALL), labels=jnp.zeros(3, jnp.int32), loss=1.0)
    _assert_result(metric)


# --- the Metric (tier 0) base class --------------------------------------------------------------


class MaxError(Metric):
    name = "max_error"
    higher_is_better = False

    def validate_inputs(self, predictions, targets):
        checks.check_same_shape(predictions, targets, "predictions", "targets")

    def _compute(self, predictions, targets, *, scale=1.0):
        return jnp.max(jnp.abs(predictions - targets)) * scale


def test_metric_validates_then_computes_with_its_config():
    metric = MaxError(scale=2.0)
    assert repr(metric) == "MaxError(scale=2.0)"
    out = metric(jnp.asarray([1.0, 2.0]), jnp.asarray([1.5, 0.0]))
    assert float(out) == 4.0  # max |difference| = 2, times scale 2: exact in binary
    msg = "expected `predictions` and `targets` to have the same shape, got (2,) and (3,)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        metric.compute(jnp.zeros(2), jnp.zeros(3))


def test_unimplemented_base_methods_raise():
    with pytest.raises(NotImplementedError):
        Metric().compute(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(NotImplementedError):
        StatefulMetric().update(values=jnp.zeros(2))
    with pytest.raises(NotImplementedError):
        StatefulMetric().compute()


# --- every registered stateful metric ------------------------------------------------------------


@pytest.mark.parametrize("name", names("stateful_metric"))
def test_registered_stateful_metric_state_lifecycle(name, tmp_path):
    """Lifecycle properties that need no inputs: fresh == reset(fresh); split/merge and
    save/restore round-trip the state exactly; empty merged with empty stays empty."""
    metric = construct(name)
    variables = [v for _, v in nnx.to_flat_state(nnx.state(metric, MetricState))]
    assert variables, f"{name} keeps no MetricState"

    metric.reset()
    _assert_same_state(metric, construct(name))

    graphdef, state = nnx.split(metric)
    _assert_same_state(metric, nnx.merge(graphdef, state))

    save_state(tmp_path / "ckpt", metric)
    # A metric checkpoint does not carry frozen backbone weights: a metric with a backbone is
    # restored into a concrete one (built with its backbone), any other into an abstract one.
    has_backbone = bool(nnx.to_flat_state(nnx.state(metric, FrozenWeight)))
    target = construct(name) if has_backbone else nnx.eval_shape(lambda: construct(name))
    restored = restore_state(tmp_path / "ckpt", target)
    _assert_same_state(metric, restored)

    # Merging two empty metrics gives an empty metric (no NaN from a division by a zero count).
    metric.merge(construct(name))
    _assert_same_state(metric, construct(name))
