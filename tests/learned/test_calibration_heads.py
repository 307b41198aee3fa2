"""Post-hoc calibration heads: fitting, bad input, jit, gradients, checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from calibrax.io import restore_state
from calibrax.io import save_state
from calibrax.learned import DirichletCalibration
from calibrax.learned import IsotonicCalibration
from calibrax.learned import MatrixScaling
from calibrax.learned import PlattScaling
from calibrax.learned import TemperatureScaling
from calibrax.learned import VectorScaling

K = 4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, K, 300)
    logits = rng.normal(size=(300, K))
    logits[np.arange(300), labels] += 1.5
    # Overconfident logits: temperature scaling must cool them.
    return jnp.asarray(3.0 * logits, jnp.float32), jnp.asarray(labels, jnp.int32)


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=200)
    labels = (rng.random(200) < 1 / (1 + np.exp(-(0.5 * scores + 0.3)))).astype(np.int32)
    return jnp.asarray(scores, jnp.float32), jnp.asarray(labels)


def test_fit_lowers_nll_and_returns_probabilities(data):
    # The L-BFGS fits of every head are checked against references in
    # tests/reference/test_calibration_heads_reference.py; here the float32 path and the
    # minibatch loop.
    head = TemperatureScaling()
    report = head.fit(*data)
    assert report.nll_after < report.nll_before
    assert set(report.as_dict()) == {"nll_before", "nll_after", "ece_before", "ece_after"}
    assert float(head.temperature) > 1.0
    probs = head(data[0])
    assert probs.shape == data[0].shape
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)
    other = TemperatureScaling()
    other.fit(*data, batch_size=100, epochs=20, optimizer=optax.adam(0.1))
    assert abs(float(other.temperature) - float(head.temperature)) < 0.05


def test_binary_heads(binary):
    platt, iso = PlattScaling(), IsotonicCalibration(max_knots=256)
    assert np.isnan(np.asarray(iso(binary[0]))).all()  # unfitted
    platt.scale[...] = jnp.asarray(0.5, jnp.float32)
    assert iso.fit(*binary).ece_after < 1e-5
    for head in (platt, iso):
        p = np.asarray(head(binary[0]))
        assert p.shape == (200,) and (p >= 0).all() and (p <= 1).all()
    report = platt.evaluate(*binary)
    assert report.nll_after < report.nll_before


@pytest.mark.parametrize(
    ("logits", "labels", "error", "match"),
    [
        (np.zeros((10, K), np.int32), np.zeros(10, np.int32), TypeError,
         "expected `logits` to have a floating dtype, got int32"),
        (np.zeros((10, K), np.float32), np.zeros(10, np.float32), TypeError,
         "expected `labels` to have an integer dtype, got float32"),
        (np.zeros(10, np.float32), np.zeros(10, np.int32), ValueError,
         r"expected `logits` to have 2 dims \(batch, num_classes\), got shape \(10,\)"),
        (np.zeros((10, 3), np.float32), np.zeros(10, np.int32), ValueError,
         r"expected `logits` to have num_classes 4 on axis 1, got shape \(10, 3\)"),
        (np.zeros((10, K), np.float32), np.zeros(9, np.int32), ValueError,
         "expected `logits` and `labels` to have the same length, got 10 and 9"),
        (np.zeros((1, K), np.float32), np.zeros(1, np.int32), ValueError,
         "expected `logits` to have at least 2 samples, got 1"),
        (np.full((10, K), np.nan, np.float32), np.zeros(10, np.int32), ValueError,
         "expected `logits` to be finite, got 40 NaN and 0 Inf values"),
        (np.zeros((10, K), np.float32), np.full(10, 4, np.int32), ValueError,
         r"expected `labels` to be in \[0, 3\] \(num_classes=4\), got values in \[4, 4\]"),
    ],
)  # fmt: skip
def test_bad_input_exact_messages(logits, labels, error, match):
    with pytest.raises(error, match=match):
        MatrixScaling(K).fit(logits, labels)


def test_bad_binary_input_and_settings(binary):
    scores, labels = binary
    with pytest.raises(ValueError, match=r"expected `scores` to have 1 dims \(batch\)"):
        PlattScaling().fit(scores[:, None], labels)
    with pytest.raises(ValueError, match="expected `scores` to be finite, got 1 NaN and 0 Inf"):
        IsotonicCalibration().fit(scores.at[0].set(jnp.nan), labels)
    with pytest.raises(ValueError, match=r"expected `labels` to be in \[0, 1\] \(num_classes=2\)"):
        IsotonicCalibration().fit(scores, labels + 1)
    with pytest.raises(ValueError, match="expected the isotonic fit to need at most `max_knots`=2"):
        IsotonicCalibration(max_knots=2).fit(scores, labels)
    with pytest.raises(ValueError, match="expected `num_classes` to be at least 2, got 1"):
        DirichletCalibration(1)
    with pytest.raises(ValueError, match=r"expected `batch_size` to be at most the number of"):
        PlattScaling().fit(scores, labels, batch_size=1000)


def test_call_under_jit_matches_eager(data, binary):
    head = VectorScaling(K)
    head.bias[...] = jnp.arange(K, dtype=jnp.float32) / 10
    eager = head(data[0])
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(head, data[0]), eager, rtol=1e-6)
    iso = IsotonicCalibration(max_knots=64)
    iso.fit(*binary)
    np.testing.assert_allclose(jax.jit(lambda x: iso(x))(binary[0]), iso(binary[0]), rtol=1e-6)


def test_gradients_through_the_heads(data):
    head = DirichletCalibration(K, dtype=jnp.float64)
    head.weight[...] = jnp.eye(K) + 0.1 * jnp.ones((K, K))
    x = data[0][:5].astype(jnp.float64)
    check_grads(lambda z: head(z), (x,), order=1, modes=("rev",))
    temp = TemperatureScaling(dtype=jnp.float64)
    graphdef, params = nnx.split(temp, nnx.Param)
    y = data[1][:5]

    def nll(p):
        return nnx.merge(graphdef, p).objective(x, y)

    check_grads(nll, (params,), order=1, modes=("rev",))


def test_checkpoint_round_trip(tmp_path, binary):
    head = MatrixScaling(K)
    head.weight[...] = 2.0 * jnp.eye(K, dtype=jnp.float32)
    save_state(tmp_path / "m", head)
    back = restore_state(tmp_path / "m", nnx.eval_shape(lambda: MatrixScaling(K)))
    np.testing.assert_array_equal(back.weight[...], head.weight[...])
    iso = IsotonicCalibration(max_knots=128)
    iso.fit(*binary)
    save_state(tmp_path / "i", iso)
    again = restore_state(
        tmp_path / "i", nnx.eval_shape(lambda: IsotonicCalibration(max_knots=128))
    )
    np.testing.assert_array_equal(again(binary[0]), iso(binary[0]))
