"""Stateful metrics updated on 8 simulated devices equal the same updates on one device.

tests/conftest.py simulates 8 CPU devices. Each case feeds the same batches to a metric updated
on one device and to a metric whose first batch is fed on one device and whose later batches go
through ``sharded_update`` (jit + NamedSharding) or ``shard_map_update`` (shard_map + reduce), so
the merge of a running state with a sharded batch is exercised too.

Tolerances: the sharded programs split sums over devices (XLA partial sums, then an all-reduce or
``psum``/Chan combine), so floating-point sums are reassociated: float64 statistics (FID, KID,
IS, PRDC) agree to 1e-9 relative, float32 sums (ECE, LPIPS, MSE, Pearson) to 1e-6 relative;
integer counts and buffered rows (copies, no arithmetic) are exactly equal.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from calibrax.core import MetricState
from calibrax.learned import LPIPSMetric
from calibrax.learned._toy import ToyTrunk
from calibrax.metrics import FrechetDistance
from calibrax.metrics import InceptionScore
from calibrax.metrics import KernelDistance
from calibrax.metrics import PrecisionRecall
from calibrax.metrics import StreamingAccuracy
from calibrax.metrics import StreamingConfusionMatrix
from calibrax.metrics import StreamingExpectedCalibrationError
from calibrax.metrics import StreamingMeanSquaredError
from calibrax.metrics import StreamingPearsonCorrelation
from calibrax.metrics import StreamingRetrieval
from calibrax.parallel import data_mesh
from calibrax.parallel import replicate
from calibrax.parallel import shard_batch
from calibrax.parallel import shard_map_update
from calibrax.parallel import sharded_update
from calibrax.parallel.sharding import _jit_update
from calibrax.parallel.sharding import _placed
from calibrax.parallel.sharding import _split_inputs

RNG = np.random.default_rng(0)
D = 6
REAL = RNG.normal(size=(48, D))
FAKE = RNG.normal(size=(32, D)) * 1.2 + 0.3
LOGITS = RNG.normal(size=(48, 7)) * 2
PROBS = np.asarray(jax.nn.softmax(jnp.asarray(RNG.normal(size=(48, 5)) * 2, jnp.float32)))
LABELS = RNG.integers(0, 5, size=48).astype(np.int32)
PRED = RNG.normal(size=48).astype(np.float32)
TARGET = (0.7 * PRED + RNG.normal(size=48)).astype(np.float32)
IMG_X = RNG.uniform(-1, 1, size=(32, 16, 16, 3)).astype(np.float32)
IMG_Y = np.clip(IMG_X + RNG.normal(size=IMG_X.shape) * 0.3, -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def mesh():
    assert len(jax.devices()) >= 8, "tests/conftest.py simulates 8 CPU devices"
    return data_mesh(jax.devices()[:8])


# Every batch has 16 rows (one compiled program per case and setting). The
# first batch of each case is fed on one device, the others through the sharded update.
def _feature_batches():
    return [
        {"features": REAL[:16], "real": True},
        {"features": REAL[16:32], "real": True},
        {"features": FAKE[:16], "real": False},
        {"features": REAL[32:48], "real": True},
        {"features": FAKE[16:32], "real": False},
    ]


def _pair_batches(predictions, targets):
    return [
        {"predictions": predictions[a : a + 16], "targets": targets[a : a + 16]}
        for a in (0, 16, 32)
    ]


# name -> (factory, batches, rtol); rtol None means exactly equal
CASES = {
    "fid": (
        lambda: FrechetDistance(backbone=None, num_features=D),
        _feature_batches(),
        1e-9,
    ),
    "kid": (
        lambda: KernelDistance(
            backbone=None, num_features=D, max_samples=64, subsets=4, subset_size=20, seed=1
        ),
        _feature_batches(),
        1e-9,
    ),
    "prdc": (
        lambda: PrecisionRecall(backbone=None, num_features=D, max_samples=64, k=3),
        _feature_batches(),
        1e-9,
    ),
    "inception_score": (
        lambda: InceptionScore(backbone=None, num_classes=7, max_samples=48, splits=2),
        [
            {"logits": LOGITS[:16], "real": False},
            {"logits": LOGITS[16:32], "real": True},  # real batches are skipped
            {"logits": LOGITS[16:32], "real": False},
            {"logits": LOGITS[32:48], "real": False},
        ],
        1e-9,
    ),
    "accuracy": (StreamingAccuracy, _pair_batches(PROBS, LABELS), None),
    "confusion_matrix": (
        lambda: StreamingConfusionMatrix(num_classes=5),
        _pair_batches(PROBS, LABELS),
        None,
    ),
    "ece": (
        lambda: StreamingExpectedCalibrationError(n_bins=10),
        _pair_batches(PROBS, LABELS),
        1e-6,
    ),
    "mse": (StreamingMeanSquaredError, _pair_batches(PRED, TARGET), 1e-6),
    "pearson": (StreamingPearsonCorrelation, _pair_batches(PRED, TARGET), 1e-6),
    "lpips": (
        lambda: LPIPSMetric(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False),
        [
            {"predictions": IMG_X[:16], "targets": IMG_Y[:16]},
            {"predictions": IMG_X[16:32], "targets": IMG_Y[16:32]},
        ],
        1e-6,
    ),
}


def _states(metric):
    return {"/".join(map(str, k)): np.asarray(v[...]) for k, v in metric._state_variables()}


_one_device_update = nnx.jit(
    lambda m, arrays, static: m.update(**arrays, **dict(static)), static_argnums=2
)


def _one_device(metric, batch):
    # The reference: the same update compiled for one device (eagerly, each op of LPIPS' trunk
    # would compile on its own, far slower).
    arrays = {k: jnp.asarray(v) for k, v in batch.items() if isinstance(v, np.ndarray)}
    static = tuple(sorted((k, v) for k, v in batch.items() if not isinstance(v, np.ndarray)))
    _one_device_update(metric, arrays, static)


@functools.cache
def _single_device(case):
    factory, batches, _ = CASES[case]
    metric = factory()
    for batch in batches:
        _one_device(metric, batch)
    return metric


_compute = nnx.jit(lambda m: m.compute())


def _value(metric):
    # One compiled compute per case serves the reference and both sharded metrics: their state is
    # brought back to one device first (an eager compute compiles every op, seconds for FID).
    single = nnx.clone(metric)
    nnx.update(single, jax.device_put(nnx.state(single), jax.devices()[0]))
    return {k: np.asarray(v) for k, v in _compute(single).items()}


def _assert_same(got, want, rtol):
    for key, value in want.items():
        if rtol is None:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            np.testing.assert_allclose(got[key], value, rtol=rtol, atol=0, err_msg=key)


@pytest.mark.parametrize("update", [sharded_update, shard_map_update])
@pytest.mark.parametrize("case", sorted(CASES))
def test_sharded_update_equals_single_device(case, update, mesh):
    factory, batches, rtol = CASES[case]
    want = _single_device(case)
    metric = factory()
    first, *rest = batches
    _one_device(metric, first)
    for batch in rest:
        update(metric, mesh, **batch)
    for _, var in metric._state_variables():
        # The synchronised state is replicated: every device holds all of it.
        assert var[...].sharding.is_fully_replicated
        assert len(var[...].sharding.device_set) == 8
    got_state, want_state = _states(metric), _states(want)
    assert got_state.keys() == want_state.keys()
    for key, value in want_state.items():
        if np.issubdtype(value.dtype, np.integer) or case in ("kid", "prdc", "inception_score"):
            # Counts, and buffered rows (copied, never summed), are exactly equal.
            np.testing.assert_array_equal(got_state[key], value, err_msg=key)
    _assert_same(_value(metric), _value(want), rtol)
    if rtol is not None:
        _assert_same(got_state, want_state, rtol)


def test_sharded_update_keeps_rows_on_their_devices(mesh):
    # White-box: the compiled FID update works on each device's 2 rows and all-reduces the
    # (d,) mean and the (d, d) scatter; the batch is never gathered onto every device.
    metric = FrechetDistance(backbone=None, num_features=D)
    arrays, static = _split_inputs(metric, mesh, "data", {"features": REAL[:16], "real": True})
    graphdef, state, rest = _placed(metric, mesh)
    hlo = _jit_update.lower(graphdef, mesh, static, state, rest, arrays).compile().as_text()
    assert f"f64[{D},{D}]{{1,0}} all-reduce(" in hlo
    assert f"f64[2,{D}]" in hlo
    assert "all-gather" not in hlo


def test_retrieval_buffer_shards_under_jit_and_cannot_reduce(mesh):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=16).astype(np.int32)
    want = StreamingRetrieval(max_samples=24, dim=4, ks=(1, 3), block_size=5)
    want.update(embeddings=jnp.asarray(x), labels=jnp.asarray(labels))
    metric = StreamingRetrieval(max_samples=24, dim=4, ks=(1, 3), block_size=5)
    sharded_update(metric, mesh, embeddings=x, labels=labels)
    np.testing.assert_array_equal(_states(metric)["embeddings"], _states(want)["embeddings"])
    # Same rows, same program up to partitioning: float32 means to 1e-6.
    _assert_same(_value(metric), _value(want), 1e-6)
    with pytest.raises(NotImplementedError, match="gather the per-device metrics"):
        shard_map_update(metric, mesh, embeddings=x, labels=labels)


@pytest.mark.parametrize("update", [sharded_update, shard_map_update])
def test_buffer_overflow_in_a_sharded_update_is_an_error_at_compute(update, mesh):
    metric = KernelDistance(backbone=None, num_features=D, max_samples=24, subsets=2, subset_size=8)
    metric.update(features=jnp.asarray(REAL[:16]), real=True)
    update(metric, mesh, features=REAL[16:32], real=True)  # compiled: cannot raise, drops rows
    update(metric, mesh, features=FAKE[:16], real=False)
    assert int(metric.real_count[...]) == 32
    np.testing.assert_array_equal(np.asarray(metric.real_features[...]), REAL[:24])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected the `real` buffer to hold at most max_samples=24 samples, got 32 "
            "(a jitted update overflowed it)"
        ),
    ):
        metric.compute()


def test_shard_batch_puts_consecutive_rows_on_consecutive_devices(mesh):
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    out = shard_batch({"x": x, "y": np.arange(16)}, mesh)
    assert out["x"].sharding.spec == P("data")
    devices = list(mesh.devices.flat)
    for shard in out["x"].addressable_shards:
        i = devices.index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data), x[2 * i : 2 * i + 2])
    np.testing.assert_array_equal(np.asarray(out["y"]), np.arange(16))
    bare = shard_batch(jnp.asarray(x), mesh)
    np.testing.assert_array_equal(np.asarray(bare), x)


def test_replicate_places_modules_optimizers_and_pytrees_on_every_device(mesh):
    metric = StreamingAccuracy()
    assert replicate(metric, mesh) is metric
    assert metric.count[...].sharding.is_fully_replicated
    assert len(metric.count[...].sharding.device_set) == 8
    optimizer = nnx.Optimizer(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), optax.sgd(0.1), wrt=nnx.Param)
    assert replicate(optimizer, mesh) is optimizer
    assert len(optimizer.step[...].sharding.device_set) == 8
    tree = replicate({"a": np.ones(3)}, mesh)
    assert tree["a"].sharding.spec == P()


def test_data_mesh_defaults_and_a_custom_axis():
    mesh = data_mesh()
    assert mesh.axis_names == ("data",) and mesh.shape["data"] == len(jax.devices())
    two = data_mesh(jax.devices()[:2], axis_name="batch")
    assert two.axis_names == ("batch",) and two.shape["batch"] == 2
    metric = StreamingMeanSquaredError()
    sharded_update(metric, two, axis_name="batch", predictions=PRED[:6], targets=TARGET[:6])
    np.testing.assert_allclose(
        float(metric.compute()["mean_squared_error"]),
        float(np.mean((PRED[:6] - TARGET[:6]) ** 2)),
        rtol=1e-6,
    )


# --------------------------------------------------------------------------- bad input
def _raises(exc, message):
    return pytest.raises(exc, match=re.escape(message))


@pytest.mark.parametrize("update", [sharded_update, shard_map_update])
def test_update_rejects_bad_input(update, mesh):
    metric = FrechetDistance(backbone=None, num_features=4)
    x = np.zeros((16, 4))
    with _raises(
        ValueError,
        "expected `features` to have a batch size divisible by 8 (the devices on mesh axis "
        "'data'), got 12",
    ):
        update(metric, mesh, features=x[:12], real=True)
    with _raises(ValueError, "expected `axis_name` to be one of 'data', got 'batch'"):
        update(metric, mesh, axis_name="batch", features=x, real=True)
    before = {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(metric, MetricState))}
    update(metric, mesh, features=x[:0], real=True)  # an empty shard is a no-op
    after = {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(metric, MetricState))}
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with _raises(
        ValueError, "expected at least one array among the inputs to `update`, got ['real']"
    ):
        update(metric, mesh, real=True)
    with _raises(ValueError, "expected `features` to have a leading batch axis, got shape ()"):
        update(metric, mesh, features=np.float64(1.0), real=True)
    with _raises(TypeError, "expected `metric` to be a calibrax StatefulMetric, got Linear"):
        update(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), mesh, features=x, real=True)
    with _raises(TypeError, "expected `mesh` to be a jax.sharding.Mesh, got list"):
        update(metric, jax.devices(), features=x, real=True)
    with _raises(
        TypeError,
        "expected `real` to be an array (split over the devices) or a hashable static setting, "
        "got list",
    ):
        update(metric, mesh, features=x, real=[True])
    # The metric's own checks still run: on the global shape under jit, on the per-device shape
    # inside shard_map.
    rows = 16 if update is sharded_update else 2
    with _raises(
        ValueError,
        f"expected `features` to have 4 columns (the metric's feature dimension), got shape "
        f"({rows}, 3)",
    ):
        update(metric, mesh, features=x[:, :3], real=True)
    assert int(metric.real_count[...]) == 0  # nothing was written


def test_shard_batch_data_mesh_and_replicate_reject_bad_input(mesh):
    with _raises(ValueError, "expected `batch` to hold at least one array, got none"):
        shard_batch({}, mesh)
    with _raises(TypeError, "expected `x` to be an array, got float"):
        shard_batch({"x": 3.0}, mesh)
    with _raises(
        ValueError,
        "expected `pair/y` to have a batch size divisible by 8 (the devices on mesh axis "
        "'data'), got 4",
    ):
        shard_batch({"pair": {"x": np.zeros(8), "y": np.zeros(4)}}, mesh)
    with _raises(ValueError, "expected `axis_name` to be one of 'data', got 'model'"):
        shard_batch(np.zeros(8), mesh, axis_name="model")
    with _raises(ValueError, "expected `batch` to have a leading batch axis, got shape ()"):
        shard_batch(np.zeros(()), mesh)
    with _raises(ValueError, "expected `devices` to hold at least one device, got none"):
        data_mesh([])
    with _raises(
        ValueError, "expected `devices` to hold distinct devices, got 2 entries for 1 devices"
    ):
        data_mesh([jax.devices()[0]] * 2)
    with _raises(ValueError, "expected `axis_name` to be a non-empty string, got ''"):
        data_mesh(axis_name="")
    with _raises(TypeError, "expected `mesh` to be a jax.sharding.Mesh, got NoneType"):
        replicate(np.zeros(3), None)
