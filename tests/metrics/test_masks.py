"""Masks, sample weights and empty batches on every stateful metric (the eval-loop rule).

A padded last batch with its padding masked must give the state of the unpadded batch: eagerly,
under ``nnx.jit`` with one fixed batch shape, and inside ``nnx.MultiMetric``. Padded rows hold
NaN (floats) or out-of-range values (integers), so a mask implemented as a product instead of a
select, or a check that looks at padded rows, fails here. Buffered metrics (KID, IS, PRDC,
retrieval) must match exactly, row for row; the others to float rounding (their masked path sums
per-row statistics in another order). Zero-row and all-masked batches are no-ops.

Every registered ``StatefulMetric`` has a case here (``test_every_stateful_metric_has_a_case``).
"""

from __future__ import annotations

import inspect
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.core import MetricState
from calibrax.core.base import StatefulMetric
from calibrax.core.registry import list_entries
from calibrax.learned import LPIPSMetric
from calibrax.learned._toy import ToyTrunk
from calibrax.metrics import CMMD
from calibrax.metrics import FrechetDistance
from calibrax.metrics import GenerativeMetrics
from calibrax.metrics import InceptionScore
from calibrax.metrics import KernelDistance
from calibrax.metrics import PrecisionRecall
from calibrax.metrics import StreamingAccuracy
from calibrax.metrics import StreamingBrierScore
from calibrax.metrics import StreamingConfusionMatrix
from calibrax.metrics import StreamingExpectedCalibrationError
from calibrax.metrics import StreamingF1Score
from calibrax.metrics import StreamingLogLoss
from calibrax.metrics import StreamingMaximumCalibrationError
from calibrax.metrics import StreamingMeanAbsoluteError
from calibrax.metrics import StreamingMeanAbsolutePercentageError
from calibrax.metrics import StreamingMeanSquaredError
from calibrax.metrics import StreamingMSSSIM
from calibrax.metrics import StreamingNegativeLogLikelihood
from calibrax.metrics import StreamingPearsonCorrelation
from calibrax.metrics import StreamingPrecision
from calibrax.metrics import StreamingPSNR
from calibrax.metrics import StreamingR2Score
from calibrax.metrics import StreamingRecall
from calibrax.metrics import StreamingReliabilityDiagram
from calibrax.metrics import StreamingRetrieval
from calibrax.metrics import StreamingRootMeanSquaredError
from calibrax.metrics import StreamingSSIM
from calibrax.metrics import StreamingTopKAccuracy

BATCH = 8  # the fixed batch shape of the jitted step
SIZES = (8, 8, 5)  # the last batch is padded with 3 rows


def _probs(rng, n, c=4):
    x = rng.random((n, c)) + 0.05
    return x / x.sum(1, keepdims=True)


def _labels(rng, n, c=4):
    return rng.integers(0, c, n).astype(np.int32)


# name -> (factory, batch maker rng, n -> (arrays dict), static keywords per stream)
def _pt(p, t):
    return {"predictions": p, "targets": t}


CASES = {
    "StreamingMeanSquaredError": (
        StreamingMeanSquaredError,
        lambda r, n: _pt(r.random(n), r.random(n)),
    ),
    "StreamingRootMeanSquaredError": (
        StreamingRootMeanSquaredError,
        lambda r, n: _pt(r.random((n, 2)), r.random((n, 2))),
    ),
    "StreamingMeanAbsoluteError": (
        StreamingMeanAbsoluteError,
        lambda r, n: _pt(r.random(n), r.random(n)),
    ),
    "StreamingMeanAbsolutePercentageError": (
        StreamingMeanAbsolutePercentageError,
        lambda r, n: _pt(r.random(n), 1.0 + r.random(n)),
    ),
    "StreamingR2Score": (StreamingR2Score, lambda r, n: _pt(r.random(n), r.random(n))),
    "StreamingPearsonCorrelation": (
        StreamingPearsonCorrelation,
        lambda r, n: _pt(r.random(n), r.random(n)),
    ),
    "StreamingAccuracy": (StreamingAccuracy, lambda r, n: _pt(r.random((n, 4)), _labels(r, n))),
    "StreamingTopKAccuracy": (
        lambda: StreamingTopKAccuracy(k=2),
        lambda r, n: _pt(r.random((n, 4)), _labels(r, n)),
    ),
    "StreamingLogLoss": (StreamingLogLoss, lambda r, n: _pt(_probs(r, n), _labels(r, n))),
    "StreamingConfusionMatrix": (
        lambda: StreamingConfusionMatrix(num_classes=4),
        lambda r, n: _pt(r.random((n, 4)), _labels(r, n)),
    ),
    "StreamingPrecision": (
        lambda: StreamingPrecision(num_classes=4),
        lambda r, n: _pt(r.random((n, 4)), _labels(r, n)),
    ),
    "StreamingRecall": (
        lambda: StreamingRecall(num_classes=4),
        lambda r, n: _pt(r.random((n, 4)), _labels(r, n)),
    ),
    "StreamingF1Score": (
        lambda: StreamingF1Score(num_classes=4),
        lambda r, n: _pt(r.random((n, 4)), _labels(r, n)),
    ),
    "StreamingExpectedCalibrationError": (
        lambda: StreamingExpectedCalibrationError(n_bins=5),
        lambda r, n: _pt(_probs(r, n), _labels(r, n)),
    ),
    "StreamingMaximumCalibrationError": (
        lambda: StreamingMaximumCalibrationError(n_bins=5),
        lambda r, n: _pt(_probs(r, n), _labels(r, n)),
    ),
    "StreamingReliabilityDiagram": (
        lambda: StreamingReliabilityDiagram(n_bins=5),
        lambda r, n: _pt(_probs(r, n), _labels(r, n)),
    ),
    "StreamingBrierScore": (StreamingBrierScore, lambda r, n: _pt(_probs(r, n), _labels(r, n))),
    "StreamingNegativeLogLikelihood": (
        StreamingNegativeLogLikelihood,
        lambda r, n: _pt(r.normal(size=(n, 4)), _labels(r, n)),
    ),
    "StreamingPSNR": (
        lambda: StreamingPSNR(data_range=1.0),
        lambda r, n: _pt(r.random((n, 6, 6, 3)), r.random((n, 6, 6, 3))),
    ),
    "StreamingSSIM": (
        lambda: StreamingSSIM(data_range=1.0),
        lambda r, n: _pt(r.random((n, 11, 11, 1)), r.random((n, 11, 11, 1))),
    ),
    "StreamingMSSSIM": (
        lambda: StreamingMSSSIM(data_range=1.0, betas=(0.5, 0.5)),
        lambda r, n: _pt(r.random((n, 22, 22, 1)), r.random((n, 22, 22, 1))),
    ),
    "StreamingRetrieval": (
        lambda: StreamingRetrieval(max_samples=32, dim=3),
        lambda r, n: {"embeddings": r.normal(size=(n, 3)), "labels": _labels(r, n, 3)},
    ),
    "FrechetDistance": (
        lambda: FrechetDistance(backbone=None, num_features=3),
        lambda r, n: {"features": r.normal(size=(n, 3))},
    ),
    "KernelDistance": (
        lambda: KernelDistance(
            backbone=None, num_features=3, max_samples=32, subsets=3, subset_size=6
        ),
        lambda r, n: {"features": r.normal(size=(n, 3))},
    ),
    "CMMD": (
        lambda: CMMD(backbone=None, num_features=3, max_samples=32, block_size=8),
        lambda r, n: {"features": r.normal(size=(n, 3))},
    ),
    "PrecisionRecall": (
        lambda: PrecisionRecall(backbone=None, num_features=3, max_samples=32, k=2),
        lambda r, n: {"features": r.normal(size=(n, 3))},
    ),
    "InceptionScore": (
        lambda: InceptionScore(backbone=None, num_classes=5, max_samples=32, splits=2),
        lambda r, n: {"logits": r.normal(size=(n, 5))},
    ),
    "GenerativeMetrics": (
        lambda: GenerativeMetrics(
            backbone=None,
            num_features=3,
            num_classes=4,
            max_samples=32,
            metrics={
                "fid": {},
                "kid": {"subsets": 3, "subset_size": 6},
                "is": {"splits": 2},
                "prdc": {"k": 2},
            },
        ),
        lambda r, n: {"features": r.normal(size=(n, 3)), "logits": r.normal(size=(n, 4))},
    ),
    "LPIPSMetric": (
        lambda: LPIPSMetric(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False),
        lambda r, n: _pt(r.random((n, 16, 16, 3)), r.random((n, 16, 16, 3))),
    ),
}
BUFFERED = {"StreamingRetrieval", "KernelDistance", "PrecisionRecall", "InceptionScore", "CMMD"}
TWO_SIDED = {"FrechetDistance", "KernelDistance", "PrecisionRecall", "GenerativeMetrics", "CMMD"}


def test_every_stateful_metric_has_a_case():
    registered = {
        e.name
        for e in list_entries()
        if inspect.isclass(e.obj) and issubclass(e.obj, StatefulMetric)
    }
    assert registered <= set(CASES), sorted(registered - set(CASES))


def _garbage(x: np.ndarray, rows: int) -> np.ndarray:
    """``rows`` padding rows that break any metric that reads them."""
    shape = (rows, *x.shape[1:])
    if np.issubdtype(x.dtype, np.floating):
        return np.full(shape, np.nan, x.dtype)
    return np.full(shape, 99, x.dtype)


def _batches(name: str):
    """Unpadded batches and their padded, masked versions, one list per side."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    make = CASES[name][1]
    sides = (True, False) if name in TWO_SIDED else (None,)
    out = []
    for real in sides:
        plain, padded = [], []
        for n in SIZES:
            arrays = make(rng, n)
            plain.append(arrays)
            pad = BATCH - n
            padded.append(
                (
                    {k: np.concatenate([v, _garbage(v, pad)]) for k, v in arrays.items()},
                    np.arange(BATCH) < n,
                )
            )
        out.append((real, plain, padded))
    return out


def _static(real):
    return {} if real is None else {"real": real}


def _state(metric) -> dict:
    return {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(metric, MetricState))}


def _assert_same(name, got, want):
    a, b = _state(got), _state(want)
    assert a.keys() == b.keys()
    for key in a:
        if name in BUFFERED or np.issubdtype(a[key].dtype, np.integer):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")
        else:
            # float32 per-row sums in another order than the batch sum: float32 rounding.
            np.testing.assert_allclose(
                a[key], b[key], rtol=2e-5, atol=1e-6, err_msg=f"{name} {key}"
            )
    for key, value in got.compute().items():
        np.testing.assert_allclose(
            np.asarray(value), np.asarray(want.compute()[key]), rtol=2e-5, atol=1e-6
        )


@nnx.jit(static_argnums=3)
def _step(metric, arrays, mask, real):
    metric.update(**arrays, mask=mask, **_static(real))


@pytest.mark.parametrize("name", sorted(CASES))
def test_padded_masked_batches_equal_unpadded(name):
    factory = CASES[name][0]
    reference, eager, jitted = factory(), factory(), factory()
    for real, plain, padded in _batches(name):
        for arrays, (pad_arrays, mask) in zip(plain, padded, strict=True):
            reference.update(**arrays, **_static(real))
            eager.update(**pad_arrays, mask=mask, **_static(real))
            _step(jitted, pad_arrays, jnp.asarray(mask), real)
        # All-masked and zero-row batches are no-ops, eagerly and under jit.
        nothing = {k: v[:0] for k, v in plain[0].items()}
        eager.update(**nothing, **_static(real))
        eager.update(**pad_arrays, mask=np.zeros(BATCH, bool), **_static(real))
        _step(jitted, pad_arrays, jnp.zeros(BATCH, bool), real)
    _assert_same(name, eager, reference)
    _assert_same(name, jitted, reference)


def test_integer_mask_and_multimetric():
    """``nnx.MultiMetric`` passes ``mask`` to every metric; a 0/1 integer mask works like bool."""
    rng = np.random.default_rng(0)
    p, t = rng.random((8, 4)), _labels(rng, 8)
    p[6:] = np.nan
    t[6:] = 99
    mask = np.arange(8) < 6

    def multi():
        return nnx.MultiMetric(
            accuracy=StreamingAccuracy(),
            ece=StreamingExpectedCalibrationError(n_bins=5),
        )

    masked, plain = multi(), multi()
    q = p / np.where(np.isnan(p), 1.0, p.sum(1, keepdims=True))
    nnx.jit(lambda m, p, t, k: m.update(predictions=p, targets=t, mask=k))(
        masked, jnp.asarray(q), jnp.asarray(t), jnp.asarray(mask)
    )
    plain.update(predictions=q[:6], targets=t[:6])
    got, want = masked.compute(), plain.compute()
    for key in ("accuracy", "ece"):
        for inner, value in got[key].items():
            np.testing.assert_allclose(value, want[key][inner], rtol=1e-6, err_msg=key)
    # A 0/1 integer mask works like the bool one.
    alone = StreamingAccuracy()
    alone.update(predictions=q, targets=t, mask=mask.astype(np.int32))
    np.testing.assert_allclose(alone.compute()["accuracy"], want["accuracy"]["accuracy"])


def test_sample_weight_is_a_weighted_mean():
    """Averages take ``sample_weight``: the result is sum(w * loss) / sum(w), checked by hand."""
    rng = np.random.default_rng(1)
    p, t = rng.random(10), rng.random(10)
    w = rng.random(10)
    metric = StreamingMeanSquaredError(dtype=jnp.float64)
    metric.update(predictions=p[:4], targets=t[:4], sample_weight=w[:4])
    nnx.jit(lambda m, p, t, w, k: m.update(predictions=p, targets=t, sample_weight=w, mask=k))(
        metric,
        jnp.asarray(np.concatenate([p[4:], [np.nan] * 2])),
        jnp.asarray(np.concatenate([t[4:], [np.nan] * 2])),
        jnp.asarray(np.concatenate([w[4:], [np.nan] * 2])),
        jnp.asarray(np.arange(8) < 6),
    )
    want = np.sum(w * (p - t) ** 2) / np.sum(w)
    np.testing.assert_allclose(metric.compute()["mean_squared_error"], want, rtol=1e-12)
    assert int(metric.count[...]) == 10
    # Several elements per row: each element of a row gets the row's weight.
    p2, t2 = rng.random((5, 3)), rng.random((5, 3))
    metric = StreamingMeanAbsoluteError(dtype=jnp.float64)
    metric.update(predictions=p2, targets=t2, sample_weight=w[:5])
    want = np.sum(w[:5, None] * np.abs(p2 - t2)) / (3 * np.sum(w[:5]))
    np.testing.assert_allclose(metric.compute()["mean_absolute_error"], want, rtol=1e-12)
    # A learned distance is an average too.
    lpips = LPIPSMetric(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False)
    x, y = rng.random((4, 16, 16, 3)), rng.random((4, 16, 16, 3))
    lpips.update(predictions=x, targets=y, sample_weight=w[:4])
    d = np.asarray(lpips.distance(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(
        lpips.compute()[lpips.name], np.sum(w[:4] * d) / np.sum(w[:4]), rtol=1e-5
    )


def test_bad_weights_under_jit_give_nan():
    metric = StreamingMeanSquaredError()
    nnx.jit(lambda m, w: m.update(predictions=jnp.ones(3), targets=jnp.zeros(3), sample_weight=w))(
        metric, jnp.array([1.0, -1.0, 1.0])
    )
    assert np.isnan(metric.compute()["mean_squared_error"])


def test_bad_masks_are_refused_with_the_exact_message():
    metric = StreamingAccuracy()
    p, t = np.random.default_rng(0).random((4, 3)), np.array([0, 1, 2, 0])
    cases = [
        (
            ValueError,
            "expected `mask` to have shape (4,) (one per row), got (3,)",
            np.ones(3, bool),
        ),
        (
            TypeError,
            "expected `mask` to have dtype bool (or integer 0/1), got float64; pass per-row "
            "weights as `sample_weight`",
            np.ones(4),
        ),
        (ValueError, "expected `mask` to hold only 0 and 1, got 3", np.array([1, 0, 3, 1])),
    ]
    for exc, msg, mask in cases:
        with pytest.raises(exc, match=re.escape(msg)):
            metric.update(predictions=p, targets=t, mask=mask)
    with pytest.raises(ValueError, match=re.escape("expected `sample_weight` to be >= 0, got -1")):
        metric.update(predictions=p, targets=t, sample_weight=np.array([1.0, -1.0, 1.0, 1.0]))
    fid = FrechetDistance(backbone=None, num_features=3)
    with pytest.raises(ValueError, match=re.escape("expected `mask` to have shape (2,)")):
        fid.update(features=np.ones((2, 3)), real=True, mask=np.ones(5, bool))
    # Nothing above changed the state.
    assert int(metric.count[...]) == 0 and int(fid.real_count[...]) == 0


def test_eager_checks_see_only_kept_rows_and_still_catch_bad_kept_rows():
    metric = StreamingLogLoss()
    p = _probs(np.random.default_rng(0), 4)
    p[3] = np.nan
    t = np.array([0, 1, 2, 99])
    metric.update(predictions=p, targets=t, mask=np.array([1, 1, 1, 0]))
    with pytest.raises(ValueError, match="finite"):
        metric.update(predictions=p, targets=t, mask=np.array([1, 1, 1, 1]))
    assert int(metric.count[...]) == 3


def test_empty_shards_sync_through_the_multihost_pattern_shape():
    """``process_shard`` can give a host zero rows: update with them is a no-op, and merging that
    host's (empty) state changes nothing (what ``sync`` does across processes)."""
    full, empty = (FrechetDistance(backbone=None, num_features=3) for _ in range(2))
    x = np.random.default_rng(2).normal(size=(6, 3))
    full.update(features=x, real=True)
    empty.update(features=x[6:], real=True)
    before = _state(full)
    full.merge(empty)
    for key, value in _state(full).items():
        np.testing.assert_array_equal(value, before[key])


def test_masked_update_keeps_buffer_rows_in_order():
    metric = KernelDistance(backbone=None, num_features=2, max_samples=8, subsets=1, subset_size=2)
    x = np.arange(10.0).reshape(5, 2)
    metric.update(features=x, real=True, mask=np.array([True, False, True, False, True]))
    np.testing.assert_array_equal(metric.real_features[...][:3], x[[0, 2, 4]])
    assert int(metric.real_count[...]) == 3


@pytest.mark.parametrize("how", ["sharded_update", "shard_map_update"])
def test_masks_split_over_devices_with_the_batch(how):
    """``mask`` is an array keyword: the sharded updates split it with the batch."""
    from calibrax import parallel

    mesh = parallel.data_mesh()
    n = mesh.shape["data"]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2 * n, 3))
    keep = np.arange(2 * n) % 3 != 0
    padded = np.where(keep[:, None], x, np.nan)
    for cls in (
        lambda: FrechetDistance(backbone=None, num_features=3),
        lambda: KernelDistance(backbone=None, num_features=3, max_samples=32, subset_size=2),
    ):
        sharded, plain = cls(), cls()
        getattr(parallel, how)(sharded, mesh, features=padded, mask=keep, real=True)
        plain.update(features=x[keep], real=True)
        a, b = _state(sharded), _state(plain)
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-12, err_msg=key)
