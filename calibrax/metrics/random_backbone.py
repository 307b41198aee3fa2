"""A small deterministic backbone: fixed random 3x3 convolution, ReLU, mean pool, projection.

It satisfies the tier-1 backbone interface (``input_size``, ``num_features``, ``num_classes``,
``__call__`` and ``logits``) without any weight file, so the generative metrics can be exercised
and tested end to end on images before (or without) a pretrained backbone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core.state import FrozenWeight

__all__ = ["RandomConvBackbone"]


class RandomConvBackbone(nnx.Module):
    """Frozen random features: ``conv3x3(stride 2) -> ReLU -> mean pool -> linear``.

    Weights are :class:`~calibrax.core.FrozenWeight` drawn once from ``rngs`` and read through
    ``jax.lax.stop_gradient``. The computation runs in the images' float dtype (float32 for images
    the metrics convert from uint8; float64 images stay float64), which lets reference tests
    reproduce it exactly in torch.

    Args:
        input_size: ``(height, width)`` the metrics resize images to.
        channels: Convolution output channels.
        num_features: Length of the feature vector.
        num_classes: Length of the ``logits`` vector.
        rngs: Random generators for the weights.
    """

    resize_method = "bilinear"

    def __init__(
        self,
        *,
        input_size: tuple[int, int] = (16, 16),
        channels: int = 16,
        num_features: int = 32,
        num_classes: int = 10,
        rngs: nnx.Rngs,
    ) -> None:
        self.input_size = tuple(input_size)
        self.num_features = num_features
        self.num_classes = num_classes
        self.conv = FrozenWeight(jax.random.normal(rngs.params(), (3, 3, 3, channels)) / 3.0)
        self.bias = FrozenWeight(jax.random.normal(rngs.params(), (channels,)) * 0.1)
        self.proj = FrozenWeight(
            jax.random.normal(rngs.params(), (channels, num_features)) / channels**0.5
        )
        self.head = FrozenWeight(
            jax.random.normal(rngs.params(), (num_features, num_classes)) / num_features**0.5
        )

    def _weight(self, w: FrozenWeight, dtype: jnp.dtype) -> jax.Array:
        return jax.lax.stop_gradient(w[...]).astype(dtype)

    def __call__(self, images: Float[Array, "batch h w 3"]) -> Float[Array, "batch features"]:
        """Features of NHWC images in [0, 1]: shape (batch, num_features)."""
        dtype = images.dtype
        x = jax.lax.conv_general_dilated(
            images,
            self._weight(self.conv, dtype),
            window_strides=(2, 2),
            padding=((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )
        x = jax.nn.relu(x + self._weight(self.bias, dtype)[None, None, None, :])
        pooled = jnp.mean(x, axis=(1, 2))
        return jnp.matmul(
            pooled, self._weight(self.proj, dtype), precision=jax.lax.Precision.HIGHEST
        )

    def logits(self, images: Float[Array, "batch h w 3"]) -> Float[Array, "batch classes"]:
        """Class logits of NHWC images in [0, 1]: shape (batch, num_classes)."""
        features = self(images)
        return jnp.matmul(
            features, self._weight(self.head, features.dtype), precision=jax.lax.Precision.HIGHEST
        )
