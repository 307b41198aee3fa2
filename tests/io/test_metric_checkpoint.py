"""Metric checkpoints record their settings and checksums, and not the backbone (issue 18)."""

from __future__ import annotations

import json
import os
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.io import restore_state
from calibrax.io import save_state
from calibrax.metrics import FrechetDistance
from calibrax.metrics import KernelDistance
from calibrax.metrics.random_backbone import RandomConvBackbone


def _kid(**kw):
    settings = {"subsets": 4, "subset_size": 8, "degree": 3, "seed": 0}
    settings.update(kw)
    return KernelDistance(backbone=None, num_features=4, max_samples=32, **settings)


@pytest.fixture(scope="module")
def kid_checkpoint(tmp_path_factory):
    rng = np.random.default_rng(0)
    metric = _kid()
    metric.update(features=jnp.asarray(rng.normal(size=(16, 4)), jnp.float32), real=True)
    metric.update(features=jnp.asarray(rng.normal(size=(16, 4)) + 0.5, jnp.float32), real=False)
    path = tmp_path_factory.mktemp("kid") / "ckpt"
    save_state(path, metric)
    return path, metric.compute()


def test_round_trip_gives_the_same_value(kid_checkpoint):
    path, value = kid_checkpoint
    restored = restore_state(path, _kid())
    np.testing.assert_array_equal(restored.compute()["kid_mean"], value["kid_mean"])


@pytest.mark.parametrize(
    ("setting", "other", "stored"),
    [("subsets", 3, 4), ("subset_size", 6, 8), ("degree", 2, 3), ("seed", 1, 0)],
)
def test_restoring_into_other_settings_names_the_setting(kid_checkpoint, setting, other, stored):
    path, _ = kid_checkpoint
    msg = (
        f"expected the metric to have the settings the checkpoint at {str(path)!r} was saved "
        f"with, got setting `{setting}` = {other!r} in the target and {stored!r} in the "
        "checkpoint (build the metric with the checkpoint's settings)"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        restore_state(path, _kid(**{setting: other}))


def test_a_flipped_byte_is_an_error(tmp_path):
    metric = FrechetDistance(backbone=None, num_features=64)
    metric.update(features=jnp.asarray(np.arange(256, dtype=np.float32).reshape(4, 64)), real=True)
    path = tmp_path / "ckpt"
    save_state(path, metric)
    files = [
        os.path.join(root, name)
        for root, _, names in os.walk(path / "state")
        for name in names
        if os.path.basename(root) == "d"
    ]
    assert files
    for name in files:
        data = bytearray(open(name, "rb").read())
        data[len(data) // 2] ^= 0x01
        open(name, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        restore_state(path, FrechetDistance(backbone=None, num_features=64))


def test_checkpoint_does_not_carry_the_backbone(tmp_path):
    def build():
        return FrechetDistance(
            backbone=RandomConvBackbone(input_size=(16, 16), num_features=8, rngs=nnx.Rngs(0))
        )

    metric = build()
    metric.update(images=jnp.zeros((4, 16, 16, 3), jnp.uint8), real=True)
    path = tmp_path / "ckpt"
    save_state(path, metric)
    record = json.loads((path / "calibrax" / "metadata").read_text())
    saved = {"/".join(v["path"]) for v in record["variables"]}
    backbone = {
        "/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(metric)) if p[0] == "backbone"
    }
    assert backbone and not saved & backbone
    assert {"real_count", "real_mean", "real_scatter"} <= saved
    restored = restore_state(path, build())
    np.testing.assert_array_equal(restored.real_mean[...], metric.real_mean[...])
    with pytest.raises(ValueError, match="does not carry the frozen backbone weights"):
        restore_state(path, nnx.eval_shape(build))
