"""Image metric classes: MetricProtocol shells and streaming (sum + count) metrics.

Streaming results must equal the function on all the images, for any split into batches, eagerly,
under ``nnx.jit`` and under ``jax.jit`` via ``nnx.split`` / ``nnx.merge``. The per-image scores are
the same function's; only the float32 summation order differs: 1e-6 relative.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.core import MetricProtocol
from calibrax.core import MetricState
from calibrax.core import StatefulMetricProtocol
from calibrax.functional import ms_ssim
from calibrax.functional import psnr
from calibrax.functional import ssim
from calibrax.metrics import MSSSIM
from calibrax.metrics import PSNR
from calibrax.metrics import SSIM
from calibrax.metrics import StreamingMSSSIM
from calibrax.metrics import StreamingPSNR
from calibrax.metrics import StreamingSSIM

BETAS3 = (0.3, 0.3, 0.4)  # three scales: 44-pixel images keep the streaming tests cheap


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(size=shape)
    p = np.clip(t + 0.15 * rng.normal(size=shape), 0.0, 1.0)
    return jnp.asarray(p, jnp.float32), jnp.asarray(t, jnp.float32)


CASES = {
    "psnr": (
        lambda: StreamingPSNR(data_range=1.0),
        lambda p, t: psnr(p, t, data_range=1.0),
        (6, 8, 8, 3),
    ),
    "ssim": (
        lambda: StreamingSSIM(data_range=1.0, padding="reflect"),
        lambda p, t: ssim(p, t, data_range=1.0, padding="reflect"),
        (6, 12, 12, 2),
    ),
    "ms_ssim": (
        lambda: StreamingMSSSIM(data_range=1.0, betas=BETAS3),
        lambda p, t: ms_ssim(p, t, data_range=1.0, betas=BETAS3),
        (6, 44, 44, 1),
    ),
}
# Uneven splits that reuse three batch shapes (6, 2, 4), so each mode compiles three times.
SPLITS = [(6,), (2, 4), (4, 2)]


def _batches(p, t, sizes):
    start = 0
    for size in sizes:
        yield p[start : start + size], t[start : start + size]
        start += size


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["eager", "nnx.jit", "jax.jit"])
def test_any_split_equals_the_whole(case, mode):
    make, fn, shape = CASES[case]
    p, t = _pair(shape)
    want = fn(p, t)

    @nnx.jit
    def nnx_step(metric, a, b):
        metric.update(predictions=a, targets=b)

    for sizes in SPLITS:
        metric = make()
        if mode == "jax.jit":
            graphdef, state = nnx.split(metric)

            @jax.jit
            def step(state, a, b, graphdef=graphdef):
                m = nnx.merge(graphdef, state)
                m.update(predictions=a, targets=b)
                return nnx.state(m)

            for a, b in _batches(p, t, sizes):
                state = step(state, a, b)
            metric = nnx.merge(graphdef, state)
        else:
            for a, b in _batches(p, t, sizes):
                if mode == "eager":
                    metric.update(predictions=a, targets=b)
                else:
                    nnx_step(metric, a, b)
        got = metric.compute()[metric.name]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{sizes}")
        assert int(metric.count[...]) == shape[0]


def test_merge_reset_and_state_filter():
    p, t = _pair((4, 12, 12, 3), seed=1)
    a, b = StreamingSSIM(data_range=1.0), StreamingSSIM(data_range=1.0)
    a.update(predictions=p[:3], targets=t[:3])
    b.update(predictions=p[3:], targets=t[3:])
    a.merge(b)
    np.testing.assert_allclose(a.compute()["ssim"], ssim(p, t, data_range=1.0), rtol=1e-6)
    state = nnx.state(a, MetricState)
    assert {str(k) for k in state.keys()} == {
        "total",
        "total_weight",
        "count",
        "rejected_rows",  # the base class's count of rows rejected under jit
        "rejected_rule",
    }
    a.reset()
    assert int(a.count[...]) == 0
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected at least 1 samples accumulated by `update` before `compute`, got 0"
        ),
    ):
        a.compute()
    with pytest.raises(TypeError, match=re.escape("expected `other` to be a StreamingSSIM, got")):
        a.merge(StreamingPSNR(data_range=1.0))


def test_compute_before_update_is_nan_under_jit():
    metric = StreamingPSNR(data_range=1.0)
    assert np.isnan(nnx.jit(lambda m: m.compute()["psnr"])(metric))


def test_update_ignores_other_keywords_and_validates():
    p, t = _pair((2, 8, 8, 1))
    metric = StreamingPSNR(data_range=None)
    metric.update(predictions=p, targets=t, labels=jnp.zeros(2), features=None)
    np.testing.assert_allclose(metric.compute()["psnr"], psnr(p, t, data_range=None), rtol=1e-6)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` and `targets` to have the same shape, "
            "got (2, 8, 8, 1) and (1, 8, 8, 1)"
        ),
    ):
        metric.update(predictions=p, targets=t[:1])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` to have height and width at least 11 (the SSIM window), "
            "got shape (2, 8, 8, 1)"
        ),
    ):
        StreamingSSIM(data_range=1.0).update(predictions=p, targets=t)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: StreamingSSIM(data_range=0.0),
            "expected `data_range` to be a positive number or a (low, high) pair with low < high, "
            "got 0.0",
        ),
        (
            lambda: SSIM(data_range=1.0, padding="zeros"),
            "expected `padding` to be one of 'valid', 'reflect', got 'zeros'",
        ),
        (
            lambda: MSSSIM(data_range=1.0, normalize="tanh"),
            "expected `normalize` to be one of 'relu', 'simple', None, got 'tanh'",
        ),
        (
            lambda: StreamingMSSSIM(data_range=1.0, betas=()),
            "expected `betas` to be a non-empty tuple of positive numbers, got ()",
        ),
        (
            lambda: PSNR(data_range=(0.0, float("inf"))),
            "expected `data_range` to be a positive number or a (low, high) pair with low < high, "
            "got (0.0, inf)",
        ),
    ],
)
def test_constructor_validation(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_metric_protocol_classes_equal_the_functions():
    p, t = _pair((2, 16, 16, 3), seed=2)
    for metric, want in [
        (PSNR(data_range=1.0), psnr(p, t, data_range=1.0)),
        (SSIM(data_range=1.0), ssim(p, t, data_range=1.0)),
        (
            SSIM(data_range=(0.0, 1.0), padding="reflect"),
            ssim(p, t, data_range=1.0, padding="reflect"),
        ),
    ]:
        assert isinstance(metric, MetricProtocol)
        assert metric.higher_is_better
        np.testing.assert_allclose(metric.compute(p, t), want, rtol=1e-7)
        np.testing.assert_allclose(jax.jit(metric)(p, t), want, rtol=1e-6)
    big = _pair((1, 44, 44, 1), seed=3)
    np.testing.assert_allclose(
        MSSSIM(data_range=1.0, betas=BETAS3)(*big),
        ms_ssim(*big, data_range=1.0, betas=BETAS3),
        rtol=1e-7,
    )
    assert MSSSIM(data_range=1.0).name == "ms_ssim"
    for cls in (StreamingPSNR, StreamingSSIM, StreamingMSSSIM):
        assert isinstance(cls(data_range=1.0), StatefulMetricProtocol)


def test_metric_protocol_validate_inputs():
    p, t = _pair((1, 12, 12, 1))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `targets` to be in [0, 0.5] (data_range=0.5), got values in [0"),
    ):
        SSIM(data_range=0.5).validate_inputs(p * 0.5, t)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `predictions` to have height and width at least 44 (the SSIM window at the "
            "coarsest of 3 scales), got shape (1, 12, 12, 1)"
        ),
    ):
        MSSSIM(data_range=1.0, betas=BETAS3).compute(p, t)
