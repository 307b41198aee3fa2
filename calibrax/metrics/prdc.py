"""Streaming precision, recall, density and coverage on a frozen backbone."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.functional.prdc import check_prdc_k
from calibrax.functional.prdc import prdc_from_buffers
from calibrax.metrics.feature_buffer import BufferedFeatureMetric
from calibrax.metrics.frozen_backbone import DEFAULT_BACKBONE
from calibrax.metrics.reference import RealRowsReference

__all__ = ["PrecisionRecall"]


@register(
    "PrecisionRecall",
    kind="stateful_metric",
    tier=1,
    domain="generative",
    higher_is_better=True,
    example=lambda: (
        lambda r, f: _example(r, f),
        (
            jnp.sin(jnp.arange(40.0)).reshape(10, 4),
            jnp.cos(jnp.arange(36.0)).reshape(9, 4),
        ),
    ),
)
class PrecisionRecall(BufferedFeatureMetric, RealRowsReference):
    r"""Streaming precision/recall (Kynkäänniemi et al.) and density/coverage (Naeem et al.).

    Features are kept in preallocated buffers of ``max_samples`` rows per side (see
    :class:`~calibrax.metrics.feature_buffer.BufferedFeatureMetric` for the overflow policy);
    :meth:`compute` applies :func:`calibrax.functional.precision_recall_density_coverage` to the
    buffered rows, with pairwise distances in blocks of ``block_size`` rows.

    Precision without x64 (``dtype=None`` in a process with ``jax_enable_x64`` off): float32
    buffers and float32 distances; tested against the float64 metric on the same rows
    (the same neighbourhood decisions: values equal to 1e-6). The random draws
    are float32 either way, so a seed gives the same values with x64 on or off.

    Args:
        backbone: Backbone module/callable, name for ``calibrax.backbones.load``, or ``None``.
        num_features: Feature length (required with ``backbone=None``).
        max_samples: Buffer capacity per side.
        k: Neighbours defining each k-NN ball.
        block_size: Rows per block of the distance computation.
        input_size: ``(height, width)`` for backbones without ``input_size``.
        normalize: ``False``: uint8 images in [0, 255]; ``True``: floats in [0, 1].
        resize_method: :func:`~calibrax.functional.resize_images` mode.
        reset_real_features: Whether :meth:`reset` clears the real buffer too.
        dtype: Buffer and compute dtype. ``None`` (default): float64 when ``jax_enable_x64`` is
            on, else float32 (no process-wide x64 needed; see the class's precision note); an
            explicit float64 needs x64.

    References:
        Kynkäänniemi et al., 2019, arXiv:1904.06991; Naeem et al., 2020, arXiv:2002.09797.
    """

    name = "precision_recall"
    higher_is_better = True
    sides = ("real", "fake")

    def __init__(
        self,
        *,
        backbone: Any = DEFAULT_BACKBONE,
        num_features: int | None = None,
        max_samples: int = 10_000,
        k: int = 5,
        block_size: int = 1024,
        input_size: tuple[int, int] | None = None,
        normalize: bool = False,
        resize_method: str | None = None,
        reset_real_features: bool = True,
        dtype: Any = None,
    ) -> None:
        checks.check_positive_int(k, "k")
        checks.check_positive_int(block_size, "block_size")
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
        check_prdc_k(k, max_samples, "buffered (`max_samples`)")
        self.k = k
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
        """Append one batch to the real (``real=True``) or generated buffer.

        ``mask`` (``(batch,)`` bool / 0-1) keeps only the unmasked rows, in order; a zero-row or
        all-masked batch is a no-op. Other keyword arguments are ignored (``nnx.MultiMetric``).

        Raises:
            ValueError: On bad input or buffer overflow.
            TypeError: On a wrong image dtype or a non-bool ``real``.
        """
        self._buffered_update(images, features, real, mask)

    def compute(self) -> dict[str, jax.Array]:
        """Precision, recall, density and coverage of the buffered samples.

        Returns:
            ``{"precision", "recall", "density", "coverage"}`` scalars.

        Raises:
            ValueError: If a side holds ``k`` samples or fewer, or a buffer overflowed (checked
                eagerly).
        """
        counts = {side: self._held(side, self.k + 1, f" with k={self.k}") for side in self.sides}
        values = prdc_from_buffers(
            self.real_features[...],
            counts["real"],
            self.fake_features[...],
            counts["fake"],
            k=self.k,
            block_size=self.block_size,
            dtype=self.dtype,
        )
        return self._nan_if_overflowed(values)


def _example(real: jax.Array, fake: jax.Array) -> jax.Array:
    metric = PrecisionRecall(
        backbone=None, num_features=real.shape[1], max_samples=16, k=2, dtype=real.dtype
    )
    metric.update(features=real, real=True)
    metric.update(features=fake, real=False)
    return jnp.stack(list(metric.compute().values()))
