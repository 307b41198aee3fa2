"""The tier-1 metrics with jax_enable_x64 OFF, as in a JAX training script.

The suite runs with x64 on (conftest), so the x64-off side runs in a fresh process
(``_x64_case.py``) and prints its values; this test recomputes the references in float64:
- FID (d = 2048, n = 3000 per side, FID ~0.01, ~1 and ~100): scipy in float64 on the same
  float32 features (means, ``np.cov``, Cholesky and ``scipy.linalg.eigvalsh``), within the bound
  the docstring states: 1e-3 absolute + 1e-5 relative, both for ``compute()`` called eagerly
  and under ``nnx.jit``;
- KID, PRDC and IS with float32 buffers: against the same metrics in float64 (x64 on here).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from calibrax.metrics import InceptionScore
from calibrax.metrics import KernelDistance
from calibrax.metrics import PrecisionRecall

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _x64_case as case

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    lower = scipy.linalg.cholesky(s1, lower=True)
    eigenvalues = scipy.linalg.eigvalsh(lower.T @ s2 @ lower)
    diff = a.mean(0) - b.mean(0)
    return float(
        diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    )


@pytest.fixture(scope="module")
def x64_off_values() -> dict:
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, str(pathlib.Path(__file__).parent / "_x64_case.py")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_fid_without_x64_is_within_the_stated_bound_of_scipy_float64(x64_off_values):
    assert x64_off_values["dtype"] == "float32"  # dtype=None follows x64
    x = case.base_features()
    for i, target in enumerate(case.TARGETS):
        want = _scipy_fid(x, case.shifted(x, target))
        assert 0.5 * target < want < 2 * target  # the three regimes are what they claim
        bound = 1e-3 + 1e-5 * abs(want)
        for key in ("fid", "fid_jit"):
            got = x64_off_values[key][i]
            assert abs(got - want) <= bound, (key, target, got, want)
            # Measured: |error| < 1e-6 for FID <= 1 and < 1e-6 relative at 100.
            assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), (key, target, got, want)


def test_buffered_metrics_without_x64_match_float64(x64_off_values):
    real, fake, logits = case.small_features()
    kid = KernelDistance(
        backbone=None,
        num_features=64,
        max_samples=300,
        subsets=20,
        subset_size=100,
        dtype=jnp.float64,
    )
    prdc = PrecisionRecall(backbone=None, num_features=64, max_samples=300, k=5, dtype=jnp.float64)
    isc = InceptionScore(
        backbone=None, num_classes=10, max_samples=300, splits=5, dtype=jnp.float64
    )
    for metric in (kid, prdc):
        metric.update(features=real.astype(np.float64), real=True)
        metric.update(features=fake.astype(np.float64), real=False)
    isc.update(logits=logits.astype(np.float64))
    want = {}
    for metric in (kid, prdc, isc):
        want.update({k: float(v) for k, v in metric.compute().items()})
    # float32 kernels (O(subset_size) terms each of size ~1): a few float32 ulps of the mean
    # kernel value, relative to KID ~0.14.
    np.testing.assert_allclose(x64_off_values["kid_mean"], want["kid_mean"], rtol=1e-5)
    np.testing.assert_allclose(x64_off_values["kid_std"], want["kid_std"], rtol=1e-4)
    # PRDC counts neighbourhood memberships: the same decisions in float32 here (no ties).
    for key in ("precision", "recall", "density", "coverage"):
        np.testing.assert_allclose(x64_off_values[key], want[key], rtol=1e-6, err_msg=key)
    for key in ("inception_score_mean", "inception_score_std"):
        np.testing.assert_allclose(x64_off_values[key], want[key], rtol=1e-5, err_msg=key)
