"""The streaming CMMD metric: the same number as the function on the same (normalized) rows,
under nnx.jit, merged, reduced over devices, in the collection, with settings and inputs checked."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from calibrax.functional import cmmd
from calibrax.metrics import CMMD
from calibrax.metrics import FrechetDistance
from calibrax.metrics import GenerativeMetrics
from tests.functional.test_cmmd import reference_cmmd

RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(40, 6))
FAKE = RNG.normal(size=(33, 6)) + 0.4


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


WANT = reference_cmmd(_unit(REAL), _unit(FAKE))


def _metric(**kwargs):
    return CMMD(backbone=None, num_features=6, max_samples=64, **{"block_size": 16, **kwargs})


def _feed(metric, step=lambda m, **kw: m.update(**kw)):
    for cut in (slice(0, 17), slice(17, 40)):
        step(metric, features=jnp.asarray(REAL[cut]), real=True)
    step(metric, features=jnp.asarray(FAKE), real=False)


def test_streaming_equals_the_reference_on_normalized_embeddings():
    metric = _metric()
    _feed(metric)
    assert float(metric.compute()["cmmd"]) == pytest.approx(WANT, rel=1e-10)
    raw = _metric(l2_normalize=False)
    _feed(raw)
    assert float(raw.compute()["cmmd"]) == pytest.approx(reference_cmmd(REAL, FAKE), rel=1e-10)
    unbiased = _metric(unbiased=True)
    _feed(unbiased)
    want = float(cmmd(jnp.asarray(_unit(REAL)), jnp.asarray(_unit(FAKE)), unbiased=True))
    assert float(unbiased.compute()["cmmd"]) == pytest.approx(want, rel=1e-10)


def test_jitted_update_with_padding_mask_and_jitted_compute():
    metric = _metric()
    step = nnx.jit(lambda m, x, k, real: m.update(features=x, mask=k, real=real), static_argnums=3)
    for rows, real in ((REAL, True), (FAKE, False)):
        for start in range(0, len(rows), 8):
            batch = rows[start : start + 8]
            pad = 8 - len(batch)
            x = np.concatenate([batch, np.full((pad, 6), np.nan)])  # padding is never read
            step(metric, jnp.asarray(x), jnp.arange(8) < len(batch), real)
    got = nnx.jit(lambda m: m.compute())(metric)["cmmd"]
    assert float(got) == pytest.approx(WANT, rel=1e-10)


def test_merge_and_reduce_over_devices_give_the_whole_set():
    a, b = _metric(), _metric()
    a.update(features=jnp.asarray(REAL[:10]), real=True)
    b.update(features=jnp.asarray(REAL[10:]), real=True)
    b.update(features=jnp.asarray(FAKE), real=False)
    a.merge(b)
    assert float(a.compute()["cmmd"]) == pytest.approx(WANT, rel=1e-10)

    parts = [_metric() for _ in range(8)]
    for i, metric in enumerate(parts):
        metric.update(features=jnp.asarray(REAL[i * 5 : (i + 1) * 5]), real=True)
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
    reduced = nnx.merge(graphdef, jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[5]), out))
    assert float(reduced.compute()["cmmd"]) == pytest.approx(WANT, rel=1e-10)


def test_too_few_rows_is_an_eager_error_and_nan_under_jit():
    metric = _metric()
    metric.update(features=jnp.asarray(REAL), real=True)
    metric.update(features=jnp.asarray(FAKE[:1]), real=False)
    with pytest.raises(
        ValueError, match=re.escape("expected at least 2 fake samples to compute CMMD, got 1")
    ):
        metric.compute()
    assert np.isnan(float(nnx.jit(lambda m: m.compute())(metric)["cmmd"]))


def test_collection_gives_cmmd_and_fid_from_one_pass():
    coll = GenerativeMetrics(
        backbone=None,
        num_features=6,
        max_samples=64,
        metrics={"fid": {}, "cmmd": {"block_size": 16}},
    )
    coll.update(features=jnp.asarray(REAL), real=True)
    coll.update(features=jnp.asarray(FAKE), real=False)
    fid = FrechetDistance(backbone=None, num_features=6)
    fid.update(features=jnp.asarray(REAL), real=True)
    fid.update(features=jnp.asarray(FAKE), real=False)
    out = coll.compute()
    assert set(out) == {"frechet_distance", "cmmd"}
    assert float(out["cmmd"]) == pytest.approx(WANT, rel=1e-10)
    assert float(out["frechet_distance"]) == pytest.approx(
        float(fid.compute()["frechet_distance"]), rel=1e-10
    )
    # CMMD is asked for by name; the default members stay FID, KID, IS and PRDC.
    assert GenerativeMetrics(backbone=None, num_features=6, num_classes=3).members == (
        "fid",
        "kid",
        "is",
        "prdc",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": 0}, "expected `sigma` to be a positive finite number, got 0"),
        ({"scale": float("nan")}, "expected `scale` to be a positive finite number, got nan"),
        ({"unbiased": "yes"}, "expected `unbiased` to be a bool, got 'yes'"),
        ({"l2_normalize": None}, "expected `l2_normalize` to be a bool, got None"),
        ({"block_size": 2.5}, "expected `block_size` to be a positive integer, got 2.5"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _metric(**kwargs)


def test_bad_updates_leave_the_state_alone():
    metric = _metric()
    metric.update(features=jnp.asarray(REAL[:5]), real=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `features` to have 6 columns (the metric's feature dimension), "
            "got shape (3, 5)"
        ),
    ):
        metric.update(features=jnp.zeros((3, 5)), real=True)
    with pytest.raises(ValueError, match=re.escape("expected `features` to be finite")):
        metric.update(features=jnp.asarray(REAL[:3]).at[1, 1].set(jnp.inf), real=True)
    with pytest.raises(TypeError, match=re.escape("expected `real` to be a Python bool")):
        metric.update(features=jnp.asarray(REAL[:3]), real=jnp.asarray(True))
    assert int(metric.real_count[...]) == 5
