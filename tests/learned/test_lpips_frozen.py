"""LPIPS cannot be trained by accident; v0.0 heads, head dropout and random trunks (pnet_rand).

The frozen-heads test is torchmetrics' issue 2315 ("LPIPS returns negative values"): a generator
that holds LPIPS as its loss is trained with ``nnx.Optimizer(generator, tx, wrt=nnx.Param)``, and
the LPIPS heads and trunk must come out bit-identical. Parity of v0.0 with the reference lives in
``tests/reference/test_lpips_reference.py``.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from calibrax.backbones import AlexNet
from calibrax.backbones import module_state_dict
from calibrax.core import FrozenHead
from calibrax.core import FrozenWeight
from calibrax.learned import LPIPS
from calibrax.learned import SyntheticTwoAFC
from calibrax.learned import load_official_heads
from calibrax.learned import lpips
from calibrax.learned import train_lpips
from calibrax.learned._toy import ToyTrunk


def _imgs(seed, shape=(2, 16, 16, 3)):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32, -1.0, 1.0)


def _toy(**kw):
    kw.setdefault("pretrained", False)
    return LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), **kw)


def _values(module):
    return {
        ".".join(map(str, p)): np.array(v[...]) for p, v in nnx.to_flat_state(nnx.state(module))
    }


class Generator(nnx.Module):
    """A one-convolution image generator whose training loss is LPIPS to a target."""

    def __init__(self, perceptual: LPIPS, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(3, 3, (3, 3), rngs=rngs)
        self.perceptual = perceptual

    def __call__(self, z: jax.Array) -> jax.Array:
        return jnp.tanh(self.conv(z))


def _train_generator(perceptual: LPIPS, steps: int = 3):
    """``steps`` Adam steps of the generator on the LPIPS loss; returns (gen, before, after)."""
    gen = Generator(perceptual, rngs=nnx.Rngs(0))
    z, target = _imgs(10, (2, 32, 32, 3)), _imgs(11, (2, 32, 32, 3))
    optimizer = nnx.Optimizer(gen, optax.adam(1e-2), wrt=nnx.Param)
    before = _values(gen)

    @nnx.jit
    def step(gen, optimizer):
        def loss_fn(g):
            return lpips(g(z), target, model=g.perceptual)

        loss, grads = nnx.value_and_grad(loss_fn)(gen)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int32
            optimizer.update(gen, grads)
        return loss

    for _ in range(steps):
        assert np.isfinite(float(step(gen, optimizer)))
    return gen, before, _values(gen)


def _split(values):
    mine = {k: v for k, v in values.items() if k.startswith("conv.")}
    theirs = {k: v for k, v in values.items() if k.startswith("perceptual.")}
    return mine, theirs


@pytest.mark.parametrize("kind", ["official", "checkpoint"])
def test_generator_training_leaves_lpips_bit_identical(kind, tmp_path):
    if kind == "official":
        # The reference's setting: official v0.1 heads on AlexNet (a seeded random trunk here:
        # pretrained ImageNet weights are not needed to show nothing moves).
        perceptual = LPIPS(net="alex", pnet_rand=True, rngs=nnx.Rngs(3))
    else:
        # Trained heads: saved from a model built for training, loaded for evaluation.
        trained = _toy(trainable=True)
        rng = np.random.default_rng(0)
        trained.set_heads([rng.uniform(0, 2, c).astype(np.float32) for c in trained.tap_channels])
        trained.save_heads(tmp_path / "heads")
        perceptual = LPIPS.from_checkpoint(tmp_path / "heads", trunk=ToyTrunk(rngs=nnx.Rngs(0)))
    assert not perceptual.trainable
    assert all(type(h.weight) is FrozenHead for h in perceptual.heads)
    gen, before, after = _train_generator(perceptual)
    # The optimizer sees the generator's convolution and nothing of LPIPS.
    params = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(gen, nnx.Param))]
    assert sorted(params) == ["conv.bias", "conv.kernel"]
    mine_before, lpips_before = _split(before)
    mine_after, lpips_after = _split(after)
    assert any(np.any(mine_before[k] != mine_after[k]) for k in mine_before)  # it trained
    # Heads, trunk and metric state: every LPIPS variable bit-identical.
    assert lpips_before.keys() == lpips_after.keys()
    assert any(".heads." in k for k in lpips_before) and any(".trunk." in k for k in lpips_before)
    for k in lpips_before:
        np.testing.assert_array_equal(lpips_after[k], lpips_before[k], err_msg=k)


def test_trainable_heads_in_a_generator_do_move():
    # The control: with heads built for training (what torchmetrics gave everyone), the same loop
    # moves the heads, some of them down (the start of "LPIPS returns negative values").
    _, before, after = _train_generator(_toy(trainable=True))
    heads = [k for k in before if k.startswith("perceptual.heads.")]
    assert len(heads) == 3
    assert all(np.any(after[k] != before[k]) for k in heads)
    assert any(np.any(after[k] < before[k]) for k in heads)
    trunk = [k for k in before if k.startswith("perceptual.trunk.")]
    assert all(np.array_equal(after[k], before[k]) for k in trunk)  # the trunk stays frozen


def test_set_trainable_swaps_head_types_only():
    model = _toy()
    x, y = _imgs(0), _imgs(1)
    frozen_d = np.asarray(model(x, y))
    assert not model.trainable
    assert model.set_trainable(True) == 3 and model.trainable
    assert all(type(h.weight) is nnx.Param for h in model.heads)
    assert model.set_trainable(True) == 0
    # The trunk is untouched, and the values (hence the distance) are unchanged.
    assert all(type(v) is FrozenWeight for _, v in nnx.to_flat_state(nnx.state(model.trunk)))
    np.testing.assert_array_equal(np.asarray(model(x, y)), frozen_d)
    assert model.set_trainable(False) == 3 and not model.trainable
    assert all(type(h.weight) is FrozenHead for h in model.heads)
    # tune=True is a model built for training: its heads are trainable unless said otherwise.
    tuned = LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False, tune=True)
    assert tuned.trainable
    tuned_frozen_heads = LPIPS(
        net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False, tune=True, trainable=False
    )
    assert not tuned_frozen_heads.trainable and tuned_frozen_heads.tune


def test_checkpoint_of_trainable_heads_loads_frozen_unless_asked(tmp_path):
    trained = _toy(trainable=True)
    rng = np.random.default_rng(1)
    trained.set_heads([rng.uniform(0, 1, c).astype(np.float32) for c in trained.tap_channels])
    trained.save_heads(tmp_path / "heads")
    x, y = _imgs(0), _imgs(1)
    loaded = LPIPS.from_checkpoint(tmp_path / "heads", trunk=ToyTrunk(rngs=nnx.Rngs(0)))
    assert not loaded.trainable
    np.testing.assert_array_equal(np.asarray(loaded(x, y)), np.asarray(trained(x, y)))
    again = LPIPS.from_checkpoint(
        tmp_path / "heads", trunk=ToyTrunk(rngs=nnx.Rngs(0)), trainable=True
    )
    assert again.trainable
    # And the other way: frozen heads saved, restored into trainable ones.
    loaded.save_heads(tmp_path / "frozen")
    back = LPIPS.from_checkpoint(
        tmp_path / "frozen", trunk=ToyTrunk(rngs=nnx.Rngs(0)), trainable=True
    )
    np.testing.assert_array_equal(np.asarray(back(x, y)), np.asarray(trained(x, y)))


def test_v0_0_heads_and_input_convention():
    for net, channels in {
        "alex": (64, 192, 384, 256, 256),
        "vgg": (64, 128, 256, 512, 512),
        "squeeze": (64, 128, 256, 384, 384, 512, 512),
    }.items():
        old, new = load_official_heads(net, version="0.0"), load_official_heads(net)
        assert tuple(h.shape[0] for h in old) == channels
        assert all(h.min() >= 0 for h in old)
        assert any(not np.array_equal(a, b) for a, b in zip(old, new, strict=True))
    first = LPIPS(net="alex", trunk=AlexNet(rngs=nnx.Rngs(0)), version="0.0")
    assert (first.shift, first.scale) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    for head, want in zip(first.heads, load_official_heads("alex", version="0.0"), strict=True):
        np.testing.assert_array_equal(np.asarray(head.weight[...]), want)


def test_dropout_is_identity_in_eval_and_the_reference_layer_in_training():
    x, y = _imgs(0), _imgs(1)
    plain = _toy()
    rng = np.random.default_rng(2)
    heads = [rng.uniform(0, 1, c).astype(np.float32) for c in plain.tap_channels]
    plain.set_heads(heads)
    model = _toy(use_dropout=True, rngs=nnx.Rngs(5))
    model.set_heads(heads)
    # Evaluation mode (the default): exactly the model without dropout.
    np.testing.assert_array_equal(np.asarray(model(x, y)), np.asarray(plain(x, y)))
    model.train()
    got = np.asarray(model(x, y))
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(x, y)), np.asarray(plain(x, y)))
    # Training mode against a hand-written forward: unit-normalised squared differences, the
    # same dropout layer (p = 0.5, kept values scaled by 2, one draw per tap in tap order, keys
    # from the same seed), then the heads and the spatial mean.
    twin = nnx.Dropout(0.5, rngs=nnx.Rngs(5))
    shift = jnp.asarray(model.shift, jnp.float32).reshape(1, 1, 1, 3)
    scale = jnp.asarray(model.scale, jnp.float32).reshape(1, 1, 1, 3)
    taps_x, taps_y = model.trunk.taps((x - shift) / scale), model.trunk.taps((y - shift) / scale)
    want = 0.0
    for w, fx, fy in zip(heads, taps_x, taps_y, strict=True):
        fx, fy = np.asarray(fx, np.float64), np.asarray(fy, np.float64)
        nx = fx / np.sqrt((fx**2).sum(-1, keepdims=True) + 1e-20)
        ny = fy / np.sqrt((fy**2).sum(-1, keepdims=True) + 1e-20)
        kept = np.asarray(twin(jnp.ones(fx.shape, jnp.float32)))
        assert set(np.unique(kept)) == {0.0, 2.0}
        want = want + (((nx - ny) ** 2) * kept * w).sum(-1).mean(axis=(1, 2))
    # float32 forward against a float64 reduction: 1e-5 relative.
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all(np.abs(got - np.asarray(plain(x, y))) > 1e-6)  # dropout did act


def test_train_lpips_with_dropout_hands_back_a_frozen_eval_model():
    data = SyntheticTwoAFC(16, patch_size=16, seed=0)
    model = _toy(use_dropout=True, rngs=nnx.Rngs(0))
    before = [np.asarray(h.weight[...]) for h in model.heads]
    hist = train_lpips(
        model, data, epochs=1, decay_epochs=0, batch_size=16, lr=1e-2, progress=False
    )
    assert np.all(np.isfinite(hist["loss"]))
    after = [np.asarray(h.weight[...]) for h in model.heads]
    assert any(np.any(a != b) for a, b in zip(after, before, strict=True))  # trained
    assert not model.trainable and model.dropout.deterministic  # frozen, evaluation mode
    assert all(np.all(w >= 0.0) for w in after)


def test_pnet_rand_is_a_seeded_random_trunk():
    a = LPIPS(net="alex", pnet_rand=True, rngs=nnx.Rngs(0))
    b = LPIPS(net="alex", pnet_rand=True, rngs=nnx.Rngs(0))
    c = LPIPS(net="alex", pnet_rand=True, rngs=nnx.Rngs(1), pretrained=False)
    wa, wb, wc = (module_state_dict(m.trunk) for m in (a, b, c))
    assert len(wa) == 10  # 5 convolutions, weight and bias
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])
        assert not np.array_equal(wa[k], wc[k])
    # torch's default initialisation: uniform in +-1/sqrt(fan_in), fan_in = 3 * 11 * 11.
    first = wa["features.0.weight"]
    assert 0.9 / np.sqrt(363) < np.abs(first).max() <= 1.0 / np.sqrt(363)
    assert a.pnet_rand and not a.tune and not a.trainable
    assert all(type(v) is FrozenWeight for _, v in nnx.to_flat_state(nnx.state(a.trunk)))
    # Official heads load onto the random trunk, as in the reference (the golden fixtures do this).
    for head, want in zip(a.heads, load_official_heads("alex"), strict=True):
        np.testing.assert_array_equal(np.asarray(head.weight[...]), want)
    x, y = _imgs(0, (1, 32, 32, 3)), _imgs(1, (1, 32, 32, 3))
    np.testing.assert_array_equal(np.asarray(a(x, y)), np.asarray(b(x, y)))


def test_bad_settings():
    trunk = ToyTrunk(rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=re.escape("expected `version` to be one of '0.0', '0.1', got '0.2'")
    ):
        LPIPS(net="alex", trunk=trunk, version="0.2")
    with pytest.raises(
        ValueError, match=re.escape("expected `version` to be one of '0.0', '0.1', got '1'")
    ):
        load_official_heads("alex", version="1")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected version='0.1' for trunk 'efficientnet-lite0' (v0.0 exists for 'alex', "
            "'vgg', 'squeeze'), got version='0.0'"
        ),
    ):
        LPIPS(net="efficientnet-lite0", trunk=trunk, pretrained=False, version="0.0")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `rngs` (the random trunk's seed) with `pnet_rand=True`, got None"
        ),
    ):
        LPIPS(net="alex", pnet_rand=True)
    with pytest.raises(
        ValueError,
        match=re.escape("expected `rngs` (the dropout keys) with `use_dropout=True`, got None"),
    ):
        LPIPS(net="alex", trunk=trunk, pretrained=False, use_dropout=True)
    with pytest.raises(
        ValueError, match=re.escape("expected either `trunk` or `pnet_rand=True`, got both")
    ):
        LPIPS(net="alex", trunk=trunk, pnet_rand=True, rngs=nnx.Rngs(0))
