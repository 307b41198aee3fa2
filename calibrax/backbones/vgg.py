"""VGG16's convolutional trunk (torchvision naming), exposing the five LPIPS taps."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.backbones._layers import Conv2d
from calibrax.backbones._layers import l2_pool2d
from calibrax.backbones._layers import max_pool2d
from calibrax.backbones._zoo import register_backbone
from calibrax.core import checks
from calibrax.core.registry import register

__all__ = ["VGG16"]

# torchvision's configuration "D": channels of the 3x3 convolutions of each stage; every stage but
# the first starts with a 2x2 max pool. In ``features`` each convolution is followed by its ReLU and
# each stage by the pool, which fixes the indices below.
_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _conv_indices() -> tuple[tuple[int, ...], ...]:
    """``features`` index of each convolution, per stage: ((0, 2), (5, 7), ..., (24, 26, 28))."""
    out, index = [], 0
    for stage, widths in enumerate(_STAGES):
        index += 1 if stage else 0  # the stage's max pool
        out.append(tuple(range(index, index + 2 * len(widths), 2)))
        index += 2 * len(widths)  # each convolution and its ReLU
    return tuple(out)


_CONV_INDICES = _conv_indices()
POOLS = ("max", "l2")


def _features_only(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the classifier of a full torchvision state dict: the trunk needs ``features.*`` only."""
    return {k: v for k, v in state_dict.items() if k.startswith("features.")}


def _example() -> tuple[Callable[..., jax.Array], tuple[jax.Array, ...]]:
    model = VGG16(rngs=nnx.Rngs(0))

    def fn(images: jax.Array) -> jax.Array:
        return jnp.concatenate([t.mean(axis=(1, 2)) for t in model.taps(images)], axis=-1)

    images = jax.random.uniform(jax.random.key(0), (1, 16, 20, 3), jnp.float32, -1.0, 1.0)
    return fn, (images,)


@register(
    "vgg16",
    kind="backbone",
    tier=1,
    domain="vision",
    jit_compatible=True,
    differentiable=True,
    example=_example,
)
class VGG16(nnx.Module):
    """The ``features`` trunk of torchvision's VGG16 up to ``relu5_3``, frozen, on NHWC images.

    Parameters are named as in torchvision's state dict (``features.0.weight`` ...
    ``features.28.bias``); the classifier is not part of the module and is dropped when the
    torchvision file is loaded with ``calibrax.backbones.load("vgg16")``. The outputs are the ReLU
    activations that LPIPS compares: ``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3`` and
    ``relu5_3`` (``features`` indices 3, 8, 15, 22, 29; the last pool is not needed). Gradients flow
    to the input, never into the weights.

    Args:
        rngs: Random keys for torch's default initialisation; ``None`` leaves zero placeholders
            to be filled from a state dict.

    References:
        Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
        Recognition", 2014, arXiv:1409.1556. Zhang et al., "The Unreasonable Effectiveness of Deep
        Features as a Perceptual Metric", 2018, arXiv:1801.03924.
    """

    #: Names of the taps, shallow to deep.
    tap_names = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
    #: Channels of each tap.
    tap_channels = (64, 128, 256, 512, 512)
    #: Smallest height and width the trunk accepts (four 2x2 pools before ``relu5_3``).
    min_input_size = 16

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        layers = {}
        in_channels = 3
        for widths, indices in zip(_STAGES, _CONV_INDICES, strict=True):
            for width, index in zip(widths, indices, strict=True):
                layers[str(index)] = Conv2d(in_channels, width, 3, padding=1, rngs=rngs)
                in_channels = width
        self.features = nnx.Dict(layers)

    def __call__(
        self, images: Float[Array, "batch height width 3"]
    ) -> dict[str, Float[Array, "batch h w c"]]:
        """The LPIPS taps of ``images``.

        Args:
            images: ``(batch, height, width, 3)`` floats, already normalised the way the weights
                expect (LPIPS shifts and scales ``[-1, 1]`` images to ImageNet statistics).

        Returns:
            ``{"relu1_2": ..., "relu5_3": ...}``, each ``(batch, h, w, channels)`` with the
            channels of :attr:`tap_channels`; the stages halve the height and width (rounding down).

        Raises:
            ValueError: If ``images`` is not ``(batch, height, width, 3)`` with height and width at
                least 16, or is empty.
            TypeError: If ``images`` is not floating point.
        """
        return dict(zip(self.tap_names, self.taps(images), strict=True))

    def taps(
        self, images: Float[Array, "batch height width 3"], *, pool: str = "max"
    ) -> tuple[jax.Array, ...]:
        """The same activations as :meth:`__call__`, as a tuple in :attr:`tap_names` order.

        Args:
            images: As for :meth:`__call__`.
            pool: ``"max"``: VGG's 2x2 max pools between the stages (torchvision, LPIPS).
                ``"l2"``: DISTS's L2 pooling (:func:`~calibrax.backbones._layers.l2_pool2d`) in
                their place, as Ding et al. do; each stage then has ``ceil`` of half the size.

        Raises:
            ValueError: As for :meth:`__call__`, or on an unknown ``pool``.
        """
        checks.check_images(images, "images", channels=3, min_size=self.min_input_size)
        checks.check_choice(pool, POOLS, "pool")
        # One compiled program even when called eagerly; under an outer jit this simply inlines.
        graphdef, state = nnx.split(self)
        return _jitted_taps(graphdef, state, images, pool)

    def _taps(self, images: jax.Array, pool: str = "max") -> tuple[jax.Array, ...]:
        h = images
        taps = []
        for stage, indices in enumerate(_CONV_INDICES):
            if stage:
                h = max_pool2d(h, 2, 2) if pool == "max" else l2_pool2d(h)
            for index in indices:
                h = jax.nn.relu(self.features[str(index)](h))
            taps.append(h)
        return tuple(taps)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _jitted_taps(
    graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array, pool: str = "max"
) -> tuple:
    return nnx.merge(graphdef, state)._taps(images, pool)


register_backbone("vgg16", VGG16, convert=_features_only)
