"""Streaming FrechetDistance: invariance to batching/merging/devices, jit, checkpoints, errors."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from calibrax.core import FrozenWeight
from calibrax.core import MetricState
from calibrax.functional import frechet_distance_from_features
from calibrax.io.checkpoint import restore_state
from calibrax.io.checkpoint import save_state
from calibrax.metrics import FrechetDistance
from calibrax.metrics import InceptionScore
from calibrax.metrics import KernelDistance
from calibrax.metrics import PrecisionRecall
from calibrax.metrics.random_backbone import RandomConvBackbone

D = 12
RNG = np.random.default_rng(0)
MIX = RNG.normal(size=(D, D))
REAL = RNG.normal(size=(256, D)) @ MIX + 1.0
FAKE = RNG.normal(size=(200, D)) @ MIX * 1.1 + 1.3


def _fid(**kwargs):
    return FrechetDistance(backbone=None, num_features=D, **kwargs)


def _value(metric):
    return float(metric.compute()["frechet_distance"])


REFERENCE = float(frechet_distance_from_features(jnp.asarray(REAL), jnp.asarray(FAKE)))

_jit_update = nnx.jit(lambda m, x, real: m.update(features=x, real=real), static_argnums=2)


def _feed(metric, data, batch, real):
    for i in range(0, len(data), batch):
        _jit_update(metric, jnp.asarray(data[i : i + batch]), real)


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_batching_invariance(batch):
    metric = _fid()
    _feed(metric, REAL, batch, True)
    _feed(metric, FAKE, batch, False)
    # float64 features and statistics: batching changes only rounding (1e-9 relative).
    np.testing.assert_allclose(_value(metric), REFERENCE, rtol=1e-9)
    assert int(metric.real_count[...]) == 256


def test_split_over_eight_metrics_then_merge():
    parts = [_fid() for _ in range(8)]
    cuts_real = np.array_split(np.arange(256), 8)
    cuts_fake = np.array_split(np.arange(200), [0, 3, 50, 51, 120, 120, 190])  # uneven, empty
    for metric, r, f in zip(parts, cuts_real, cuts_fake, strict=True):
        metric.update(features=jnp.asarray(REAL[r]), real=True)
        if len(f):
            metric.update(features=jnp.asarray(FAKE[f]), real=False)
    total = parts[0]
    for other in parts[1:]:
        total.merge(other)
    np.testing.assert_allclose(_value(total), REFERENCE, rtol=1e-9)


def test_reduce_across_eight_devices_with_shard_map():
    parts = [_fid() for _ in range(8)]
    for i, metric in enumerate(parts):
        metric.update(features=jnp.asarray(REAL[i * 32 : (i + 1) * 32]), real=True)
        if i % 3:  # some devices see no generated samples
            metric.update(features=jnp.asarray(FAKE[i * 25 : (i + 1) * 25]), real=False)
    fake_seen = np.concatenate([FAKE[i * 25 : (i + 1) * 25] for i in range(8) if i % 3])
    graphdef, _ = nnx.split(parts[0])
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(m) for m in parts])
    mesh = jax.make_mesh((8,), ("d",))

    def body(state):
        metric = nnx.merge(graphdef, jax.tree.map(lambda x: x[0], state))
        metric.reduce("d")
        return jax.tree.map(lambda x: x[None], nnx.state(metric))

    stacked = jax.device_put(stacked, jax.sharding.NamedSharding(mesh, P("d")))
    out = jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d"))(stacked)
    reference = float(frechet_distance_from_features(jnp.asarray(REAL), jnp.asarray(fake_seen)))
    for device in (0, 5):
        reduced = nnx.merge(
            graphdef, jax.tree.map(lambda x, i=device: jnp.asarray(np.asarray(x)[i]), out)
        )
        np.testing.assert_allclose(_value(reduced), reference, rtol=1e-9)


def test_float32_features_use_a_float32_batch_matmul():
    metric = _fid()
    metric.update(features=jnp.asarray(REAL, jnp.float32), real=True)
    metric.update(features=jnp.asarray(FAKE, jnp.float32), real=False)
    assert metric.real_scatter[...].dtype == jnp.float64
    ref = float(
        frechet_distance_from_features(
            jnp.asarray(REAL, jnp.float32).astype(jnp.float64),
            jnp.asarray(FAKE, jnp.float32).astype(jnp.float64),
        )
    )
    # float32 scatter of batch-centred features (rel. error ~1e-7 per entry), float64 after.
    np.testing.assert_allclose(_value(metric), ref, rtol=1e-5)


def test_float32_statistics_policy():
    metric = _fid(dtype=jnp.float32)
    metric.update(features=jnp.asarray(REAL, jnp.float32), real=True)
    metric.update(features=jnp.asarray(FAKE, jnp.float32), real=False)
    assert metric.real_mean[...].dtype == jnp.float32
    # float32 statistics and float32 eigensolve: ~1e-4 relative after the trace cancellation.
    np.testing.assert_allclose(_value(metric), REFERENCE, rtol=1e-3)


def _images(n, seed, size=20):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


BACKBONE = RandomConvBackbone(num_features=8, rngs=nnx.Rngs(0))


def _backbone_features(images):
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    x = jax.image.resize(x, (len(images), 16, 16, 3), method="bilinear", antialias=False)
    return BACKBONE(x)


def test_images_through_backbone_match_features_route():
    real_img, fake_img = _images(24, 1), _images(20, 2)
    metric = FrechetDistance(backbone=BACKBONE)
    update = nnx.jit(lambda m, x, real: m.update(images=x, real=real), static_argnums=2)
    update(metric, jnp.asarray(real_img[:10]), True)
    update(metric, jnp.asarray(real_img[10:]), True)
    update(metric, jnp.asarray(fake_img), False)
    ref = frechet_distance_from_features(
        _backbone_features(real_img).astype(jnp.float64),
        _backbone_features(fake_img).astype(jnp.float64),
    )
    # Same float32 features; the metric's float32 batch scatter adds ~1e-6 relative.
    np.testing.assert_allclose(_value(metric), float(ref), rtol=1e-4)
    # normalize=True with the same pixels as floats in [0, 1] gives the same statistics.
    floats = FrechetDistance(backbone=BACKBONE, normalize=True)
    floats.update(images=jnp.asarray(real_img, jnp.float32) / 255.0, real=True)
    np.testing.assert_allclose(
        np.asarray(floats.real_mean[...]), np.asarray(metric.real_mean[...]), rtol=1e-6
    )


def test_backbone_weights_are_frozen():
    metric = FrechetDistance(backbone=BACKBONE)
    assert not jax.tree.leaves(nnx.state(metric, nnx.Param))
    assert jax.tree.leaves(nnx.state(metric, FrozenWeight))
    images = jnp.asarray(_images(3, 3), jnp.float32) / 255.0

    metric.normalize = True
    graphdef, frozen, rest = nnx.split(metric, FrozenWeight, ...)

    def loss(weights):
        return jnp.sum(nnx.merge(graphdef, weights, rest)._image_features(images))

    grads = jax.grad(loss)(frozen)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_string_backbone_is_resolved_lazily(monkeypatch):
    import calibrax.backbones

    asked = []

    def fake_load(name):
        asked.append(name)
        return BACKBONE

    monkeypatch.setattr(calibrax.backbones, "load", fake_load)
    metric = FrechetDistance(backbone="some-backbone")
    assert asked == ["some-backbone"] and metric.num_features == 8
    assert metric.input_size == (16, 16)


def test_plain_callable_backbone_infers_num_features():
    metric = FrechetDistance(backbone=lambda x: jnp.mean(x, axis=(1, 2)), input_size=(8, 8))
    assert metric.num_features == 3
    metric.update(images=jnp.asarray(_images(4, 4)), real=True)
    assert int(metric.real_count[...]) == 4


def test_multimetric_jit_and_compute():
    metrics = nnx.MultiMetric(
        fid=FrechetDistance(backbone=BACKBONE),
        kid=KernelDistance(backbone=BACKBONE, max_samples=32, subsets=3, subset_size=8),
        isc=InceptionScore(backbone=BACKBONE, max_samples=32, splits=2),
        prdc=PrecisionRecall(backbone=BACKBONE, max_samples=32, k=3),
    )
    step = nnx.jit(lambda m, x, real: m.update(images=x, real=real, labels=None), static_argnums=2)
    step(metrics, jnp.asarray(_images(12, 5)), True)
    step(metrics, jnp.asarray(_images(10, 6)), False)
    out = nnx.jit(lambda m: m.compute())(metrics)
    assert set(out) == {"fid", "kid", "isc", "prdc"}
    assert int(metrics.isc.fake_count[...]) == 10  # real batches are skipped by IS
    eager = FrechetDistance(backbone=BACKBONE)
    eager.update(images=jnp.asarray(_images(12, 5)), real=True)
    eager.update(images=jnp.asarray(_images(10, 6)), real=False)
    np.testing.assert_allclose(float(out["fid"]["frechet_distance"]), _value(eager), rtol=1e-6)
    metrics.reset()
    assert int(metrics.fid.real_count[...]) == 0 and int(metrics.kid.fake_count[...]) == 0


def test_orbax_checkpoint_mid_stream(tmp_path):
    metric = _fid()
    metric.update(features=jnp.asarray(REAL[:100]), real=True)
    metric.update(features=jnp.asarray(FAKE[:50]), real=False)
    save_state(tmp_path / "ckpt", metric)
    restored = restore_state(tmp_path / "ckpt", nnx.eval_shape(lambda: _fid()))
    restored.update(features=jnp.asarray(REAL[100:]), real=True)
    restored.update(features=jnp.asarray(FAKE[50:]), real=False)
    np.testing.assert_allclose(_value(restored), REFERENCE, rtol=1e-9)


def test_reset_and_reset_real_features():
    keep = _fid(reset_real_features=False)
    clear = _fid()
    for metric in (keep, clear):
        metric.update(features=jnp.asarray(REAL), real=True)
        metric.update(features=jnp.asarray(REAL[:10]), real=False)
        metric.reset()
        metric.update(features=jnp.asarray(FAKE), real=False)
    np.testing.assert_allclose(_value(keep), REFERENCE, rtol=1e-9)
    assert int(clear.real_count[...]) == 0 and int(clear.fake_count[...]) == 200


def test_save_and_load_real_statistics(tmp_path):
    metric = _fid()
    metric.update(features=jnp.asarray(REAL), real=True)
    metric.save_real_statistics(tmp_path / "stats.npz")
    with np.load(tmp_path / "stats.npz") as data:
        np.testing.assert_allclose(data["mu"], REAL.mean(0), rtol=1e-12)
        np.testing.assert_allclose(data["sigma"], np.cov(REAL, rowvar=False), rtol=1e-9)
        assert int(data["num_samples"]) == 256
    loaded = _fid()
    loaded.load_real_statistics(tmp_path / "stats.npz")
    loaded.update(features=jnp.asarray(FAKE), real=False)
    np.testing.assert_allclose(_value(loaded), REFERENCE, rtol=1e-9)
    # A pytorch-fid file holds only mu and sigma: the sample count must be given.
    np.savez(tmp_path / "pfid.npz", mu=REAL.mean(0), sigma=np.cov(REAL, rowvar=False))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `num_samples` for a statistics file without a `num_samples` key "
            "(pytorch-fid files store only `mu` and `sigma`), got None"
        ),
    ):
        loaded.load_real_statistics(tmp_path / "pfid.npz")
    loaded.load_real_statistics(tmp_path / "pfid.npz", num_samples=256)
    np.testing.assert_allclose(_value(loaded), REFERENCE, rtol=1e-9)
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `mu` of shape (12,) and `sigma` of shape (12, 12), got (3,)"),
    ):
        loaded.load_real_statistics(tmp_path / "bad.npz", num_samples=5)


def test_bad_inputs():
    metric = _fid()
    metric.update(features=jnp.asarray(REAL[:1]), real=True)
    metric.update(features=jnp.asarray(FAKE[:5]), real=False)
    with pytest.raises(
        ValueError,
        match=re.escape("expected at least 2 real samples to compute FrechetDistance, got 1"),
    ):
        metric.compute()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `features` to have 12 columns (the metric's feature dimension), "
            "got shape (4, 7)"
        ),
    ):
        metric.update(features=jnp.ones((4, 7)), real=False)
    with pytest.raises(
        ValueError, match=re.escape("expected `features` to be finite, got 1 NaN and 0 Inf values")
    ):
        metric.update(features=jnp.ones((4, D)).at[2, 3].set(jnp.nan), real=True)
    with pytest.raises(
        ValueError, match=re.escape("expected exactly one of `images` and `features`, got neither")
    ):
        metric.update(real=True)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `features` (this metric was built with backbone=None), got"),
    ):
        metric.update(images=jnp.zeros((2, 8, 8, 3), jnp.uint8), real=True)
    with pytest.raises(TypeError, match=re.escape("expected `real` to be a Python bool")):
        metric.update(features=jnp.ones((2, D)), real=jnp.array(True))
    held = int(metric.real_count[...])
    metric.update(features=jnp.ones((0, D)), real=True)  # an empty batch is a no-op
    assert int(metric.real_count[...]) == held


def test_bad_images():
    uint8_metric = FrechetDistance(backbone=BACKBONE)
    float_metric = FrechetDistance(backbone=BACKBONE, normalize=True)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `images` to have dtype uint8 with values in [0, 255] (normalize=False), "
            "got float32; pass floats in [0, 1] with normalize=True"
        ),
    ):
        uint8_metric.update(images=jnp.zeros((2, 8, 8, 3), jnp.float32), real=True)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `images` to have a floating dtype with values in [0, 1] (normalize=True), "
            "got uint8; pass uint8 images with normalize=False"
        ),
    ):
        float_metric.update(images=jnp.zeros((2, 8, 8, 3), jnp.uint8), real=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to be in [0, 1] (normalize=True expects floats in [0, 1]), "
            "got values in [0, 255]"
        ),
    ):
        float_metric.update(images=jnp.asarray(_images(2, 0), jnp.float32), real=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to have 4 dims (batch, height, width, channels), got shape (8, 8, 3)"
        ),
    ):
        uint8_metric.update(images=jnp.zeros((8, 8, 3), jnp.uint8), real=True)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `images` to have channels 3 on axis 3, got shape (2, 8, 8, 1)"),
    ):
        uint8_metric.update(images=jnp.zeros((2, 8, 8, 1), jnp.uint8), real=True)


def test_bad_settings():
    with pytest.raises(
        ValueError,
        match=re.escape("expected `num_features` when `backbone` is None (precomputed features"),
    ):
        FrechetDistance(backbone=None)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `num_features` to match the backbone's num_features (8), got 5"),
    ):
        FrechetDistance(backbone=BACKBONE, num_features=5)
    with pytest.raises(ValueError, match=re.escape("expected `resize_method` to be one of")):
        FrechetDistance(backbone=BACKBONE, resize_method="area")
    with pytest.raises(TypeError, match=re.escape("expected `other` to be a FrechetDistance")):
        _fid().merge(KernelDistance(backbone=None, num_features=D, max_samples=4, subset_size=2))
    with pytest.raises(
        ValueError, match=re.escape("expected state `fake_mean` of `other` to have shape (12,)")
    ):
        _fid().merge(FrechetDistance(backbone=None, num_features=3))


def test_x64_disabled_policy_in_a_subprocess():
    code = (
        "import jax.numpy as jnp\n"
        "from calibrax.metrics import FrechetDistance\n"
        "try:\n"
        "    FrechetDistance(backbone=None, num_features=4, dtype=jnp.float64)\n"
        "except ValueError as e:\n"
        "    print('ERROR:', e)\n"
        "m = FrechetDistance(backbone=None, num_features=4)  # dtype=None: float32 here\n"
        "x = jnp.sin(jnp.arange(40.0) * 1.7).reshape(10, 4)\n"
        "m.update(features=x, real=True)\n"
        "m.update(features=x + 1.0, real=False)\n"
        "print('FID:', float(m.compute()['frechet_distance']), m.real_mean[...].dtype)\n"
    )
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert (
        "ERROR: expected jax_enable_x64 to be on: FrechetDistance keeps float64 statistics "
        "(dtype=float64); call jax.config.update('jax_enable_x64', True)" in out
    )
    # An explicit float64 still needs x64; the default follows it. Mean shift of 1 in each of 4
    # dims, same (well-conditioned) covariance: FID = 4, up to float32 rounding of the
    # statistics (the closed form runs in float64 on the host; 1e-3 absolute).
    value = float(out.split("FID:")[1].split()[0])
    assert abs(value - 4.0) < 1e-3 and "float32" in out


def test_state_is_metric_state_only():
    metric = FrechetDistance(backbone=BACKBONE)
    names = {str(path[0]) for path, _ in nnx.to_flat_state(nnx.state(metric, MetricState))}
    assert names == {
        "real_count",
        "real_mean",
        "real_scatter",
        "fake_count",
        "fake_mean",
        "fake_scatter",
        # The base class's count of rows rejected under jit (calibrax.core.checks).
        "rejected_rows",
        "rejected_rule",
    }


@pytest.mark.slow
def test_default_backbone_end_to_end_on_real_images():
    from skimage import data

    crops = []
    for image in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket()):
        crops += [image[:96, :96], image[-96:, -96:]]
    batch = jnp.asarray(np.stack(crops))  # uint8 (8, 96, 96, 3)
    metric = FrechetDistance()  # the embedded EfficientNet-Lite0
    assert metric.num_features == 1280 and metric.input_size == (224, 224)
    metric.update(images=batch[:4], real=True)
    metric.update(images=batch[4:], real=True)
    metric.update(images=batch[::-1], real=False)
    # The same 8 images on both sides (n < d: singular covariances): 0 up to rounding.
    trace = float(jnp.trace(metric.real_scatter[...])) / 7
    assert 0.0 <= float(metric.compute()["frechet_distance"]) <= 1e-6 * trace
    x = jax.image.resize(
        batch.astype(jnp.float32) / 255.0, (8, 224, 224, 3), "bilinear", antialias=False
    )
    features = metric.backbone(x)
    other = FrechetDistance()
    other.update(images=batch[:5], real=True)
    other.update(images=batch[3:], real=False)
    ref = frechet_distance_from_features(
        features[:5].astype(jnp.float64), features[3:].astype(jnp.float64)
    )
    # float32 features; the metric's float32 batch scatter adds ~1e-6 relative.
    np.testing.assert_allclose(float(other.compute()["frechet_distance"]), float(ref), rtol=1e-4)


def test_features_of_shares_one_backbone_pass_between_metrics():
    import jax.numpy as jnp
    import numpy as np

    from calibrax.metrics import FrechetDistance
    from calibrax.metrics import KernelDistance

    backbone = BACKBONE
    rng = np.random.default_rng(0)
    real = jnp.asarray(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    fake = jnp.asarray(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    by_images = FrechetDistance(backbone=backbone)
    by_features = FrechetDistance(backbone=backbone)
    kid = KernelDistance(backbone=backbone, max_samples=6, subsets=2, subset_size=3)
    by_images.update(images=real, real=True)
    by_images.update(images=fake, real=False)
    for x, side in ((real, True), (fake, False)):
        f = by_features.features_of(x)
        by_features.update(features=f, real=side)
        kid.update(features=f, real=side)
    np.testing.assert_allclose(
        float(by_features.compute()["frechet_distance"]),
        float(by_images.compute()["frechet_distance"]),
        rtol=1e-12,
    )
    assert np.isfinite(float(kid.compute()["kid_mean"]))
    with pytest.raises(
        ValueError, match="expected a metric with a backbone to embed images, got backbone=None"
    ):
        FrechetDistance(backbone=None, num_features=4).features_of(real)
