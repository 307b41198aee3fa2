"""Frozen NHWC layers and state-dict mapping against ``torch.nn.functional`` on CPU.

Tolerances: float64 end to end on both sides, so results agree to rounding (1e-12); any layout,
padding or window error would be O(1).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.backbones._layers import BatchNorm2d
from calibrax.backbones._layers import Conv2d
from calibrax.backbones._layers import Linear
from calibrax.backbones._layers import adaptive_avg_pool2d
from calibrax.backbones._layers import avg_pool2d
from calibrax.backbones._layers import max_pool2d
from calibrax.backbones._mapping import StateDictMismatchError
from calibrax.backbones._mapping import load_state_dict
from calibrax.backbones._mapping import module_state_dict
from calibrax.core import FrozenWeight

torch = pytest.importorskip("torch")
F = torch.nn.functional
ATOL = 1e-12


def _nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t) -> np.ndarray:
    return t.numpy().transpose(0, 2, 3, 1)


def _images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "padding", "dilation", "groups"),
    [
        (3, 8, 3, 1, 1, 1, 1),
        (4, 6, (3, 5), 2, (1, 2), 1, 2),
        (6, 6, 3, 2, 0, 2, 6),
        (5, 7, 1, 1, 0, 1, 1),
        (3, 4, 11, 4, 2, 1, 1),
        (8, 8, 5, 2, 2, 1, 8),  # depthwise: the shifted-sum path on CPU
        (6, 6, (3, 5), (1, 2), (0, 1), 1, 6),
    ],
)
def test_conv2d_matches_torch(cin, cout, k, stride, padding, dilation, groups):
    conv = Conv2d(
        cin,
        cout,
        k,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        rngs=nnx.Rngs(0),
    )
    x = _images((2, 23, 19, cin))
    ours = conv(jnp.asarray(x))
    w = torch.from_numpy(np.asarray(conv.weight[...], np.float64))
    b = torch.from_numpy(np.asarray(conv.bias[...], np.float64))
    ref = F.conv2d(_nchw(x), w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    np.testing.assert_allclose(np.asarray(ours), _nhwc(ref), atol=ATOL)


@pytest.mark.parametrize("cout", [3, 2], ids=["dense", "depthwise"])
@pytest.mark.parametrize(("size", "k", "stride"), [(224, 3, 2), (15, 3, 2), (14, 5, 2), (7, 5, 1)])
def test_conv2d_same_padding_is_tensorflow_same(size, k, stride, cout):
    # TF SAME: output ceil(size / stride); the odd extra pixel of padding goes bottom/right.
    groups = 2 if cout == 2 else 1
    conv = Conv2d(
        2, cout, k, stride=stride, padding="same", groups=groups, bias=False, rngs=nnx.Rngs(1)
    )
    x = _images((1, size, size, 2))
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    lo, hi = total // 2, total - total // 2
    padded = F.pad(_nchw(x), (lo, hi, lo, hi))
    weight = torch.from_numpy(np.asarray(conv.weight[...], np.float64))
    ref = F.conv2d(padded, weight, stride=stride, groups=groups)
    ours = conv(jnp.asarray(x))
    assert ours.shape == (1, out, out, cout)
    np.testing.assert_allclose(np.asarray(ours), _nhwc(ref), atol=ATOL)


def test_batchnorm_and_linear_match_torch():
    rng = np.random.default_rng(0)
    bn = BatchNorm2d(5, eps=1e-3)
    stats = {
        "weight": rng.normal(size=5),
        "bias": rng.normal(size=5),
        "running_mean": rng.normal(size=5),
        "running_var": rng.uniform(0.5, 2.0, size=5),
    }
    load_state_dict(bn, stats)
    # The layer stores float32: give torch the same rounded values.
    stats = {k: v.astype(np.float32).astype(np.float64) for k, v in stats.items()}
    x = _images((2, 4, 3, 5))
    ref = F.batch_norm(
        _nchw(x),
        *(torch.from_numpy(stats[n]) for n in ("running_mean", "running_var")),
        torch.from_numpy(stats["weight"]),
        torch.from_numpy(stats["bias"]),
        False,
        0.0,
        1e-3,
    )
    np.testing.assert_allclose(np.asarray(bn(jnp.asarray(x))), _nhwc(ref), atol=ATOL)

    lin = Linear(6, 4, rngs=nnx.Rngs(2))
    v = _images((3, 6))
    ref = F.linear(
        torch.from_numpy(v),
        torch.from_numpy(np.asarray(lin.weight[...], np.float64)),
        torch.from_numpy(np.asarray(lin.bias[...], np.float64)),
    )
    np.testing.assert_allclose(np.asarray(lin(jnp.asarray(v))), ref.numpy(), atol=ATOL)


POOLS = [
    # (size, kernel, stride, padding, ceil_mode)
    (13, 3, 2, 0, False),
    (13, 3, 2, 0, True),
    (14, 3, 2, 1, True),
    (8, 2, 2, 0, True),
    (10, 3, 3, 1, True),
    (35, 3, 1, 1, False),
    (9, 4, 3, 2, True),
]


@pytest.mark.parametrize(("size", "k", "stride", "padding", "ceil_mode"), POOLS)
def test_max_pool_matches_torch(size, k, stride, padding, ceil_mode):
    x = _images((2, size, size + 1, 3))
    ref = F.max_pool2d(_nchw(x), k, stride, padding, ceil_mode=ceil_mode)
    ours = max_pool2d(jnp.asarray(x), k, stride, padding, ceil_mode=ceil_mode)
    np.testing.assert_allclose(np.asarray(ours), _nhwc(ref), atol=ATOL)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(("size", "k", "stride", "padding", "ceil_mode"), POOLS)
def test_avg_pool_matches_torch(size, k, stride, padding, ceil_mode, count_include_pad):
    if padding * 2 > k:
        pytest.skip("torch requires padding <= kernel / 2")
    x = _images((2, size, size + 1, 3))
    ref = F.avg_pool2d(
        _nchw(x), k, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad
    )
    ours = avg_pool2d(
        jnp.asarray(x),
        k,
        stride,
        padding,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
    )
    np.testing.assert_allclose(np.asarray(ours), _nhwc(ref), atol=ATOL)


@pytest.mark.parametrize(
    ("size", "out"), [((13, 13), 6), ((12, 18), (6, 6)), ((7, 5), 1), ((5, 9), 3)]
)
def test_adaptive_avg_pool_matches_torch(size, out):
    x = _images((2, *size, 3))
    ref = F.adaptive_avg_pool2d(_nchw(x), out)
    np.testing.assert_allclose(
        np.asarray(adaptive_avg_pool2d(jnp.asarray(x), out)), _nhwc(ref), atol=ATOL
    )


def test_weights_are_frozen_but_inputs_differentiable():
    conv = Conv2d(3, 4, 3, padding=1, rngs=nnx.Rngs(0))
    assert nnx.state(conv, nnx.Param) == nnx.State({})
    x = jnp.asarray(_images((1, 5, 5, 3)))

    def loss(module, x):
        return jnp.sum(module(x) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, FrozenWeight))(conv, x)
    assert all(float(jnp.abs(g[...]).max()) == 0.0 for _, g in nnx.to_flat_state(grads))
    gx = jax.grad(lambda x: loss(conv, x))(x)
    assert float(jnp.abs(gx).max()) > 0.0


class _Net(nnx.Module):
    def __init__(self):
        self.features = nnx.Dict({"0": Conv2d(3, 4, 3), "2": BatchNorm2d(4)})
        self.blocks = nnx.List([Linear(4, 2), Linear(2, 2, bias=False)])


def _state_dict():
    rng = np.random.default_rng(0)
    return {
        "features.0.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float16),
        "features.0.bias": rng.normal(size=4),
        "features.2.weight": rng.normal(size=4),
        "features.2.bias": rng.normal(size=4),
        "features.2.running_mean": rng.normal(size=4),
        "features.2.running_var": rng.uniform(size=4),
        "features.2.num_batches_tracked": np.asarray(10),
        "blocks.0.weight": rng.normal(size=(2, 4)),
        "blocks.0.bias": rng.normal(size=2),
        "blocks.1.weight": rng.normal(size=(2, 2)),
    }


def test_load_state_dict_maps_torch_names():
    net = _Net()
    sd = _state_dict()
    load_state_dict(net, sd)
    got = module_state_dict(net)
    assert set(got) == set(sd) - {"features.2.num_batches_tracked"}
    for key, value in got.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, sd[key].astype(np.float32))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda sd: sd.pop("blocks.0.bias"),
            "expected the state dict to have key 'blocks.0.bias' needed by _Net (shape (2,)), "
            "got no such key",
        ),
        (
            lambda sd: sd.update({"classifier.weight": np.zeros((3, 3))}),
            "expected only keys of _Net in the state dict, got unexpected key 'classifier.weight' "
            "with shape (3, 3)",
        ),
        (
            lambda sd: sd.update({"features.0.weight": np.zeros((4, 3, 5, 5))}),
            "expected `features.0.weight` to have shape (4, 3, 3, 3) for _Net, got shape "
            "(4, 3, 5, 5)",
        ),
        (
            lambda sd: [sd.pop(k) for k in ("blocks.0.bias", "blocks.1.weight")],
            "expected the state dict to have key 'blocks.0.bias' needed by _Net (shape (2,)), "
            "got no such key (and 1 more)",
        ),
    ],
    ids=["missing", "extra", "shape", "several-missing"],
)
def test_load_state_dict_errors_name_the_key(edit, message):
    net = _Net()
    before = module_state_dict(net)
    sd = _state_dict()
    edit(sd)
    with pytest.raises(StateDictMismatchError, match=re.escape(message)):
        load_state_dict(net, sd)
    after = module_state_dict(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing was changed
