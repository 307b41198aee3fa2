"""A covariance that is not one (asymmetric, or with clearly negative eigenvalues) is refused by
``frechet_distance``: a clear error eagerly, NaN under jit, never the clamped 0 it gave before
(``sigma = -I`` gave FID 0.000000). Rank-deficient sample covariances (fewer samples than
dimensions), whose zero eigenvalues come out slightly negative in floating point, still work."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calibrax.functional import frechet_distance
from calibrax.functional.fid import _frechet_numpy

D = 6
MU = np.zeros(D)


def _cov(n, seed, dtype=np.float64):
    x = np.random.default_rng(seed).normal(size=(n, D))
    return np.cov(x, rowvar=False).astype(dtype)


JITTED = jax.jit(frechet_distance)


@pytest.mark.parametrize(
    "sigma1, sigma2, message",
    [
        (
            -np.eye(D),
            np.eye(D),
            "expected `sigma1` to be positive semi-definite (a covariance), got the eigenvalue -1",
        ),
        (
            np.eye(D),
            np.diag([1.0] * (D - 1) + [-0.5]),
            "expected `sigma2` to be positive "
            "semi-definite (a covariance), got the eigenvalue -0.5",
        ),
        (
            np.eye(D) + np.triu(np.ones((D, D)), 1),
            np.eye(D),
            "expected `sigma1` to be symmetric (a covariance), got max |sigma1 - sigma1ᵀ| = 1",
        ),
    ],
)
def test_not_a_covariance_raises_eagerly_and_is_nan_under_jit(sigma1, sigma2, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        frechet_distance(MU, sigma1, MU, sigma2)
    assert np.isnan(float(JITTED(*map(jnp.asarray, (MU, sigma1, MU, sigma2)))))
    # The float64 host route used when x64 is off refuses it too.
    assert np.isnan(_frechet_numpy(MU, sigma1, MU, sigma2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_deficient_sample_covariances_still_work(dtype):
    # 4 samples in 6 dimensions: rank 3, with zero eigenvalues that round to +-tiny.
    s1, s2 = _cov(4, 0, dtype), _cov(4, 1, dtype)
    mu = MU.astype(dtype)
    value = float(frechet_distance(mu, s1, mu, s2))
    assert np.isfinite(value) and value > 0
    assert np.isfinite(float(JITTED(*map(jnp.asarray, (mu, s1, mu, s2)))))
    # float32 eigenvalues near 0 carry ~1e-7 absolute error, which sqrt turns into ~3e-4: the
    # float64 host route (x64 off) is the accurate one there.
    rtol = 1e-3 if dtype == np.float32 else 1e-6
    np.testing.assert_allclose(_frechet_numpy(mu, s1, mu, s2), value, rtol=rtol)
    # Same distribution: 0 up to rounding, not NaN.
    assert abs(float(frechet_distance(mu, s1, mu, s1))) < 1e-4
