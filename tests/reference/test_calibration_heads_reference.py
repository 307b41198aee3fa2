"""Calibration heads against scipy, scikit-learn and netcal fits of the same objectives.

Matrix scaling and Dirichlet calibration are checked against a float64 scipy L-BFGS-B fit of the
same ODIR-regularised mean NLL, not against netcal: netcal 1.4 installs and imports here, but its
multiclass ``LogisticCalibration`` is vector scaling (element-wise) on ``log p`` and its
``BetaCalibration`` has neither ODIR nor the same parametrisation, so the definitions do not agree.
Vector scaling on log-probabilities without regularisation is netcal's ``LogisticCalibration``
exactly, and is checked against it (netcal minimises with finite-difference gradients, hence the
looser tolerance).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy.special import log_softmax
from sklearn.base import BaseEstimator
from sklearn.base import ClassifierMixin

from calibrax.learned import DirichletCalibration
from calibrax.learned import IsotonicCalibration
from calibrax.learned import MatrixScaling
from calibrax.learned import PlattScaling
from calibrax.learned import TemperatureScaling
from calibrax.learned import VectorScaling

N, K = 400, 5


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, K, N)
    logits = rng.normal(size=(N, K))
    logits[np.arange(N), labels] += 1.2
    logits = 2.5 * logits + rng.normal(size=K)  # overconfident, with a class bias
    return logits, labels


def _nll(logits, labels):
    return -np.mean(log_softmax(logits, axis=1)[np.arange(len(labels)), labels])


def test_temperature_matches_scipy(data):
    logits, labels = data
    head = TemperatureScaling(dtype=jnp.float64)
    head.fit(jnp.asarray(logits), jnp.asarray(labels))
    ref = optimize.minimize_scalar(
        lambda t: _nll(logits / t, labels), bounds=(0.05, 20.0), method="bounded",
        options={"xatol": 1e-12},
    )  # fmt: skip
    err = abs(float(head.temperature) - ref.x)
    assert err < 1e-5, (float(head.temperature), ref.x, err)


def _affine_reference(features, labels, off_l2, b_l2):
    """Float64 L-BFGS-B fit of softmax(F W^T + b) with ODIR, analytic gradient."""
    n, k = features.shape
    onehot = np.eye(k)[labels]
    off = 1.0 - np.eye(k)

    def fun(theta):
        w, b = theta[: k * k].reshape(k, k), theta[k * k :]
        z = features @ w.T + b
        logp = log_softmax(z, axis=1)
        loss = -np.mean(np.sum(onehot * logp, axis=1))
        loss += off_l2 * np.sum((w * off) ** 2) / (k * (k - 1)) + b_l2 * np.sum(b**2) / k
        dz = (np.exp(logp) - onehot) / n
        gw = dz.T @ features + 2 * off_l2 * w * off / (k * (k - 1))
        gb = dz.sum(0) + 2 * b_l2 * b / k
        return loss, np.concatenate([gw.ravel(), gb])

    theta0 = np.concatenate([np.eye(k).ravel(), np.zeros(k)])
    res = optimize.minimize(
        fun, theta0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15}
    )
    w, b = res.x[: k * k].reshape(k, k), res.x[k * k :]
    return lambda f: np.exp(log_softmax(f @ w.T + b, axis=1))


@pytest.mark.parametrize("cls", [MatrixScaling, DirichletCalibration])
def test_matrix_and_dirichlet_match_scipy_odir(data, cls):
    logits, labels = data
    head = cls(K, off_diagonal_l2=0.05, intercept_l2=0.02, dtype=jnp.float64)
    report = head.fit(jnp.asarray(logits), jnp.asarray(labels))
    assert report.nll_after < report.nll_before
    features = logits if cls is MatrixScaling else log_softmax(logits, axis=1)
    ref = _affine_reference(features, labels, 0.05, 0.02)
    err = np.max(np.abs(np.asarray(head(jnp.asarray(logits))) - ref(features)))
    assert err < 1e-6, err


def test_vector_scaling_on_log_probabilities_matches_netcal(data):
    netcal_scaling = pytest.importorskip("netcal.scaling")
    logits, labels = data
    logp = log_softmax(logits, axis=1)
    head = VectorScaling(K, dtype=jnp.float64)
    head.fit(jnp.asarray(logp), jnp.asarray(labels))
    ref = netcal_scaling.LogisticCalibration(method="mle")
    ref.fit(np.exp(logp), labels)
    err = np.max(np.abs(np.asarray(head(jnp.asarray(logp))) - ref.transform(np.exp(logp))))
    assert err < 1e-3, err


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=300) * 2, 1)  # rounded: ties for the isotonic fit
    labels = (rng.random(300) < 1 / (1 + np.exp(-(0.6 * scores - 0.4)))).astype(np.int64)
    return scores, labels


class _Scores(ClassifierMixin, BaseEstimator):
    """A fitted "classifier" whose decision function is its only feature."""

    def fit(self, x, y):
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, x):
        return np.asarray(x)[:, 0]

    def predict(self, x):
        return (self.decision_function(x) > 0).astype(np.int64)


def test_platt_matches_sklearn_sigmoid(binary):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    scores, labels = binary
    head = PlattScaling(dtype=jnp.float64)
    head.fit(jnp.asarray(scores), jnp.asarray(labels))
    ref = CalibratedClassifierCV(
        FrozenEstimator(_Scores().fit(scores[:, None], labels)), method="sigmoid", ensemble=False
    )
    ref.fit(scores[:, None], labels)
    sig = ref.calibrated_classifiers_[0].calibrators[0]
    # scikit-learn's sigmoid is 1 / (1 + exp(A s + B)): (A, B) = (-a, -b).
    assert abs(float(head.scale[...]) + sig.a_) < 1e-3, (float(head.scale[...]), -sig.a_)
    assert abs(float(head.shift[...]) + sig.b_) < 1e-3, (float(head.shift[...]), -sig.b_)
    grid = np.linspace(-6, 6, 25)
    np.testing.assert_allclose(
        head(jnp.asarray(grid)), ref.predict_proba(grid[:, None])[:, 1], atol=1e-4
    )


def test_isotonic_matches_sklearn(binary):
    from sklearn.isotonic import IsotonicRegression

    scores, labels = binary
    head = IsotonicCalibration(max_knots=512, dtype=jnp.float64)
    head.fit(jnp.asarray(scores), jnp.asarray(labels))
    ref = IsotonicRegression(out_of_bounds="clip").fit(scores, labels)
    grid = np.concatenate([scores, np.linspace(-9, 9, 101)])
    np.testing.assert_allclose(head(jnp.asarray(grid)), ref.predict(grid), rtol=1e-12, atol=1e-15)
