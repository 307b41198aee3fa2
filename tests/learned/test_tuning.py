"""Fine-tuning the trunk (the paper's "tune", ``LPIPS(tune=True)``) and its opt-in machinery.

``unfreeze`` / ``freeze`` swap a module's weight types in place; a tuned trunk gets correct
gradients, is trained by the same Adam as the heads (or its own ``trunk_lr``), is saved with the
heads and resumes exactly; a frozen trunk never moves.
"""

import re
import shutil

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import optax
import pytest
from flax import nnx

from calibrax.backbones import AlexNet
from calibrax.backbones import freeze
from calibrax.backbones import module_state_dict
from calibrax.backbones import unfreeze
from calibrax.backbones._layers import BatchNorm2d
from calibrax.backbones._layers import Conv2d
from calibrax.backbones._layers import Linear
from calibrax.core import FrozenWeight
from calibrax.core import TunedWeight
from calibrax.learned import LPIPS
from calibrax.learned import LPIPSTrainer
from calibrax.learned import SyntheticTwoAFC
from calibrax.learned import fit
from calibrax.learned import train_lpips
from calibrax.learned._toy import ToyTrunk
from calibrax.learned.training import _lpips_loss


def _imgs(seed, shape=(3, 16, 16, 3), dtype=jnp.float32):
    return jax.random.uniform(jax.random.key(seed), shape, dtype, -1.0, 1.0)


def _model(tune, seed=0, **kw):
    return LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(seed)), pretrained=False, tune=tune, **kw)


def _weights(module, kind=None):
    state = nnx.state(module) if kind is None else nnx.state(module, kind)
    return {".".join(map(str, p)): np.array(v[...]) for p, v in nnx.to_flat_state(state)}


def _trunk(model):
    return _weights(model.trunk)


def _heads(model):
    return [np.asarray(h.weight[...]) for h in model.heads]


@pytest.fixture(scope="module")
def data():
    return SyntheticTwoAFC(48, patch_size=16, seed=0)


class _Small(nnx.Module):
    def __init__(self):
        self.conv = Conv2d(3, 4, 3, rngs=nnx.Rngs(0))
        self.bn = BatchNorm2d(4)
        self.fc = nnx.List([Linear(4, 2, rngs=nnx.Rngs(1))])
        self.shared = nnx.Dict({"a": self.conv.weight})
        self.head = nnx.Param(jnp.ones(2, jnp.float32))


def test_unfreeze_and_freeze_swap_types_in_place():
    m = _Small()
    before = _weights(m)
    # conv weight+bias (shared once more through `shared`), bn weight+bias, fc weight+bias.
    assert unfreeze(m) == 6
    assert isinstance(m.conv.weight, TunedWeight) and isinstance(m.fc[0].bias, TunedWeight)
    assert m.shared["a"] is m.conv.weight  # still one shared variable
    # Running statistics are buffers (torch does not train them either): still frozen.
    assert type(m.bn.running_mean) is FrozenWeight and type(m.bn.running_var) is FrozenWeight
    assert type(m.head) is nnx.Param
    assert unfreeze(m) == 0  # nothing left to unfreeze
    after = _weights(m)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])  # values untouched
    assert freeze(m) == 6
    assert not nnx.to_flat_state(nnx.state(m, TunedWeight))
    assert m.shared["a"] is m.conv.weight and type(m.conv.weight) is FrozenWeight
    assert type(m.head) is nnx.Param  # freeze leaves other parameters (heads) trainable
    assert freeze(m) == 0


def test_unfreeze_counts_real_backbone_parameters():
    net = AlexNet(rngs=nnx.Rngs(0))
    # torchvision AlexNet's `features` has 5 convolutions, each with weight and bias.
    assert unfreeze(net) == 10
    assert sorted(module_state_dict(net)) == []  # no FrozenWeight left to map from torch
    assert freeze(net) == 10
    assert len(module_state_dict(net)) == 10


def test_tuned_distances_equal_frozen_distances():
    x, y = _imgs(0), _imgs(1)
    # Tuning changes which gradients flow, never a value: the same program up to stop_gradient.
    np.testing.assert_array_equal(np.asarray(_model(True)(x, y)), np.asarray(_model(False)(x, y)))
    assert _model(True).tune and not _model(False).tune


def _distance_of_trunk_weight(model, x, y):
    target = model.trunk.conv1.weight
    graphdef, weight, rest = nnx.split(model, lambda _, v: v is target, ...)

    def f(w):
        # The weight replaced by `w` (float64, for finite differences) in a fresh module.
        m = nnx.merge(graphdef, jax.tree.map(lambda _: w, weight), rest)
        return jnp.mean(m(x, y))

    return f, target[...].astype(jnp.float64)


def test_gradient_reaches_a_tuned_trunk_and_is_correct():
    x, y = _imgs(0, dtype=jnp.float64), _imgs(1, dtype=jnp.float64)
    f, w = _distance_of_trunk_weight(_model(True), x, y)
    f = jax.jit(f)
    g = np.asarray(jax.grad(f)(w))
    assert np.all(np.isfinite(g)) and np.any(g != 0.0)
    # Against central finite differences in float64 (the whole network runs in the input's
    # dtype); check_grads' default tolerance for float64 is 1e-5.
    jax.test_util.check_grads(f, (w,), order=1, modes=["rev"], eps=1e-6)


def test_no_gradient_reaches_a_frozen_trunk():
    x, y = _imgs(0, dtype=jnp.float64), _imgs(1, dtype=jnp.float64)
    f, w = _distance_of_trunk_weight(_model(False), x, y)
    np.testing.assert_array_equal(np.asarray(jax.grad(f)(w)), 0.0)  # stop_gradient, exactly


def test_nnx_grad_of_a_tuned_model_covers_trunk_and_heads():
    model = _model(True)
    x, y = _imgs(0), _imgs(1)
    grads = nnx.jit(nnx.grad(lambda m: jnp.mean(m(x, y))))(model)
    trunk = jax.tree.leaves(nnx.state(grads, TunedWeight))
    assert len(trunk) == 6  # 3 convolutions x (weight, bias)
    assert len(jax.tree.leaves(nnx.state(grads, nnx.Param))) == 6 + 3
    for g in trunk:
        assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g) != 0.0)


def test_tune_flag_validation():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected a frozen trunk with `tune=False`, got trainable weight `conv0.bias` (6 in "
            "all; pass tune=True to train the trunk, or calibrax.backbones.freeze(trunk))"
        ),
    ):
        LPIPS(net="alex", trunk=_model(True).trunk, pretrained=False)

    class Weightless(nnx.Module):
        tap_channels = (3,)

        def taps(self, x):
            return [x]

    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected a trunk with weights to tune (`tune=True`), got none (it holds no "
            "FrozenWeight or nnx.Param)"
        ),
    ):
        LPIPS(net="alex", trunk=Weightless(), pretrained=False, tune=True)


@pytest.mark.slow
def test_one_step_moves_trunk_and_heads_by_the_learning_rate(data):
    # One Adam step moves each parameter by lr * g / (|g| + 1e-8), i.e. by lr wherever the
    # gradient is not ~0: a closed form for which learning rate each group got.
    def one_step(tune, **kw):
        model = _model(tune)
        trunk0, heads0 = _trunk(model), _heads(model)
        train_lpips(
            model, data, epochs=1, decay_epochs=0, batch_size=len(data), progress=False, **kw
        )
        dt = max(float(np.abs(_trunk(model)[k] - trunk0[k]).max()) for k in trunk0)
        dh = max(float(np.abs(a - b).max()) for a, b in zip(_heads(model), heads0, strict=True))
        return dt, dh

    # The reference: one optimizer, one learning rate for trunk and heads.
    dt, dh = one_step(True, lr=1e-2)
    assert dt == pytest.approx(1e-2, rel=1e-3) and dh == pytest.approx(1e-2, rel=1e-3)
    dt, dh = one_step(True, lr=1e-2, trunk_lr=1e-3)
    assert dt == pytest.approx(1e-3, rel=1e-3) and dh == pytest.approx(1e-2, rel=1e-3)


def test_tuned_training_projects_heads_after_every_step(data):
    model = _model(True)
    # Heads just above 0: any step that pushes one down must be clamped.
    model.set_heads([np.full(c, 1e-3, np.float32) for c in model.tap_channels])
    trunk0 = _trunk(model)
    trainer = LPIPSTrainer(model, rngs=nnx.Rngs(0))
    records = []

    def after_each_step(t):  # one step per epoch: called after every step
        heads = _heads(t.model)
        records.append(
            (min(float(h.min()) for h in heads), sum(int((h == 0).sum()) for h in heads))
        )
        return {}

    model.normalize = True
    hist = fit(
        trainer,
        _lpips_loss,
        data,
        tx=optax.adam(1e-2, b1=0.5),
        epochs=6,
        batch_size=len(data),
        eval_fn=after_each_step,
        progress=False,
    )
    assert len(records) == 6
    assert all(lo >= 0.0 for lo, _ in records)
    assert records[0][1] > 0  # the first step pushed some head weights below 0: clamped
    assert all(np.isfinite(hist["loss"]))
    # The trunk moved too, and no trunk weight was clamped (only heads are constrained).
    after = _trunk(model)
    assert all(np.any(after[k] != trunk0[k]) for k in trunk0)
    assert any(np.any(after[k] < 0.0) for k in after)


def test_tuned_resume_equals_uninterrupted_run(data, tmp_path):
    kwargs = dict(
        epochs=1, decay_epochs=2, batch_size=16, lr=1e-2, trunk_lr=3e-3, progress=False, seed=3
    )
    straight = _model(True)
    h_straight = train_lpips(straight, data, checkpoint_dir=tmp_path / "ck", **kwargs)
    # A crash during the last epoch: its checkpoint never appeared, epoch 2's is the latest.
    shutil.rmtree(tmp_path / "ck" / "3")
    resumed = _model(True)  # a fresh process rebuilds the tuned model from scratch
    h_resumed = train_lpips(resumed, data, checkpoint_dir=tmp_path / "ck", **kwargs)

    assert h_resumed["epoch"] == [1, 2, 3]
    # Same data order, schedule and optimizer state (trunk moments included): identical up to
    # float32 reassociation in separately compiled but identical programs (1e-6).
    for a, b in zip(_heads(straight), _heads(resumed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    ws, wr = _trunk(straight), _trunk(resumed)
    for k in ws:
        np.testing.assert_allclose(ws[k], wr[k], rtol=1e-6, atol=1e-6)
    assert any(np.any(ws[k] != _trunk(_model(True))[k]) for k in ws)  # the trunk did train
    np.testing.assert_allclose(h_straight["loss"], h_resumed["loss"], rtol=1e-6)
    # The checkpoint holds trunk weights and their Adam moments: a frozen model cannot resume it.
    kwargs.pop("trunk_lr")
    with pytest.raises(ValueError, match=re.escape("to hold the same variables as the target")):
        train_lpips(_model(False), data, checkpoint_dir=tmp_path / "ck", **kwargs)


def test_trunk_lr_validation(data):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected a model with a tuned trunk (`LPIPS(tune=True)`) for `trunk_lr`, got a "
            "frozen trunk"
        ),
    ):
        train_lpips(_model(False), data, trunk_lr=1e-3, progress=False)
    with pytest.raises(ValueError, match=re.escape("expected `trunk_lr` to be positive, got 0.0")):
        train_lpips(_model(True), data, trunk_lr=0.0, progress=False)


def test_tuned_checkpoint_round_trip(tmp_path):
    model = _model(True)
    rng = np.random.default_rng(1)
    model.set_heads([rng.uniform(0, 1, c).astype(np.float32) for c in model.tap_channels])
    # Stand-in for training: trunk weights that no seed of ToyTrunk produces.
    model.trunk.conv1.weight[...] = model.trunk.conv1.weight[...] * 1.5
    model.save_heads(tmp_path / "tuned")

    architecture = ToyTrunk(rngs=nnx.Rngs(7))  # other weights: only its structure is used
    before = _weights(architecture)
    loaded = LPIPS.from_checkpoint(tmp_path / "tuned", trunk=architecture)
    x, y = _imgs(0), _imgs(1)
    np.testing.assert_array_equal(np.asarray(loaded(x, y)), np.asarray(model(x, y)))
    assert not loaded.tune  # restored frozen unless asked
    for k, v in _weights(architecture).items():
        np.testing.assert_array_equal(v, before[k])  # the given trunk is not modified
    again = LPIPS.from_checkpoint(tmp_path / "tuned", trunk=architecture, tune=True)
    assert again.tune
    np.testing.assert_array_equal(np.asarray(again(x, y)), np.asarray(model(x, y)))

    # A frozen model's checkpoint holds the heads only; the trunk passed in is used as is.
    frozen = _model(False)
    frozen.save_heads(tmp_path / "heads")
    loaded = LPIPS.from_checkpoint(tmp_path / "heads", trunk=architecture)
    np.testing.assert_array_equal(np.asarray(loaded(x, y)), np.asarray(_model(False, seed=7)(x, y)))


def test_tuned_checkpoint_needs_no_pretrained_trunk(tmp_path):
    # With no trunk given, the named architecture is built with placeholder weights (no weight
    # file needed) and the tuned weights come from the checkpoint.
    model = LPIPS(net="alex", trunk=AlexNet(rngs=nnx.Rngs(0)), pretrained=False, tune=True)
    model.save_heads(tmp_path / "tuned")
    loaded = LPIPS.from_checkpoint(tmp_path / "tuned", tune=True)
    x, y = _imgs(0, (1, 32, 32, 3)), _imgs(1, (1, 32, 32, 3))
    np.testing.assert_array_equal(np.asarray(loaded(x, y)), np.asarray(model(x, y)))
