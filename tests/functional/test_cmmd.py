"""CMMD and the RBF kernel of KID against the references' own arithmetic.

- CMMD: a numpy transcription of google-research ``cmmd/distance.py`` (its ``mmd``: plain means
  of the three RBF kernel matrices, sigma 10, scale 1000) in float64, to 1e-10 relative (ours
  sums the same terms blocked and with ``expm1``: only rounding differs, ~1e-13 measured).
- RBF KID: torch-fidelity 0.4's own ``kernel_rbf`` / ``mmd2`` / ``kid_features_to_metric``, loaded
  from the venv's ``reference-src`` without its torchvision-importing package ``__init__``.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calibrax.functional import cmmd
from calibrax.functional import kernel_inception_distance
from calibrax.functional.kid import rbf_kernel
from calibrax.functional.kid import unbiased_mmd2


def reference_cmmd(x, y, sigma=10.0, scale=1000.0):
    """google-research cmmd/distance.py ``mmd``, transcribed to numpy (same expansion)."""
    x_sq = np.diag(x @ x.T)
    y_sq = np.diag(y @ y.T)
    gamma = 1.0 / (2 * sigma**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return scale * (k_xx + k_yy - 2 * k_xy)


def unbiased_loop(x, y, sigma=10.0, scale=1000.0):
    """The unbiased MMD² as a hand-written double loop over pairs."""

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return scale * (kxx + kyy - 2 * kxy)


def _unit(rng, n, d, shift=0.0):
    v = rng.normal(size=(n, d)) + shift
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("n", "m", "d", "block"),
    [(50, 70, 16, 1024), (129, 257, 5, 32), (64, 64, 8, 16), (300, 41, 12, 100)],
)
def test_cmmd_matches_the_reference_code_in_float64(n, m, d, block):
    rng = np.random.default_rng(n * m)
    x, y = _unit(rng, n, d), _unit(rng, m, d, shift=0.4)
    got = float(cmmd(jnp.asarray(x), jnp.asarray(y), block_size=block))
    assert got == pytest.approx(reference_cmmd(x, y), rel=1e-10)


def test_cmmd_on_unnormalized_embeddings_and_other_sigma_scale():
    rng = np.random.default_rng(3)
    x, y = 3.0 * rng.normal(size=(40, 6)), 3.0 * rng.normal(size=(33, 6)) + 1.0
    got = float(cmmd(jnp.asarray(x), jnp.asarray(y), sigma=4.0, scale=1.0, block_size=16))
    assert got == pytest.approx(reference_cmmd(x, y, sigma=4.0, scale=1.0), rel=1e-10)


def test_unbiased_option_drops_the_diagonals():
    rng = np.random.default_rng(4)
    x, y = _unit(rng, 13, 4), _unit(rng, 17, 4, shift=0.3)
    got = float(cmmd(jnp.asarray(x), jnp.asarray(y), unbiased=True, block_size=5))
    assert got == pytest.approx(unbiased_loop(x, y), rel=1e-10)


def test_identical_sets_give_zero_and_the_distance_is_symmetric():
    rng = np.random.default_rng(5)
    x, y = jnp.asarray(_unit(rng, 30, 8)), jnp.asarray(_unit(rng, 20, 8, shift=0.5))
    assert abs(float(cmmd(x, x, block_size=7))) < 1e-12
    assert float(cmmd(x, y)) == pytest.approx(float(cmmd(y, x)), rel=1e-12)


def test_float32_keeps_its_digits():
    # The three kernel means sit near 1 and MMD² is their small difference. Summing k - 1
    # (expm1) removes the ones, so float32 loses only the digits of the ~0.01-sized excesses:
    # 1.8e-5 relative here, where the reference's own float32 arithmetic is off by 1e-3.
    rng = np.random.default_rng(6)
    x, y = _unit(rng, 500, 64), _unit(rng, 400, 64, shift=0.05)
    truth = reference_cmmd(x, y)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    got = float(cmmd(jnp.asarray(x32), jnp.asarray(y32), block_size=128))
    assert got == pytest.approx(truth, rel=1e-4)
    assert abs(got - truth) < 0.1 * abs(reference_cmmd(x32, y32) - truth)


def test_cmmd_under_jit_and_nan_input_gives_nan():
    rng = np.random.default_rng(7)
    x, y = jnp.asarray(_unit(rng, 20, 4)), jnp.asarray(_unit(rng, 20, 4, shift=0.3))
    jitted = jax.jit(cmmd)
    assert float(jitted(x, y)) == pytest.approx(reference_cmmd(np.asarray(x), np.asarray(y)))
    assert np.isnan(float(jitted(x.at[3, 1].set(jnp.nan), y)))
    assert np.isnan(float(jitted(x, y.at[0, 0].set(jnp.inf))))


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "message"),
    [
        (
            np.zeros((4,)),
            np.zeros((4, 2)),
            {},
            ValueError,
            "expected `x` to have 2 dims (samples, features), got shape (4,)",
        ),
        (
            np.zeros((4, 2), np.int32),
            np.zeros((4, 2)),
            {},
            TypeError,
            "expected `x` to have a floating dtype, got int32",
        ),
        (
            np.zeros((4, 2)),
            np.zeros((1, 2)),
            {},
            ValueError,
            "expected `y` to have at least 2 samples, got 1",
        ),
        (
            np.zeros((4, 2)),
            np.zeros((4, 3)),
            {},
            ValueError,
            "expected `x` and `y` to have the same embedding dimension, got 2 and 3",
        ),
        (
            np.full((4, 2), np.nan),
            np.zeros((4, 2)),
            {},
            ValueError,
            "expected `x` to be finite, got 8 NaN and 0 Inf values",
        ),
        (
            np.zeros((4, 2)),
            np.zeros((4, 2)),
            {"sigma": 0.0},
            ValueError,
            "expected `sigma` to be a positive finite number, got 0.0",
        ),
        (
            np.zeros((4, 2)),
            np.zeros((4, 2)),
            {"scale": -1},
            ValueError,
            "expected `scale` to be a positive finite number, got -1",
        ),
        (
            np.zeros((4, 2)),
            np.zeros((4, 2)),
            {"unbiased": 1},
            ValueError,
            "expected `unbiased` to be a bool, got 1",
        ),
        (
            np.zeros((4, 2)),
            np.zeros((4, 2)),
            {"block_size": 0},
            ValueError,
            "expected `block_size` to be a positive integer, got 0",
        ),
    ],
)
def test_cmmd_bad_input(x, y, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        cmmd(jnp.asarray(x), jnp.asarray(y), **kwargs)


# --- RBF KID against torch-fidelity -----------------------------------------------------------


@pytest.fixture(scope="module")
def torch_fidelity_kid():
    """torch-fidelity's metric_kid module, without the package __init__ (which needs torchvision)."""
    source = Path(sys.prefix) / "reference-src" / "torch_fidelity"
    if not (source / "metric_kid.py").is_file():
        pytest.fail(f"torch-fidelity is not installed beside the venv ({source}): run `make venv`")
    # Imported first, outside the patched sys.modules: patch.dict would unload them on exit, and
    # torch's C extension cannot be imported twice.
    import torch  # noqa: F401
    import tqdm  # noqa: F401

    package = types.ModuleType("torch_fidelity")
    package.__path__ = [str(source)]
    utils = types.ModuleType("torch_fidelity.utils")
    utils.__getattr__ = lambda name: None  # feature-extractor helpers KID's maths never calls
    with mock.patch.dict(sys.modules, {"torch_fidelity": package, "torch_fidelity.utils": utils}):
        return importlib.import_module("torch_fidelity.metric_kid")


def test_rbf_kernel_matches_torch_fidelity(torch_fidelity_kid):
    rng = np.random.default_rng(8)
    x, y = 4.0 * rng.normal(size=(9, 5)), 4.0 * rng.normal(size=(7, 5))
    want = torch_fidelity_kid.kernel_rbf(x, y, kid_kernel_rbf_sigma=3.0)
    got = np.asarray(rbf_kernel(jnp.asarray(x), jnp.asarray(y), sigma=3.0))
    np.testing.assert_allclose(got, want, rtol=1e-13)


@pytest.mark.parametrize("m", [12, 600])  # 600 rows: the blocked off-diagonal path
def test_rbf_unbiased_mmd2_matches_torch_fidelity(torch_fidelity_kid, m):
    rng = np.random.default_rng(m)
    x, y = 6.0 * rng.normal(size=(m, 4)), 6.0 * rng.normal(size=(m, 4)) + 0.5
    kw = {"kid_kernel": "rbf", "kid_kernel_rbf_sigma": 10}
    want = torch_fidelity_kid.kernel_mmd(x, y, **kw)
    got = float(unbiased_mmd2(jnp.asarray(x), jnp.asarray(y), kernel="rbf", sigma=10.0))
    assert got == pytest.approx(want, rel=1e-10)


def test_rbf_kid_of_whole_sets_matches_torch_fidelity(torch_fidelity_kid):
    # One subset of every row: the draw order cannot matter, so the numbers must be the same.
    import torch

    rng = np.random.default_rng(9)
    real, fake = 8.0 * rng.normal(size=(30, 6)), 8.0 * rng.normal(size=(30, 6)) + 1.0
    want = torch_fidelity_kid.kid_features_to_metric(
        torch.from_numpy(real),
        torch.from_numpy(fake),
        kid_subsets=1,
        kid_subset_size=30,
        kid_kernel="rbf",
        kid_kernel_rbf_sigma=10,
        verbose=False,
    )
    mean, std = kernel_inception_distance(
        jnp.asarray(real), jnp.asarray(fake), subsets=1, subset_size=30, kernel="rbf"
    )
    assert float(mean) == pytest.approx(want["kernel_inception_distance_mean"], rel=1e-10)
    assert float(std) == 0.0 == want["kernel_inception_distance_std"]


def test_rbf_kid_subset_and_whole_buffer_paths_agree():
    from calibrax.functional.kid import kid_from_buffers

    rng = np.random.default_rng(10)
    real, fake = jnp.asarray(rng.normal(size=(24, 3))), jnp.asarray(rng.normal(size=(21, 3)))
    settings = {
        "subsets": 3,
        "subset_size": 8,
        "degree": 3,
        "gamma": None,
        "coef": 1.0,
        "seed": 1,
        "dtype": np.float64,
        "kernel": "rbf",
        "sigma": 2.0,
    }
    a = kid_from_buffers(real, 24, fake, 21, **settings, method="subsets")
    b = kid_from_buffers(real, 24, fake, 21, **settings, method="buffers")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel": "linear"}, "expected `kernel` to be one of ('poly', 'rbf'), got 'linear'"),
        (
            {"kernel": "rbf", "sigma": -2.0},
            "expected `sigma` to be a positive finite number, got -2.0",
        ),
        (
            {"kernel": "rbf", "sigma": float("inf")},
            "expected `sigma` to be a positive finite number, got inf",
        ),
    ],
)
def test_kid_kernel_settings_are_checked(kwargs, message):
    x = jnp.ones((6, 2))
    with pytest.raises(ValueError, match=re.escape(message)):
        kernel_inception_distance(x, x, subsets=2, subset_size=3, **kwargs)
