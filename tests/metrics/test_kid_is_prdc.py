"""KernelDistance, InceptionScore and PrecisionRecall: buffers, merge/reduce, jit, overflow."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from calibrax.functional import inception_score
from calibrax.functional import kernel_inception_distance
from calibrax.functional import precision_recall_density_coverage
from calibrax.io.checkpoint import restore_state
from calibrax.io.checkpoint import save_state
from calibrax.metrics import InceptionScore
from calibrax.metrics import KernelDistance
from calibrax.metrics import PrecisionRecall

D = 6
RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(40, D))
FAKE = RNG.normal(size=(33, D)) * 1.2 + 0.3
LOGITS = RNG.normal(size=(30, 7)) * 2


def _kid(**kwargs):
    settings = {"max_samples": 64, "subsets": 5, "subset_size": 20, "seed": 4} | kwargs
    return KernelDistance(backbone=None, num_features=D, **settings)


def _prdc(**kwargs):
    return PrecisionRecall(backbone=None, num_features=D, max_samples=64, k=3, **kwargs)


KID_REF = np.asarray(
    kernel_inception_distance(
        jnp.asarray(REAL), jnp.asarray(FAKE), subsets=5, subset_size=20, seed=4
    )
)
PRDC_REF = precision_recall_density_coverage(jnp.asarray(REAL), jnp.asarray(FAKE), k=3)

_update = nnx.jit(lambda m, x, real: m.update(features=x, real=real), static_argnums=2)


def _feed(metric, batch):
    for data, real in ((REAL, True), (FAKE, False)):
        for i in range(0, len(data), batch):
            _update(metric, jnp.asarray(data[i : i + batch]), real)


def test_kid_class_matches_function_on_the_same_rows():
    metric = _kid()
    _feed(metric, 7)
    out = metric.compute()
    # Same rows, same draws (prefix-consistent uniforms), float64: equal to rounding.
    np.testing.assert_allclose([float(out["kid_mean"]), float(out["kid_std"])], KID_REF, rtol=1e-10)
    jitted = nnx.jit(lambda m: m.compute())(metric)
    np.testing.assert_allclose(float(jitted["kid_mean"]), KID_REF[0], rtol=1e-10)


def test_prdc_class_matches_function():
    metric = _prdc()
    _feed(metric, 9)
    out = nnx.jit(lambda m: m.compute())(metric)
    for key in ("precision", "recall", "density", "coverage"):
        np.testing.assert_allclose(float(out[key]), float(PRDC_REF[key]), rtol=1e-12)


def test_inception_score_class_matches_function_and_skips_real():
    metric = InceptionScore(backbone=None, num_classes=7, max_samples=40, splits=3)
    metric.update(logits=jnp.asarray(LOGITS[:11]))
    metric.update(logits=jnp.asarray(LOGITS[:5]), real=True)  # ignored: real samples
    metric.update(logits=jnp.asarray(LOGITS[11:]))
    probs = jax.nn.softmax(jnp.asarray(LOGITS), axis=1)
    ref = np.asarray(inception_score(probs, splits=3))
    out = nnx.jit(lambda m: m.compute())(metric)
    np.testing.assert_allclose(
        [float(out["inception_score_mean"]), float(out["inception_score_std"])], ref, rtol=1e-10
    )


def test_merge_concatenates_buffers():
    a, b, whole = _kid(), _kid(), _kid()
    a.update(features=jnp.asarray(REAL[:25]), real=True)
    b.update(features=jnp.asarray(REAL[25:]), real=True)
    b.update(features=jnp.asarray(FAKE), real=False)
    a.merge(b)
    _feed(whole, 64)
    np.testing.assert_array_equal(
        np.asarray(a.real_features[...]), np.asarray(whole.real_features[...])
    )
    np.testing.assert_allclose(float(a.compute()["kid_mean"]), KID_REF[0], rtol=1e-10)
    p, q = _prdc(), _prdc()
    p.update(features=jnp.asarray(REAL), real=True)
    q.update(features=jnp.asarray(FAKE), real=False)
    p.merge(q)
    np.testing.assert_allclose(
        float(p.compute()["density"]), float(PRDC_REF["density"]), rtol=1e-12
    )
    too_big = _kid()
    too_big.update(features=jnp.asarray(REAL), real=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected the `real` buffer to hold at most max_samples=64 samples, got 40 + 40 = 80"
        ),
    ):
        too_big.merge(whole)


def test_reduce_gathers_and_compacts_across_devices():
    parts = [_kid() for _ in range(8)]
    real_cuts = np.array_split(np.arange(40), [3, 3, 10, 22, 30, 31, 35])  # uneven, one empty
    for metric, cut, i in zip(parts, real_cuts, range(8), strict=True):
        if len(cut):
            metric.update(features=jnp.asarray(REAL[cut]), real=True)
        if i < 3:
            metric.update(features=jnp.asarray(FAKE[i * 11 : (i + 1) * 11]), real=False)
    graphdef, _ = nnx.split(parts[0])
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(m) for m in parts])
    mesh = jax.make_mesh((8,), ("d",))
    stacked = jax.device_put(stacked, jax.sharding.NamedSharding(mesh, P("d")))

    def body(state):
        metric = nnx.merge(graphdef, jax.tree.map(lambda x: x[0], state))
        metric.reduce("d")
        return jax.tree.map(lambda x: x[None], nnx.state(metric))

    out = jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d"))(stacked)
    reduced = nnx.merge(graphdef, jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[6]), out))
    assert int(reduced.real_count[...]) == 40 and int(reduced.fake_count[...]) == 33
    np.testing.assert_array_equal(np.asarray(reduced.real_features[...])[:40], REAL)
    np.testing.assert_allclose(float(reduced.compute()["kid_mean"]), KID_REF[0], rtol=1e-10)


def test_overflow_is_an_eager_error_and_nan_under_jit():
    metric = _kid(max_samples=32)
    metric.update(features=jnp.asarray(REAL[:30]), real=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected the `real` buffer to hold at most max_samples=32 samples, got 30 + 5 = 35; "
            "build the metric with a larger `max_samples`"
        ),
    ):
        metric.update(features=jnp.asarray(REAL[30:35]), real=True)
    assert int(metric.real_count[...]) == 30  # nothing was written
    _update(metric, jnp.asarray(REAL[30:35]), True)  # jitted: cannot raise, drops the rows
    _update(metric, jnp.asarray(FAKE[:30]), False)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected the `real` buffer to hold at most max_samples=32 samples, got 35 "
            "(a jitted update overflowed it)"
        ),
    ):
        metric.compute()
    out = nnx.jit(lambda m: m.compute())(metric)
    assert np.isnan(float(out["kid_mean"])) and np.isnan(float(out["kid_std"]))


def test_too_few_samples_and_subset_size():
    metric = _kid()
    metric.update(features=jnp.asarray(REAL[:15]), real=True)
    metric.update(features=jnp.asarray(FAKE), real=False)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `subset_size` to be at most the number of real samples (15), got 20"
        ),
    ):
        metric.compute()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `subset_size` to be at most the number of buffered (`max_samples`) samples "
            "(10), got 20"
        ),
    ):
        _kid(max_samples=10)
    prdc = _prdc()
    prdc.update(features=jnp.asarray(REAL[:3]), real=True)
    prdc.update(features=jnp.asarray(FAKE), real=False)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected at least 4 real samples to compute PrecisionRecall with k=3, got 3"
        ),
    ):
        prdc.compute()
    isc = InceptionScore(backbone=None, num_classes=7, max_samples=40, splits=10)
    isc.update(logits=jnp.asarray(LOGITS[:4]))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected at least 10 fake samples to compute InceptionScore with splits=10, got 4"
        ),
    ):
        isc.compute()
    with pytest.raises(
        ValueError,
        match=re.escape("expected `logits` to have 7 columns (the metric's feature dimension)"),
    ):
        isc.update(logits=jnp.ones((2, 5)))


def test_reset_real_features_and_checkpoint(tmp_path):
    metric = _kid(reset_real_features=False)
    metric.update(features=jnp.asarray(REAL), real=True)
    metric.update(features=jnp.asarray(REAL), real=False)
    metric.reset()
    assert int(metric.real_count[...]) == 40 and int(metric.fake_count[...]) == 0
    metric.update(features=jnp.asarray(FAKE[:20]), real=False)
    save_state(tmp_path / "kid", metric)
    restored = restore_state(tmp_path / "kid", nnx.eval_shape(lambda: _kid()))
    restored.update(features=jnp.asarray(FAKE[20:]), real=False)
    np.testing.assert_allclose(float(restored.compute()["kid_mean"]), KID_REF[0], rtol=1e-10)
