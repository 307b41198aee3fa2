"""A small deterministic trunk for tests and examples that must not need pretrained weights.

Three frozen 3x3 convolutions with ReLU at strides 1, 2, 2, initialised from a seed. Not a
perceptual model: it exercises the LPIPS machinery (taps, heads, training) at low cost.
"""

from __future__ import annotations

import jax
from flax import nnx

from calibrax.backbones._layers import Conv2d

__all__ = ["ToyTrunk"]


class ToyTrunk(nnx.Module):
    """Frozen random conv trunk with three taps (8, 16, 16 channels)."""

    tap_channels = (8, 16, 16)
    min_input_size = 8
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv0 = Conv2d(3, 8, 3, stride=1, padding=1, rngs=rngs)
        self.conv1 = Conv2d(8, 16, 3, stride=2, padding=1, rngs=rngs)
        self.conv2 = Conv2d(16, 16, 3, stride=2, padding=1, rngs=rngs)

    def taps(self, x: jax.Array) -> list[jax.Array]:
        t0 = jax.nn.relu(self.conv0(x))
        t1 = jax.nn.relu(self.conv1(t0))
        t2 = jax.nn.relu(self.conv2(t1))
        return [t0, t1, t2]
