"""Frozen NHWC layers named like their ``torch.nn`` counterparts.

The layers exist to run pretrained PyTorch networks in JAX. Their attribute names match the torch
modules (``weight``, ``bias``, ``running_mean``, ``running_var``) so that a torch state dict maps onto
them by name (see :mod:`calibrax.backbones._mapping`).

Layout decisions:

* Activations are **NHWC** (channels last), the layout XLA prefers.
* Weights are kept **in torch layout**, unconverted: a ``Conv2d`` weight is ``(out, in // groups,
  kh, kw)`` (OIHW) and a ``Linear`` weight is ``(out, in)``. ``lax.conv_general_dilated`` reads OIHW
  directly through its dimension numbers and ``Linear`` contracts the ``in`` axis, so no transpose
  is stored or performed, and a state-dict tensor is copied as is (shape errors then name torch
  shapes the user recognises).
* Every weight is a :class:`calibrax.core.FrozenWeight`, never an ``nnx.Param``, and is read through
  ``jax.lax.stop_gradient``: optimizers built with ``wrt=nnx.Param`` never see it and no gradient
  flows into it. Gradients with respect to the *input* still flow. Fine-tuning is opt-in:
  :func:`unfreeze` turns a module's weights into :class:`calibrax.core.TunedWeight` (an
  ``nnx.Param``), which :func:`frozen` reads without the stop; :func:`freeze` undoes it.
* Weights are cast to the input's dtype at call time, so a float64 input runs the whole network in
  float64 (used by parity tests) and a float32 input in float32.

Constructors take ``rngs`` last. Without it, weights are zeros (shape placeholders to be filled by
:func:`~calibrax.backbones._mapping.load_state_dict`); with it, they get torch's default
initialisation (uniform in ``±1/sqrt(fan_in)``, drawn with numpy seeded by the key), which tests use to get a non-trivial random
network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calibrax.core.state import FrozenWeight
from calibrax.core.state import TunedWeight

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "Linear",
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "freeze",
    "frozen",
    "l2_pool2d",
    "max_pool2d",
    "pool_output_size",
    "unfreeze",
]

Padding = int | tuple[int, int] | str


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"expected `{name}` to be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def frozen(variable: nnx.Variable, dtype: jnp.dtype) -> jax.Array:
    """The value of a layer weight, cast to ``dtype``; gradients stopped unless it was unfrozen.

    Only a weight made trainable on purpose (an ``nnx.Param``, i.e. a
    :class:`~calibrax.core.TunedWeight` from :func:`unfreeze`) passes gradients; a
    ``FrozenWeight`` (the default) or any other type is read through ``jax.lax.stop_gradient``.
    The type is a trace-time fact, so the default program is exactly what it was without tuning.
    """
    value = jnp.asarray(variable[...]).astype(dtype)
    if isinstance(variable, nnx.Param):
        return value
    return jax.lax.stop_gradient(value)


def _swap_weights(module: nnx.Module, source: type, make: type) -> int:
    """Replace every ``source`` variable of ``module`` by ``make(value)``, in place.

    Each owner's attribute (or list slot) is reassigned, so a variable shared by several owners
    becomes one shared variable of the new type. A layer's ``buffers`` (running statistics, not
    parameters in torch either) are skipped.
    """
    replaced: dict[int, nnx.Variable] = {}
    owners = [
        node
        for _, node in nnx.iter_graph(module)
        if nnx.graph.is_graph_node(node) and not isinstance(node, nnx.Variable)
    ]
    for owner in owners:
        skip = getattr(type(owner), "buffers", ())
        for key, child in list(nnx.iter_children(owner)):
            if type(child) is not source or key in skip:
                continue
            new = replaced.setdefault(id(child), make(child[...]))
            if isinstance(owner, nnx.List):
                owner[int(key)] = new
            else:
                setattr(owner, str(key), new)
    return len(replaced)


def unfreeze(module: nnx.Module) -> int:
    """Make a module's pretrained weights trainable, in place (opt-in fine-tuning).

    Every :class:`~calibrax.core.FrozenWeight` becomes a :class:`~calibrax.core.TunedWeight` (an
    ``nnx.Param``) with the same value: :func:`frozen` then lets gradients through, and
    ``nnx.Optimizer(..., wrt=nnx.Param)`` and :func:`calibrax.learned.fit` train it. Batch-norm
    running statistics stay frozen: they are buffers, not parameters (as in torch), and the layers
    always run in inference mode.

    Args:
        module: Any module built from these layers (a backbone, an LPIPS trunk).

    Returns:
        The number of weights unfrozen (0 if there were none).
    """
    return _swap_weights(module, FrozenWeight, TunedWeight)


def freeze(module: nnx.Module) -> int:
    """Undo :func:`unfreeze`, in place: every ``TunedWeight`` becomes a ``FrozenWeight`` again.

    Other ``nnx.Param`` variables (e.g. LPIPS heads) are left trainable.

    Args:
        module: The module to freeze.

    Returns:
        The number of weights frozen.
    """
    return _swap_weights(module, TunedWeight, FrozenWeight)


def _per_channel(v: jax.Array, ndim: int) -> jax.Array:
    """Reshape a ``(channels,)`` vector to broadcast over the last axis of an ``ndim`` array."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def _constant(shape: tuple[int, ...], value: float) -> FrozenWeight:
    # Built in numpy and transferred: jnp.zeros or jnp.asarray would compile a program per shape.
    return FrozenWeight(jax.device_put(np.full(shape, value, np.float32)))


def _init(shape: tuple[int, ...], fan_in: int, rngs: nnx.Rngs | None) -> FrozenWeight:
    if rngs is None:
        return _constant(shape, 0.0)
    # numpy draws seeded by the nnx key: deterministic per key, and no per-shape compilation.
    seed = np.asarray(jax.random.key_data(rngs.params())).ravel()
    bound = 1.0 / math.sqrt(fan_in)
    values = np.random.default_rng(seed).uniform(-bound, bound, shape).astype(np.float32)
    return FrozenWeight(jax.device_put(values))


class Conv2d(nnx.Module):
    """A frozen 2-D convolution, like ``torch.nn.Conv2d``, on NHWC inputs.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size, an int or ``(kh, kw)``.
        stride: Stride, an int or a pair.
        padding: ``int`` or ``(ph, pw)``: torch's symmetric zero padding (``ph`` rows on top *and*
            bottom). ``"same"``: TensorFlow/XLA ``SAME`` padding: the output has
            ``ceil(size / stride)`` pixels and an odd total padding puts the extra pixel at the
            bottom/right (what EfficientNet's ``Conv2dStaticSamePadding`` does).
        dilation: Dilation, an int or a pair.
        groups: Number of groups (``groups == in_channels`` is a depthwise convolution).
        bias: Whether the layer has a bias.
        rngs: Random keys for torch's default initialisation; ``None`` leaves zeros.

    Attributes:
        weight: ``FrozenWeight`` of shape ``(out_channels, in_channels // groups, kh, kw)`` (torch
            OIHW layout).
        bias: ``FrozenWeight`` of shape ``(out_channels,)``, or ``None``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: Padding = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        rngs: nnx.Rngs | None = None,
    ):
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"expected `groups` to divide in_channels ({in_channels}) and out_channels "
                f"({out_channels}), got {groups}"
            )
        kh, kw = _pair(kernel_size, "kernel_size")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if isinstance(padding, str):
            if padding != "same":
                raise ValueError(
                    f"expected `padding` to be an int, a pair or 'same', got {padding!r}"
                )
            self.padding: str | tuple[tuple[int, int], tuple[int, int]] = "SAME"
        else:
            ph, pw = _pair(padding, "padding")
            self.padding = ((ph, ph), (pw, pw))
        self.groups = groups
        fan_in = (in_channels // groups) * kh * kw
        self.weight = _init((out_channels, in_channels // groups, kh, kw), fan_in, rngs)
        self.bias = _init((out_channels,), fan_in, rngs) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """Convolve ``x`` of shape ``(batch, height, width, in_channels)``."""
        w = frozen(self.weight, x.dtype)
        depthwise = self.groups == self.in_channels == self.out_channels and self.dilation == (1, 1)
        if depthwise and jax.default_backend() == "cpu":
            y = _depthwise_shifted(x, w, self.stride, self._explicit_padding(x))
        else:
            y = jax.lax.conv_general_dilated(
                x,
                w,
                window_strides=self.stride,
                padding=self.padding,
                rhs_dilation=self.dilation,
                dimension_numbers=("NHWC", "OIHW", "NHWC"),
                feature_group_count=self.groups,
            )
        if self.bias is not None:
            y = y + _per_channel(frozen(self.bias, x.dtype), y.ndim)
        return y

    def _explicit_padding(self, x: jax.Array) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.padding != "SAME":
            return self.padding  # type: ignore[return-value]
        pads = []
        for size, k, s in zip(x.shape[1:3], self.kernel_size, self.stride, strict=True):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]


def _depthwise_shifted(
    x: jax.Array,
    w: jax.Array,
    stride: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
) -> jax.Array:
    """Depthwise convolution as a sum of ``kh * kw`` shifted, per-channel-scaled views.

    Mathematically the grouped convolution; on XLA's CPU backend it runs several times faster than
    ``conv_general_dilated`` with ``feature_group_count == channels`` (measured 2-6x on
    EfficientNet's layers), which dominates EfficientNet's CPU time.
    """
    kh, kw = w.shape[2], w.shape[3]
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    oh = (xp.shape[1] - kh) // stride[0] + 1
    ow = (xp.shape[2] - kw) // stride[1] + 1
    taps = jnp.transpose(w[:, 0], (1, 2, 0))  # (kh, kw, channels)
    out = None
    for i in range(kh):
        for j in range(kw):
            view = xp[
                :,
                i : i + (oh - 1) * stride[0] + 1 : stride[0],
                j : j + (ow - 1) * stride[1] + 1 : stride[1],
                :,
            ]
            term = view * taps[i, j].reshape(1, 1, 1, -1)
            out = term if out is None else out + term
    return out


class BatchNorm2d(nnx.Module):
    """A frozen ``torch.nn.BatchNorm2d`` in eval mode (running statistics), on NHWC inputs.

    Computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` over the last axis.
    The state dict's ``num_batches_tracked`` counter only matters for training and is not stored.

    Args:
        num_features: Channels.
        eps: The epsilon added to the variance (torch's default ``1e-5``; EfficientNet uses
            ``1e-3``).
        rngs: Unused for the statistics (they start at mean 0, variance 1); accepted for symmetry.
    """

    #: Statistics, not parameters: :func:`unfreeze` leaves them frozen.
    buffers = ("running_mean", "running_var")

    def __init__(self, num_features: int, *, eps: float = 1e-5, rngs: nnx.Rngs | None = None):
        del rngs
        self.num_features = num_features
        self.eps = eps
        self.weight = _constant((num_features,), 1.0)
        self.bias = _constant((num_features,), 0.0)
        self.running_mean = _constant((num_features,), 0.0)
        self.running_var = _constant((num_features,), 1.0)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalise ``x`` of shape ``(..., num_features)``."""
        dtype = x.dtype
        scale = frozen(self.weight, dtype) * jax.lax.rsqrt(
            frozen(self.running_var, dtype) + jnp.asarray(self.eps, dtype)
        )
        shift = frozen(self.bias, dtype) - frozen(self.running_mean, dtype) * scale
        return x * _per_channel(scale, x.ndim) + _per_channel(shift, x.ndim)


class Linear(nnx.Module):
    """A frozen ``torch.nn.Linear``: ``y = x @ weight.T + bias``.

    Args:
        in_features: Input size.
        out_features: Output size.
        bias: Whether the layer has a bias.
        rngs: Random keys for torch's default initialisation; ``None`` leaves zeros.

    Attributes:
        weight: ``FrozenWeight`` of shape ``(out_features, in_features)`` (torch layout).
        bias: ``FrozenWeight`` of shape ``(out_features,)``, or ``None``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        rngs: nnx.Rngs | None = None,
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _init((out_features, in_features), in_features, rngs)
        self.bias = _init((out_features,), in_features, rngs) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the layer to ``x`` of shape ``(..., in_features)``."""
        w = frozen(self.weight, x.dtype)
        y = jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))
        if self.bias is not None:
            y = y + _per_channel(frozen(self.bias, x.dtype), y.ndim)
        return y


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length of a torch pooling window along one axis.

    ``floor`` (or ``ceil`` with ``ceil_mode``) of ``(size + 2 * padding - kernel) / stride`` plus
    one; with ``ceil_mode`` the last window must start inside the input or its left padding, as in
    torch (``pooling_output_shape`` in ATen).
    """
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _window_padding(
    x: jax.Array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    ceil_mode: bool,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Per-axis (low, high) padding for H and W, and the output size."""
    pads = []
    out = []
    for axis, k, s, p in zip((1, 2), kernel, stride, padding, strict=True):
        size = x.shape[axis]
        if (size + 2 * p < k and not ceil_mode) or pool_output_size(size, k, s, p, ceil_mode) < 1:
            raise ValueError(
                f"expected the pooled input to be at least {k - 2 * p} pixels on axis {axis}, got "
                f"shape {tuple(x.shape)}"
            )
        n = pool_output_size(size, k, s, p, ceil_mode)
        # High padding so that exactly n windows fit: explicit padding plus ceil-mode overhang.
        high = (n - 1) * s + k - size - p
        pads.append((p, max(high, 0)))
        out.append(n)
    return pads[0], pads[1], (out[0], out[1])


def l2_pool2d(x: jax.Array, *, eps: float = 1e-12) -> jax.Array:
    """DISTS's L2 pooling on NHWC input: :math:`\\sqrt{g * x^2 + \\epsilon}`, stride 2, per channel.

    ``g`` is the 3x3 Hann window (``np.hanning(5)[1:-1]``, outer product, normalised to sum 1),
    applied to each channel separately with one pixel of zero padding, so an ``H x W`` input gives
    ``(H + 1) // 2 x (W + 1) // 2``. Ding et al. use it in place of VGG's max pools: a smooth,
    alias-reduced downsampling.

    Args:
        x: Input of shape ``(batch, height, width, channels)``.
        eps: Added under the square root (the reference's ``1e-12``; keeps the gradient finite
            where the input is 0).

    Returns:
        The pooled array, ``(batch, (height + 1) // 2, (width + 1) // 2, channels)``.

    References:
        Ding et al., 2020, "Image Quality Assessment: Unifying Structure and Texture
        Similarity", arXiv:2004.07728 (their ``L2pooling`` in ``DISTS_pt.py``).
    """
    a = np.hanning(5)[1:-1]
    window = np.outer(a, a)
    window = window / window.sum()
    channels = x.shape[-1]
    kernel = jnp.asarray(np.tile(window[:, :, None, None], (1, 1, 1, channels)), x.dtype)
    out = jax.lax.conv_general_dilated(
        x * x,
        kernel,
        window_strides=(2, 2),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
    )
    return jnp.sqrt(out + jnp.asarray(eps, x.dtype))


def max_pool2d(
    x: jax.Array,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    *,
    ceil_mode: bool = False,
) -> jax.Array:
    """``torch.nn.functional.max_pool2d`` on NHWC input (padding never wins the max).

    Args:
        x: Input of shape ``(batch, height, width, channels)``.
        kernel_size: Window size.
        stride: Step; defaults to ``kernel_size`` as in torch.
        padding: Symmetric implicit ``-inf`` padding.
        ceil_mode: Use ``ceil`` for the output size (torch's rule: the last window must start
            inside the input or the left padding).

    Returns:
        The pooled array, ``(batch, out_height, out_width, channels)``.
    """
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride if stride is not None else kernel_size, "stride")
    p = _pair(padding, "padding")
    ph, pw, _ = _window_padding(x, k, s, p, ceil_mode)
    init = np.array(-np.inf, x.dtype)
    return jax.lax.reduce_window(
        x, init, jax.lax.max, (1, *k, 1), (1, *s, 1), ((0, 0), ph, pw, (0, 0))
    )


def avg_pool2d(
    x: jax.Array,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> jax.Array:
    """``torch.nn.functional.avg_pool2d`` on NHWC input.

    Args:
        x: Input of shape ``(batch, height, width, channels)``.
        kernel_size: Window size.
        stride: Step; defaults to ``kernel_size`` as in torch.
        padding: Symmetric implicit zero padding.
        ceil_mode: Use ``ceil`` for the output size, as in :func:`max_pool2d`.
        count_include_pad: Whether the divisor counts the explicit zero padding (torch's
            default ``True``). The ceil-mode overhang past the padding is never counted, as in
            torch. pytorch-fid's InceptionV3 uses ``False``.

    Returns:
        The pooled array, ``(batch, out_height, out_width, channels)``.
    """
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride if stride is not None else kernel_size, "stride")
    p = _pair(padding, "padding")
    ph, pw, _ = _window_padding(x, k, s, p, ceil_mode)
    zero = np.array(0, x.dtype)
    window = (1, *k, 1)
    strides = (1, *s, 1)
    pads = ((0, 0), ph, pw, (0, 0))
    total = jax.lax.reduce_window(x, zero, jax.lax.add, window, strides, pads)
    # The divisor depends only on the static shape: count the cells of each window in numpy.
    height, width = x.shape[1], x.shape[2]
    if count_include_pad:
        # Explicit padding counts; the overhang beyond it does not.
        ones = np.zeros((1, height + ph[0] + ph[1], width + pw[0] + pw[1], 1))
        ones[:, : height + 2 * p[0], : width + 2 * p[1]] = 1.0
    else:
        ones = np.zeros((1, height + ph[0] + ph[1], width + pw[0] + pw[1], 1))
        ones[:, ph[0] : ph[0] + height, pw[0] : pw[0] + width] = 1.0
    counts = _window_sums(ones, k, s)
    return total / jnp.asarray(counts, x.dtype)


def _window_sums(a: np.ndarray, k: tuple[int, int], s: tuple[int, int]) -> np.ndarray:
    """Sums of ``a`` (already padded) over strided windows, in numpy."""
    n_h = (a.shape[1] - k[0]) // s[0] + 1
    n_w = (a.shape[2] - k[1]) // s[1] + 1
    out = np.empty((1, n_h, n_w, 1))
    for i in range(n_h):
        for j in range(n_w):
            out[0, i, j, 0] = a[0, i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1], 0].sum()
    return out


def adaptive_avg_pool2d(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
    """``torch.nn.functional.adaptive_avg_pool2d`` on NHWC input.

    Output cell ``i`` averages input rows ``floor(i * H / out)`` to ``ceil((i + 1) * H / out)``
    (exclusive), as in torch; when ``H`` is a multiple of ``out`` this is plain average pooling.

    Args:
        x: Input of shape ``(batch, height, width, channels)``.
        output_size: ``(out_height, out_width)`` or one int for both.

    Returns:
        ``(batch, out_height, out_width, channels)``.
    """
    oh, ow = _pair(output_size, "output_size")
    height, width = x.shape[1], x.shape[2]
    if (oh, ow) == (1, 1):
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    if height % oh == 0 and width % ow == 0:
        kh, kw = height // oh, width // ow
        return avg_pool2d(x, (kh, kw), (kh, kw))
    rows = []
    for i in range(oh):
        h0, h1 = (i * height) // oh, -(-((i + 1) * height) // oh)
        cols = []
        for j in range(ow):
            w0, w1 = (j * width) // ow, -(-((j + 1) * width) // ow)
            cols.append(jnp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2)))
        rows.append(jnp.stack(cols, axis=1))
    return jnp.stack(rows, axis=1)
