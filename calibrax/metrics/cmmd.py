"""Streaming CMMD (CLIP maximum mean discrepancy) on a frozen backbone."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core.registry import register
from calibrax.functional.cmmd import CMMD_SCALE
from calibrax.functional.cmmd import CMMD_SIGMA
from calibrax.functional.cmmd import DEFAULT_BLOCK
from calibrax.functional.cmmd import check_cmmd_settings
from calibrax.functional.cmmd import cmmd_from_buffers
from calibrax.metrics.feature_buffer import BufferedFeatureMetric
from calibrax.metrics.reference import RealRowsReference

__all__ = ["CMMD", "CMMD_BACKBONE"]

#: The feature space of the CMMD paper: OpenAI CLIP ViT-L/14@336px's projected image embedding.
CMMD_BACKBONE = "clip-vit-l14-336"


@register(
    "CMMD",
    kind="stateful_metric",
    tier=1,
    domain="generative",
    higher_is_better=False,
    example=lambda: (
        lambda r, f: _example(r, f),
        (
            jnp.sin(jnp.arange(40.0)).reshape(10, 4),
            jnp.cos(jnp.arange(36.0)).reshape(9, 4),
        ),
    ),
)
class CMMD(BufferedFeatureMetric, RealRowsReference):
    r"""Streaming CMMD (Jayasumana et al. 2024) between real and generated images.

    Embeddings (the backbone's, CLIP ViT-L/14 by default, or ``features=`` given directly) are
    L2-normalized (``l2_normalize=True``, as the reference pipeline's ``embedding.py`` does to
    CLIP image embeddings) and kept in preallocated buffers of ``max_samples`` rows per side
    (overflow policy: :class:`~calibrax.metrics.feature_buffer.BufferedFeatureMetric`).
    :meth:`compute` returns :func:`calibrax.functional.cmmd` of the held rows: 1000 x the MMD²
    with the Gaussian RBF kernel (``sigma = 10``), plain means of the three kernel matrices with
    their diagonals (the reference's biased estimator, so numbers sit beside published CMMD),
    or the unbiased estimator with ``unbiased=True``. No subsets; kernel sums run in blocks of
    ``block_size`` rows (memory ``O(block_size²)``).

    Feature space: the paper's, OpenAI's ViT-L/14@336px image tower (``clip-vit-l14-336``, imported
    once from ``ViT-L-14-336px.pt``); ``backbone`` accepts any name (``clip-vit-l14`` at 224 px, or
    an alias made with ``calibrax weights import NAME PATH --as ALIAS``), module or ``None``
    (features only).

    ``update(images=..., real=...)`` / ``update(features=..., real=...)`` runs under ``nnx.jit``,
    takes ``mask=``, and ignores unknown keyword arguments (``nnx.MultiMetric``); ``merge``,
    ``reduce`` and ``sync`` append the other rows as the other buffered metrics do.

    Args:
        backbone: Backbone module/callable, name for ``calibrax.backbones.load``, or ``None``.
        num_features: Embedding length (required with ``backbone=None``).
        max_samples: Buffer capacity per side.
        sigma: RBF bandwidth (the paper's 10).
        scale: Output factor (the paper's 1000).
        unbiased: Drop the kernel diagonals (the unbiased MMD² estimator).
        l2_normalize: Scale every embedding to unit length before buffering.
        block_size: Rows per kernel block in :meth:`compute`.
        input_size: ``(height, width)`` for backbones without ``input_size``.
        normalize: ``False``: uint8 images in [0, 255]; ``True``: floats in [0, 1].
        resize_method: :func:`~calibrax.functional.resize_images` mode.
        reset_real_features: Whether :meth:`reset` clears the real buffer too.
        dtype: Buffer and compute dtype; ``None``: float64 with ``jax_enable_x64`` on, else
            float32 (``k - 1`` is summed with ``expm1``, so float32 keeps its digits).

    References:
        Jayasumana et al., "Rethinking FID: Towards a Better Evaluation Metric for Image
        Generation", CVPR 2024, arXiv:2401.09603; google-research ``cmmd``.
    """

    name = "cmmd"
    higher_is_better = False
    sides = ("real", "fake")

    def __init__(
        self,
        *,
        backbone: Any = CMMD_BACKBONE,
        num_features: int | None = None,
        max_samples: int = 10_000,
        sigma: float = CMMD_SIGMA,
        scale: float = CMMD_SCALE,
        unbiased: bool = False,
        l2_normalize: bool = True,
        block_size: int = DEFAULT_BLOCK,
        input_size: tuple[int, int] | None = None,
        normalize: bool = False,
        resize_method: str | None = None,
        reset_real_features: bool = True,
        dtype: Any = None,
    ) -> None:
        check_cmmd_settings(sigma, scale, unbiased, block_size)
        if not isinstance(l2_normalize, bool):
            raise ValueError(f"expected `l2_normalize` to be a bool, got {l2_normalize!r}")
        super().__init__(
            backbone=backbone,
            num_features=num_features,
            input_size=input_size,
            normalize=normalize,
            resize_method=resize_method,
            reset_real_features=reset_real_features,
            dtype=dtype,
        )
        self._init_buffers(max_samples)
        self.sigma = float(sigma)
        self.scale = float(scale)
        self.unbiased = unbiased
        self.l2_normalize = l2_normalize
        self.block_size = block_size

    def update(
        self,
        images: Float[Array, "batch h w 3"] | None = None,
        *,
        features: Float[Array, "batch features"] | None = None,
        real: bool,
        mask: jax.Array | None = None,
        **kwargs: Any,
    ) -> None:
        """Embed one batch (or take ``features``) and append it to the real or generated buffer.

        ``mask`` (``(batch,)`` bool / 0-1) keeps only the unmasked rows, in order; a zero-row or
        all-masked batch is a no-op. Other keyword arguments are ignored (``nnx.MultiMetric``).

        Raises:
            ValueError: On bad input (see :class:`FrechetDistance.update`) or buffer overflow.
            TypeError: On a wrong image dtype or a non-bool ``real``.
        """
        self._buffered_update(images, features, real, mask)

    def _stored(self, x: jax.Array) -> jax.Array:
        if not self.l2_normalize:
            return x
        # An all-zero embedding stays zero (no NaN from 0/0); CLIP embeddings are never 0.
        norm = jnp.linalg.norm(x, axis=1, keepdims=True)
        return x / jnp.where(norm > 0, norm, 1.0)

    def compute(self) -> dict[str, jax.Array]:
        """CMMD of the held rows.

        Returns:
            ``{"cmmd": scalar}``.

        Raises:
            ValueError: If a buffer holds fewer than 2 rows or has overflowed (checked eagerly;
                under jit those give NaN).
        """
        counts = {side: self._held(side, 2, "") for side in self.sides}
        value = cmmd_from_buffers(
            self.real_features[...],
            counts["real"],
            self.fake_features[...],
            counts["fake"],
            sigma=self.sigma,
            scale=self.scale,
            unbiased=self.unbiased,
            block_size=self.block_size,
        )
        too_few = (counts["real"] < 2) | (counts["fake"] < 2)
        return self._nan_if_overflowed({"cmmd": jnp.where(too_few, jnp.nan, value)})


def _example(real: jax.Array, fake: jax.Array) -> jax.Array:
    metric = CMMD(backbone=None, num_features=real.shape[1], max_samples=16, dtype=real.dtype)
    metric.update(features=real, real=True)
    metric.update(features=fake, real=False)
    return metric.compute()["cmmd"]
