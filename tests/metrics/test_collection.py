"""GenerativeMetrics: one backbone pass feeding FID, KID, IS and PRDC, checked against the four
separate metrics on the same data (same functions underneath, so to float rounding)."""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.core import MetricState
from calibrax.io import restore_state
from calibrax.io import save_state
from calibrax.metrics import FrechetDistance
from calibrax.metrics import GenerativeMetrics
from calibrax.metrics import InceptionScore
from calibrax.metrics import KernelDistance
from calibrax.metrics import PrecisionRecall

D, C = 4, 3
RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(30, D))
FAKE = RNG.normal(size=(30, D)) * 1.2 + 0.3
LOGITS = RNG.normal(size=(30, C))
OPTIONS = {
    "fid": {},
    "kid": {"subsets": 4, "subset_size": 10},
    "is": {"splits": 3},
    "prdc": {"k": 3},
}


class _Out(NamedTuple):
    features: jax.Array
    logits: jax.Array


class CountingBackbone(nnx.Module):
    """A tiny deterministic backbone that counts its forward passes (Python side effect)."""

    input_size = (6, 6)
    num_features = D
    num_classes = C

    def __init__(self):
        self.calls = 0
        self.w = nnx.Variable(jnp.asarray(np.random.default_rng(1).normal(size=(108, D))))
        self.v = nnx.Variable(jnp.asarray(np.random.default_rng(2).normal(size=(D, C))))

    def forward(self, x):
        self.calls += 1
        f = jnp.tanh(
            x.reshape(x.shape[0], -1).astype(jnp.float32) @ self.w[...].astype(jnp.float32)
        )
        return _Out(f, f @ self.v[...].astype(jnp.float32))

    def __call__(self, x):
        return self.forward(x).features

    def logits(self, x):
        return self.forward(x).logits


def _collection(**kw):
    return GenerativeMetrics(
        backbone=None, num_features=D, num_classes=C, max_samples=64, metrics=OPTIONS, **kw
    )


def _separate(backbone=None, **kw):
    common = {"backbone": backbone, **kw}
    n = {} if backbone is not None else {"num_features": D}
    return [
        FrechetDistance(**common, **n),
        KernelDistance(**common, **n, max_samples=64, subsets=4, subset_size=10),
        InceptionScore(
            **common,
            **({} if backbone is not None else {"num_classes": C}),
            max_samples=64,
            splits=3,
        ),
        PrecisionRecall(**common, **n, max_samples=64, k=3),
    ]


def _values_of(metrics):
    out = {}
    for m in metrics:
        out.update(m.compute())
    return out


def _assert_close(got, want, rtol=1e-10):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(
            np.asarray(got[key]), np.asarray(want[key]), rtol=rtol, err_msg=key
        )


def test_collection_equals_the_four_metrics_on_features():
    coll = _collection()
    coll.update(features=REAL, real=True)
    coll.update(features=FAKE, logits=LOGITS, real=False)
    fid, kid, isc, prdc = _separate()
    for m in (fid, kid, prdc):
        m.update(features=REAL, real=True)
        m.update(features=FAKE, real=False)
    isc.update(logits=LOGITS)
    _assert_close(coll.compute(), _values_of([fid, kid, isc, prdc]))
    # KID and PRDC share one buffer per side.
    assert coll.kid.real_features is coll.prdc.real_features
    assert int(coll.prdc.fake_count[...]) == 30


def test_one_backbone_pass_per_batch_and_same_values_as_separate_metrics():
    images = RNG.random((10, 9, 9, 3))
    backbone = CountingBackbone()
    coll = GenerativeMetrics(
        backbone=backbone,
        normalize=True,
        max_samples=64,
        metrics={**OPTIONS, "is": {"splits": 2}, "kid": {"subsets": 2, "subset_size": 4}},
    )
    coll.update(images=images[:5], real=True)
    coll.update(images=images[5:], real=False)
    assert backbone.calls == 2  # one pass per batch, for all four metrics
    separate = [
        FrechetDistance(backbone=backbone, normalize=True),
        KernelDistance(backbone=backbone, normalize=True, max_samples=64, subsets=2, subset_size=4),
        InceptionScore(backbone=backbone, normalize=True, max_samples=64, splits=2),
        PrecisionRecall(backbone=backbone, normalize=True, max_samples=64, k=3),
    ]
    for m in separate:
        m.update(images=images[:5], real=True)
        m.update(images=images[5:], real=False)
    assert backbone.calls == 2 + 4 * 2 - 1  # InceptionScore skips the real batch
    _assert_close(coll.compute(), _values_of(separate), rtol=1e-6)


def test_jitted_masked_step_merge_reset_and_checkpoint(tmp_path):
    step = nnx.jit(
        lambda m, f, l, k, real: m.update(features=f, logits=l, mask=k, real=real),
        static_argnums=4,
    )
    pad = np.full((2, D), np.nan)
    coll = _collection()
    for real, x in ((True, REAL), (False, FAKE)):
        for start in range(0, 30, 8):
            part = x[start : start + 8]
            logit = LOGITS[start : start + 8]
            n = part.shape[0]
            mask = np.arange(8) < n
            fill = 8 - n
            step(
                coll,
                jnp.asarray(np.concatenate([part, pad[:fill]])),
                jnp.asarray(np.concatenate([logit, np.full((fill, C), np.nan)])),
                jnp.asarray(mask),
                real,
            )
    plain = _collection()
    plain.update(features=REAL, real=True)
    plain.update(features=FAKE, logits=LOGITS, real=False)
    _assert_close(coll.compute(), plain.compute(), rtol=1e-9)

    # Merge two halves (members merged one by one; the shared buffer only once).
    first, second = _collection(), _collection()
    first.update(features=REAL[:12], real=True)
    first.update(features=FAKE[:12], logits=LOGITS[:12], real=False)
    second.update(features=REAL[12:], real=True)
    second.update(features=FAKE[12:], logits=LOGITS[12:], real=False)
    first.merge(second)
    _assert_close(first.compute(), plain.compute(), rtol=1e-9)

    save_state(tmp_path / "coll", first)
    restored = restore_state(tmp_path / "coll", nnx.eval_shape(_collection))
    _assert_close(restored.compute(), plain.compute(), rtol=0)

    first.reset()
    for _, var in nnx.to_flat_state(nnx.state(first, MetricState)):
        assert not np.any(np.asarray(var[...]))


def test_reset_keeps_real_side_when_asked():
    coll = _collection(reset_real_features=False)
    coll.update(features=REAL, real=True)
    coll.update(features=FAKE, logits=LOGITS, real=False)
    coll.reset()
    assert int(coll.fid.real_count[...]) == 30 and int(coll.kid.real_count[...]) == 30
    assert int(coll.kid.fake_count[...]) == 0 and int(coll.inception.fake_count[...]) == 0


def test_subsets_of_members_and_string_form():
    coll = GenerativeMetrics(backbone=None, num_features=D, metrics="fid,prdc", max_samples=40)
    coll.update(features=REAL, real=True)
    coll.update(features=FAKE, real=False)  # no logits needed without "is"
    assert sorted(coll.compute()) == [
        "coverage",
        "density",
        "frechet_distance",
        "precision",
        "recall",
    ]
    assert coll.members == ("fid", "prdc")


def test_bad_settings_and_inputs():
    def raises(exc, msg, fn):
        with pytest.raises(exc, match=re.escape(msg)):
            fn()

    raises(
        ValueError,
        "expected `metrics` to be one of 'fid', 'kid', 'is', 'prdc', 'cmmd', got 'lpips'",
        lambda: GenerativeMetrics(backbone=None, num_features=D, metrics=("fid", "lpips")),
    )
    raises(
        ValueError,
        "expected `metrics` to name at least one of fid, kid, is, prdc, cmmd, got none",
        lambda: GenerativeMetrics(backbone=None, num_features=D, metrics=()),
    )
    raises(
        ValueError,
        "expected the options of `metrics['kid']` not to set `backbone` (the collection's own "
        "setting, shared by every member), got it",
        lambda: GenerativeMetrics(
            backbone=None, num_features=D, metrics={"kid": {"backbone": None}}
        ),
    )
    raises(
        ValueError,
        "expected `num_classes` (or a backbone with `num_classes` and `logits`) for the "
        'inception score ("is"), got None',
        lambda: GenerativeMetrics(backbone=None, num_features=D, metrics=("is",)),
    )
    raises(
        ValueError,
        "expected `kid` and `prdc` to share `max_samples` (they share one buffer), got 64 and 32",
        lambda: GenerativeMetrics(
            backbone=None,
            num_features=D,
            max_samples=64,
            metrics={"kid": {"subset_size": 10}, "prdc": {"max_samples": 32}},
        ),
    )
    coll = _collection()
    raises(
        ValueError,
        "expected `logits` with precomputed generated `features` (the collection computes the "
        'inception score, "is"), got None',
        lambda: coll.update(features=FAKE, real=False),
    )
    raises(
        ValueError,
        "expected exactly one of `images` and `features`, got neither",
        lambda: coll.update(real=True),
    )
    raises(
        ValueError,
        "expected `features` (this metric was built with backbone=None), got `images`",
        lambda: coll.update(images=np.zeros((2, 6, 6, 3), np.uint8), real=True),
    )
    raises(
        ValueError,
        "expected `features` to be finite, got 2 NaN and 0 Inf values",
        lambda: coll.update(features=np.where(np.eye(2, D) > 0, np.nan, 0.0), real=True),
    )
    raises(
        TypeError,
        "expected `other` to be a GenerativeMetrics, got FrechetDistance",
        lambda: coll.merge(FrechetDistance(backbone=None, num_features=D)),
    )
    other = GenerativeMetrics(backbone=None, num_features=D, metrics="fid")
    raises(ValueError, "expected `other` to", lambda: coll.merge(other))
    # None of the refused updates changed anything.
    assert int(coll.fid.real_count[...]) == 0
    # An empty batch is a no-op.
    coll.update(features=np.zeros((0, D)), real=False)
    assert int(coll.kid.fake_count[...]) == 0
