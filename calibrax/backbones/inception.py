"""InceptionV3 as used for FID (pytorch-fid's variant of the TF 2015-12-05 graph), frozen, NHWC.

The network is torchvision's ``Inception3`` (1008 classes, no auxiliary head) with pytorch-fid's
patches: the pooling branch of ``Mixed_5b``-``Mixed_5d``, ``Mixed_6b``-``Mixed_6e`` and
``Mixed_7b`` averages without counting the zero padding (TensorFlow's behaviour), and ``Mixed_7c``
max-pools instead. Parameter names are the ones of pytorch-fid's weight file
``pt_inception-2015-12-05-6726825d.pth`` (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch_pool.bn.running_var``, ``fc.weight``, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.backbones._layers import BatchNorm2d
from calibrax.backbones._layers import Conv2d
from calibrax.backbones._layers import Linear
from calibrax.backbones._layers import avg_pool2d
from calibrax.backbones._layers import max_pool2d
from calibrax.backbones._zoo import register_backbone
from calibrax.core import checks
from calibrax.core.registry import register

__all__ = ["InceptionOutput", "InceptionV3FID"]

#: The input size of the network; images are resized to it.
INPUT_SIZE = (299, 299)

Rngs = nnx.Rngs | None

#: The values of :attr:`InceptionV3FID.input_scaling`.
INPUT_SCALINGS = ("pytorch-fid", "tf")
#: How each tool feeds InceptionV3-FID: (resize mode, input scaling). pytorch-fid resizes [0, 1]
#: images bilinearly and scales by ``2u - 1``; clean-fid resizes each channel with PIL bicubic in
#: float ("clean") and torch-fidelity/torchmetrics with TF1's bilinear ("tf1"), both then scale
#: by ``(x - 128) / 128`` as the TF graph does.
REFERENCE_TOOLS = {
    "pytorch-fid": ("pytorch-fid", "pytorch-fid"),
    "clean-fid": ("clean", "tf"),
    "torchmetrics": ("tf1", "tf"),
    "torch-fidelity": ("tf1", "tf"),
}


def _resize(images: jax.Array) -> jax.Array:
    """Resize to 299x299 as pytorch-fid does: ``F.interpolate(mode="bilinear")``.

    torch's ``align_corners=False`` bilinear interpolation without antialiasing is
    ``jax.image.resize(method="bilinear", antialias=False)``: half-pixel centres, and at the borders
    the one in-range neighbour (torch clamps the source coordinate, jax renormalises the weights),
    for up- and downsampling alike. The golden tests check this against torch.
    """
    n, h, w, c = images.shape
    if (h, w) == INPUT_SIZE:
        return images  # torch's interpolation to the same size is the identity too
    return jax.image.resize(images, (n, *INPUT_SIZE, c), method="bilinear", antialias=False)


class BasicConv2d(nnx.Module):
    """Convolution without bias, batch norm (eps 1e-3) and ReLU: torchvision's ``BasicConv2d``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        rngs: Rngs = None,
    ):
        self.conv = Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            bias=False,
            rngs=rngs,
        )
        self.bn = BatchNorm2d(out_channels, eps=1e-3)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC ``x``."""
        return jax.nn.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average that ignores the zero padding (TensorFlow's, pytorch-fid's patch)."""
    return avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class InceptionA(nnx.Module):
    """``Mixed_5b``-``Mixed_5d``: 1x1, 5x5, double 3x3 and pooled branches (FID pooling)."""

    def __init__(self, in_channels: int, pool_features: int, *, rngs: Rngs = None):
        self.branch1x1 = BasicConv2d(in_channels, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC ``x``."""
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return jnp.concatenate([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nnx.Module):
    """``Mixed_6a``: grid reduction 35 -> 17 by strided convolutions and a max pool."""

    def __init__(self, in_channels: int, *, rngs: Rngs = None):
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC ``x``."""
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), branch3x3dbl, max_pool2d(x, 3, 2)], axis=-1)


class InceptionC(nnx.Module):
    """``Mixed_6b``-``Mixed_6e``: factorised 7x7 branches (FID pooling)."""

    def __init__(self, in_channels: int, channels_7x7: int, *, rngs: Rngs = None):
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv2d(in_channels, 192, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC ``x``."""
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return jnp.concatenate([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nnx.Module):
    """``Mixed_7a``: grid reduction 17 -> 8."""

    def __init__(self, in_channels: int, *, rngs: Rngs = None):
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC ``x``."""
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return jnp.concatenate([branch3x3, branch7x7x3, max_pool2d(x, 3, 2)], axis=-1)


class InceptionE(nnx.Module):
    """``Mixed_7b`` (TF average pooling) and ``Mixed_7c`` (max pooling): expanded 3x3 branches.

    Args:
        in_channels: Input channels.
        max_pool: Whether the pooling branch max-pools (pytorch-fid's ``FIDInceptionE_2``) rather
            than averaging without the padding (``FIDInceptionE_1``).
        rngs: Random keys for torch's default initialisation; ``None`` leaves zeros.
    """

    def __init__(self, in_channels: int, *, max_pool: bool, rngs: Rngs = None):
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv2d(in_channels, 192, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC ``x``."""
        b3 = self.branch3x3_1(x)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = max_pool2d(x, 3, 1, 1) if self.max_pool else _tf_avg_pool(x)
        return jnp.concatenate(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(b3dbl),
                self.branch3x3dbl_3b(b3dbl),
                self.branch_pool(pooled),
            ],
            axis=-1,
        )


class InceptionOutput(NamedTuple):
    """Everything one forward pass of :class:`InceptionV3FID` computes.

    Attributes:
        logits: ``(batch, 1008)`` class logits (for the Inception Score).
        features: ``(batch, 2048)`` final average-pooled features (FID's standard features).
        features_768: ``(batch, 768)`` spatial means of the ``Mixed_6e`` output.
        features_192: ``(batch, 192)`` spatial means after the second max pool.
        features_64: ``(batch, 64)`` spatial means after the first max pool.
    """

    logits: jax.Array
    features: jax.Array
    features_768: jax.Array
    features_192: jax.Array
    features_64: jax.Array


def _example() -> tuple[Callable[..., jax.Array], tuple[jax.Array, ...]]:
    model = InceptionV3FID(rngs=nnx.Rngs(0))
    images = jax.random.uniform(jax.random.key(0), (1, 8, 8, 3), jnp.float32)
    return (lambda x: model(x)), (images,)


@register(
    "inception-v3-fid",
    kind="backbone",
    tier=1,
    domain="vision",
    jit_compatible=True,
    differentiable=True,
    example=_example,
)
class InceptionV3FID(nnx.Module):
    """pytorch-fid's InceptionV3 (the FID network), frozen, on NHWC images in ``[0, 1]``.

    Does what pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)`` does: resizes
    the images to 299x299 bilinearly (torch's ``align_corners=False``, no antialiasing), scales
    them to ``[-1, 1]`` and runs the network. The 64-, 192- and 768-dimensional features are the
    spatial means of the maps pytorch-fid returns for its blocks 0-2 (what its ``fid_score``
    averages them to), the 2048-dimensional ones are its block 3, and the 1008 logits come from the
    final ``fc`` layer (whose first output is the unused background class of the TF graph).
    Weights are ``FrozenWeight``: gradients flow to the images, never into the network.

    It satisfies the tier-1 backbone interface: :attr:`input_size` ``(299, 299)``,
    :attr:`num_features` 2048, ``__call__`` returns the 2048-d features, :meth:`logits` the 1008
    logits (:attr:`num_classes`); :meth:`forward` returns everything and :meth:`blocks` the raw
    block maps.

    Load the real weights with ``calibrax.backbones.load("inception-v3-fid")`` after importing
    pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` once.

    Args:
        input_scaling: ``"pytorch-fid"`` (default, ``2u - 1``) or ``"tf"`` (``(255u - 128) /
            128``, as clean-fid and torch-fidelity/torchmetrics).
        rngs: Random keys for torch's default initialisation; ``None`` leaves zero placeholders
            to be filled from a state dict.

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", 2015,
        arXiv:1512.00567. Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to
        a Local Nash Equilibrium", 2017, arXiv:1706.08500.
    """

    input_size = INPUT_SIZE
    #: Any size is accepted: images are resized to :attr:`input_size` first.
    min_size = 1
    num_features = 2048
    #: 1000 ImageNet classes, the TF graph's background class and 7 unused outputs.
    num_classes = 1008
    #: pytorch-fid's own resize (bilinear, no antialiasing), so that FID matches pytorch-fid.
    resize_method = "pytorch-fid"

    def __init__(self, *, input_scaling: str = "pytorch-fid", rngs: Rngs = None):
        checks.check_choice(input_scaling, INPUT_SCALINGS, "input_scaling")
        #: How [0, 1] pixels become the network's [-1, 1] input: ``"pytorch-fid"`` ``2u - 1``
        #: (pytorch-fid), ``"tf"`` ``(255 u - 128) / 128`` (the TF graph's own scaling, kept by
        #: clean-fid's and torch-fidelity's (torchmetrics') InceptionV3). Set it on a loaded
        #: backbone to reproduce those tools (see :data:`REFERENCE_TOOLS`).
        self.input_scaling = input_scaling
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
        self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = InceptionE(1280, max_pool=False, rngs=rngs)
        self.Mixed_7c = InceptionE(2048, max_pool=True, rngs=rngs)
        self.fc = Linear(2048, self.num_classes, rngs=rngs)

    def _check(self, images: jax.Array) -> None:
        checks.check_images(images, "images", channels=3, min_size=self.min_size)
        checks.check_finite(images, "images")
        checks.check_range(images, 0.0, 1.0, "images", hint="RGB scaled to [0, 1]")

    @checks.nan_if_invalid
    def _call_jitted(self, method: str, images: jax.Array) -> Any:
        # One compiled program even when called eagerly (op-by-op dispatch of ~95 layers would
        # compile each of them); under an outer jit this simply inlines.
        self._check(images)
        graphdef, state = nnx.split(self)
        return _jitted(graphdef, state, images, method)

    def _blocks(self, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        x = self._scaled(_resize(images))
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        block0 = max_pool2d(x, 3, 2)
        block1 = max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(block0)), 3, 2)
        x = block1
        for mixed in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
        ):
            x = mixed(x)
        block2 = x
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        block3 = jnp.mean(x, axis=(1, 2), keepdims=True)
        return block0, block1, block2, block3

    def _scaled(self, images: jax.Array) -> jax.Array:
        """[0, 1] pixels to the network's input range (see :attr:`input_scaling`)."""
        if self.input_scaling == "tf":
            return images * (255.0 / 128.0) - 1
        return 2 * images - 1

    def _forward(self, images: jax.Array) -> InceptionOutput:
        block0, block1, block2, block3 = self._blocks(images)
        features = block3[:, 0, 0, :]
        return InceptionOutput(
            logits=self.fc(features),
            features=features,
            features_768=jnp.mean(block2, axis=(1, 2)),
            features_192=jnp.mean(block1, axis=(1, 2)),
            features_64=jnp.mean(block0, axis=(1, 2)),
        )

    def forward(self, images: Float[Array, "batch height width 3"]) -> InceptionOutput:
        """Features and logits of ``images``.

        Args:
            images: ``(batch, height, width, 3)`` RGB floats in ``[0, 1]``, any size (they are
                resized to 299x299). Work is done in the input's dtype.

        Returns:
            An :class:`InceptionOutput`.

        Raises:
            ValueError: If ``images`` is not ``(batch, height, width, 3)``, is empty, or (when
                concrete, not under ``jit``) holds NaN/Inf or values outside ``[0, 1]``.
            TypeError: If ``images`` is not floating point.
        """
        return self._call_jitted("_forward", images)

    def blocks(
        self, images: Float[Array, "batch height width 3"]
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """pytorch-fid's four block outputs, as NHWC maps.

        Args:
            images: As for :meth:`forward`.

        Returns:
            ``(batch, 73, 73, 64)``, ``(batch, 35, 35, 192)``, ``(batch, 17, 17, 768)`` and
            ``(batch, 1, 1, 2048)`` maps.

        Raises:
            ValueError: As for :meth:`forward`.
            TypeError: As for :meth:`forward`.
        """
        return self._call_jitted("_blocks", images)

    def __call__(self, images: Float[Array, "batch height width 3"]) -> Float[Array, "batch 2048"]:
        """The 2048-d FID features of ``images`` (see :meth:`forward`)."""
        return self.forward(images).features

    def logits(self, images: Float[Array, "batch height width 3"]) -> Float[Array, "batch 1008"]:
        """The 1008 logits of ``images``, for the Inception Score (see :meth:`forward`)."""
        return self.forward(images).logits


@functools.partial(jax.jit, static_argnums=(0, 3))
def _jitted(graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array, method: str) -> Any:
    return getattr(nnx.merge(graphdef, state), method)(images)


register_backbone("inception-v3-fid", InceptionV3FID)
