"""2AFC score and JND mAP against numpy references of the paper's evaluation code."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calibrax.learned import jnd_map
from calibrax.learned import two_afc_score


def _np_2afc(d0, d1, h):
    return np.mean((d0 < d1) * (1 - h) + (d1 < d0) * h + (d1 == d0) * 0.5)


def _np_voc_ap(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])


def _np_jnd(ds, same):
    order = np.argsort(ds, kind="stable")
    s = same[order]
    tp = np.cumsum(s)
    fp = np.cumsum(1 - s)
    fn = s.sum() - tp
    return _np_voc_ap(tp / (tp + fn), tp / (tp + fp))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_afc_matches_reference_including_ties(seed):
    rng = np.random.default_rng(seed)
    d0 = rng.integers(0, 4, 64).astype(np.float32)  # small integers: many ties
    d1 = rng.integers(0, 4, 64).astype(np.float32)
    h = rng.random(64).astype(np.float32)
    # Identical float32 arithmetic on both sides; only the mean's summation order differs.
    np.testing.assert_allclose(float(two_afc_score(d0, d1, h)), _np_2afc(d0, d1, h), rtol=1e-6)
    np.testing.assert_allclose(
        float(jax.jit(two_afc_score)(d0, d1, h)), _np_2afc(d0, d1, h), rtol=1e-6
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jnd_map_matches_reference(seed):
    rng = np.random.default_rng(seed)
    ds = rng.random(100)
    same = rng.random(100)
    # float64 on both sides: agreement to rounding.
    np.testing.assert_allclose(float(jnd_map(ds, same)), _np_jnd(ds, same), rtol=1e-12)


def test_jnd_map_closed_forms():
    # Perfect ranking of hard labels: AP 1. Reversed ranking of one positive among four: 1/4.
    assert float(
        jnd_map(jnp.array([0.1, 0.2, 0.3, 0.4]), jnp.array([1.0, 1.0, 0.0, 0.0]))
    ) == pytest.approx(1.0)
    assert float(
        jnd_map(jnp.array([0.4, 0.3, 0.2, 0.1]), jnp.array([1.0, 0.0, 0.0, 0.0]))
    ) == pytest.approx(0.25)


def test_bad_input():
    d = jnp.ones(4)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `d0` and `d1` to have the same shape, got (4,) and (3,)"),
    ):
        two_afc_score(d, d[:3], d)
    with pytest.raises(
        ValueError, match=re.escape("expected `judge` to be in [0, 1], got values in [0, 2]")
    ):
        two_afc_score(d, d, jnp.array([0.0, 2.0, 1.0, 1.0]))
    with pytest.raises(
        ValueError, match=re.escape("expected `d0` to have 1 dims (examples), got shape (2, 2)")
    ):
        two_afc_score(d.reshape(2, 2), d.reshape(2, 2), d.reshape(2, 2))
    with pytest.raises(
        ValueError, match=re.escape("expected `d0` to be non-empty, got shape (0,)")
    ):
        two_afc_score(jnp.ones(0), jnp.ones(0), jnp.ones(0))
    with pytest.raises(
        ValueError, match=re.escape("expected `distances` to be finite, got 1 NaN and 0 Inf values")
    ):
        jnd_map(d.at[0].set(jnp.nan), d)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `same` to hold at least one positive judgment, got all zeros"),
    ):
        jnd_map(d, jnp.zeros(4))
    with pytest.raises(
        TypeError, match=re.escape("expected `d0` to have a floating dtype, got int32")
    ):
        two_afc_score(jnp.ones(4, jnp.int32), d, d)
