"""SqueezeNet 1.1's convolutional trunk (torchvision naming), exposing the seven LPIPS taps."""

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
from calibrax.backbones._layers import max_pool2d
from calibrax.backbones._zoo import register_backbone
from calibrax.core import checks
from calibrax.core.registry import register

__all__ = ["Fire", "SqueezeNet1_1"]

# ``features`` index -> (in, squeeze, expand) of the Fire modules of torchvision's squeezenet1_1.
_FIRES = {
    3: (64, 16, 64),
    4: (128, 16, 64),
    6: (128, 32, 128),
    7: (256, 32, 128),
    9: (256, 48, 192),
    10: (384, 48, 192),
    11: (384, 64, 256),
    12: (512, 64, 256),
}
# The ``features`` indices that end each LPIPS slice (after 0 and 1, the conv and its ReLU); a
# max pool (3x3, stride 2, ceil mode) sits at indices 2, 5 and 8, before the fires of slices 2-4.
_SLICES = ((3, 4), (6, 7), (9,), (10,), (11,), (12,))


def _features_only(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the classifier of a full torchvision state dict: the trunk needs ``features.*`` only."""
    return {k: v for k, v in state_dict.items() if k.startswith("features.")}


class Fire(nnx.Module):
    """SqueezeNet's Fire module: a 1x1 squeeze, then 1x1 and 3x3 expands, concatenated.

    Args:
        in_channels: Input channels.
        squeeze: Channels of the squeeze convolution.
        expand: Channels of each expand convolution (the output has ``2 * expand``).
        rngs: Random keys for torch's default initialisation; ``None`` leaves zeros.
    """

    def __init__(self, in_channels: int, squeeze: int, expand: int, *, rngs: nnx.Rngs | None):
        self.squeeze = Conv2d(in_channels, squeeze, 1, rngs=rngs)
        self.expand1x1 = Conv2d(squeeze, expand, 1, rngs=rngs)
        self.expand3x3 = Conv2d(squeeze, expand, 3, padding=1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the module to NHWC ``x``."""
        s = jax.nn.relu(self.squeeze(x))
        return jnp.concatenate(
            [jax.nn.relu(self.expand1x1(s)), jax.nn.relu(self.expand3x3(s))], axis=-1
        )


def _example() -> tuple[Callable[..., jax.Array], tuple[jax.Array, ...]]:
    model = SqueezeNet1_1(rngs=nnx.Rngs(0))

    def fn(images: jax.Array) -> jax.Array:
        return jnp.concatenate([t.mean(axis=(1, 2)) for t in model.taps(images)], axis=-1)

    images = jax.random.uniform(jax.random.key(0), (1, 32, 36, 3), jnp.float32, -1.0, 1.0)
    return fn, (images,)


@register(
    "squeezenet1_1",
    kind="backbone",
    tier=1,
    domain="vision",
    jit_compatible=True,
    differentiable=True,
    example=_example,
)
class SqueezeNet1_1(nnx.Module):
    """The ``features`` trunk of torchvision's SqueezeNet 1.1, frozen, on NHWC images.

    Parameters are named as in torchvision's state dict (``features.0.weight``,
    ``features.3.squeeze.weight``, ``features.12.expand3x3.bias``, ...); the classifier is not part
    of the module and is dropped when the torchvision file is loaded with
    ``calibrax.backbones.load("squeezenet1_1")``. The outputs are the seven activations that LPIPS
    compares (its ``squeezenet`` slices end at ``features`` indices 1, 4, 7, 9, 10, 11 and 12). The
    max pools use torch's ``ceil_mode``. Gradients flow to the input, never into the weights.

    Args:
        rngs: Random keys for torch's default initialisation; ``None`` leaves zero placeholders
            to be filled from a state dict.

    References:
        Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB
        model size", 2016, arXiv:1602.07360. Zhang et al., "The Unreasonable Effectiveness of Deep
        Features as a Perceptual Metric", 2018, arXiv:1801.03924.
    """

    #: Names of the taps, shallow to deep.
    tap_names = ("relu1", "relu2", "relu3", "relu4", "relu5", "relu6", "relu7")
    #: Channels of each tap.
    tap_channels = (64, 128, 256, 384, 384, 512, 512)
    #: Smallest height and width the trunk accepts (as torchvision's).
    min_input_size = 17

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        layers: dict[str, nnx.Module] = {"0": Conv2d(3, 64, 3, stride=2, rngs=rngs)}
        for index, (in_channels, squeeze, expand) in _FIRES.items():
            layers[str(index)] = Fire(in_channels, squeeze, expand, rngs=rngs)
        self.features = nnx.Dict(layers)

    def __call__(
        self, images: Float[Array, "batch height width 3"]
    ) -> dict[str, Float[Array, "batch h w c"]]:
        """The LPIPS taps of ``images``.

        Args:
            images: ``(batch, height, width, 3)`` floats, already normalised the way the weights
                expect (LPIPS shifts and scales ``[-1, 1]`` images to ImageNet statistics).

        Returns:
            ``{"relu1": ..., "relu7": ...}``, each ``(batch, h, w, channels)`` with the channels of
            :attr:`tap_channels`.

        Raises:
            ValueError: If ``images`` is not ``(batch, height, width, 3)`` with height and width at
                least 17, or is empty.
            TypeError: If ``images`` is not floating point.
        """
        return dict(zip(self.tap_names, self.taps(images), strict=True))

    def taps(self, images: Float[Array, "batch height width 3"]) -> tuple[jax.Array, ...]:
        """The same activations as :meth:`__call__`, as a tuple in :attr:`tap_names` order."""
        checks.check_images(images, "images", channels=3, min_size=self.min_input_size)
        # One compiled program even when called eagerly; under an outer jit this simply inlines.
        graphdef, state = nnx.split(self)
        return _jitted_taps(graphdef, state, images)

    def _taps(self, images: jax.Array) -> tuple[jax.Array, ...]:
        h = jax.nn.relu(self.features["0"](images))
        taps = [h]
        for number, indices in enumerate(_SLICES):
            if number < 3:
                h = max_pool2d(h, 3, 2, ceil_mode=True)
            for index in indices:
                h = self.features[str(index)](h)
            taps.append(h)
        return tuple(taps)


@functools.partial(jax.jit, static_argnums=0)
def _jitted_taps(graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array) -> tuple:
    return nnx.merge(graphdef, state)._taps(images)


register_backbone("squeezenet1_1", SqueezeNet1_1, convert=_features_only)
