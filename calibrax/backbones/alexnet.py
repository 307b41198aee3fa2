"""AlexNet's convolutional trunk (torchvision naming), exposing the five LPIPS taps."""

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

__all__ = ["AlexNet"]


def _features_only(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the classifier of a full torchvision state dict: the trunk needs ``features.*`` only."""
    return {k: v for k, v in state_dict.items() if k.startswith("features.")}


def _example() -> tuple[Callable[..., jax.Array], tuple[jax.Array, ...]]:
    model = AlexNet(rngs=nnx.Rngs(0))

    def fn(images: jax.Array) -> jax.Array:
        return jnp.concatenate([t.mean(axis=(1, 2)) for t in model.taps(images)], axis=-1)

    images = jax.random.uniform(jax.random.key(0), (1, 31, 35, 3), jnp.float32, -1.0, 1.0)
    return fn, (images,)


@register(
    "alexnet",
    kind="backbone",
    tier=1,
    domain="vision",
    jit_compatible=True,
    differentiable=True,
    example=_example,
)
class AlexNet(nnx.Module):
    """The ``features`` trunk of torchvision's AlexNet, frozen, on NHWC images.

    Parameters are named as in torchvision's state dict (``features.0.weight`` ...
    ``features.10.bias``); the classifier is not part of the module and is dropped when the
    torchvision file is loaded with ``calibrax.backbones.load("alexnet")``. The outputs are the five
    ReLU activations that LPIPS compares (its ``alexnet`` slices end at ``features`` indices 1, 4,
    7, 9 and 11). Gradients flow to the input, never into the weights.

    Args:
        rngs: Random keys for torch's default initialisation; ``None`` leaves zero placeholders
            to be filled from a state dict.

    References:
        Krizhevsky, "One weird trick for parallelizing convolutional neural networks", 2014,
        arXiv:1404.5997. Zhang et al., "The Unreasonable Effectiveness of Deep Features as a
        Perceptual Metric", 2018, arXiv:1801.03924.
    """

    #: Names of the taps, shallow to deep.
    tap_names = ("relu1", "relu2", "relu3", "relu4", "relu5")
    #: Channels of each tap.
    tap_channels = (64, 192, 384, 256, 256)
    #: Smallest height and width the trunk accepts (as torchvision's).
    min_input_size = 31

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        self.features = nnx.Dict(
            {
                "0": Conv2d(3, 64, 11, stride=4, padding=2, rngs=rngs),
                "3": Conv2d(64, 192, 5, padding=2, rngs=rngs),
                "6": Conv2d(192, 384, 3, padding=1, rngs=rngs),
                "8": Conv2d(384, 256, 3, padding=1, rngs=rngs),
                "10": Conv2d(256, 256, 3, padding=1, rngs=rngs),
            }
        )

    def __call__(
        self, images: Float[Array, "batch height width 3"]
    ) -> dict[str, Float[Array, "batch h w c"]]:
        """The LPIPS taps of ``images``.

        Args:
            images: ``(batch, height, width, 3)`` floats, already normalised the way the weights
                expect (LPIPS shifts and scales ``[-1, 1]`` images to ImageNet statistics).

        Returns:
            ``{"relu1": ..., "relu5": ...}``, each ``(batch, h, w, channels)`` with the channels of
            :attr:`tap_channels`.

        Raises:
            ValueError: If ``images`` is not ``(batch, height, width, 3)`` with height and width at
                least 31, or is empty.
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
        f = self.features
        relu1 = jax.nn.relu(f["0"](images))
        relu2 = jax.nn.relu(f["3"](max_pool2d(relu1, 3, 2)))
        relu3 = jax.nn.relu(f["6"](max_pool2d(relu2, 3, 2)))
        relu4 = jax.nn.relu(f["8"](relu3))
        relu5 = jax.nn.relu(f["10"](relu4))
        return (relu1, relu2, relu3, relu4, relu5)


@functools.partial(jax.jit, static_argnums=0)
def _jitted_taps(graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array) -> tuple:
    return nnx.merge(graphdef, state)._taps(images)


register_backbone("alexnet", AlexNet, convert=_features_only)
