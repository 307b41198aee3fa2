"""Image quality metrics as classes: PSNR, SSIM and MS-SSIM.

Two shells around the pure functions of :mod:`calibrax.functional.image`:

- ``PSNR``, ``SSIM``, ``MSSSIM``: ``MetricProtocol`` classes (``compute(predictions, targets)``).
- ``StreamingPSNR``, ``StreamingSSIM``, ``StreamingMSSSIM``: streaming metrics whose state is the
  sum of the per-image scores and the image count (:class:`~calibrax.core.MetricState`), so any
  split of the data into batches, devices or hosts gives the mean over all images.

Both call the same per-image function, so they cannot disagree with the function.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from calibrax.core.base import Metric
from calibrax.core.registry import register
from calibrax.functional import image as F
from calibrax.metrics._accumulate import SumCountMetric

__all__ = ["MSSSIM", "PSNR", "SSIM", "StreamingMSSSIM", "StreamingPSNR", "StreamingSSIM"]


def _pair(seed: int, size: int, batch: int = 2, channels: int = 3) -> tuple[jax.Array, jax.Array]:
    key_p, key_t = jax.random.split(jax.random.key(seed))
    t = jax.random.uniform(key_t, (batch, size, size, channels), jnp.float32)
    p = jnp.clip(t + 0.1 * jax.random.normal(key_p, t.shape, jnp.float32), 0.0, 1.0)
    return p, t


_MS_SIZE = F.ms_ssim_min_size(len(F.MS_SSIM_BETAS))


def _metric_example(cls: type, size: int, batch: int = 2, channels: int = 3):
    def example():
        return (lambda p, t: cls(data_range=1.0)(p, t)), _pair(4, size, batch, channels)

    return example


def _streaming_example(cls: type, size: int, batch: int = 2, channels: int = 3):
    def example():
        def fn(p: jax.Array, t: jax.Array) -> jax.Array:
            metric = cls(data_range=1.0)
            metric.update(predictions=p[:1], targets=t[:1])
            metric.update(predictions=p[1:], targets=t[1:])
            return metric.compute()[metric.name]

        return fn, _pair(5, size, batch, channels)

    return example


class _ImageMetric(Metric):
    """``MetricProtocol`` shell: validates, then applies a per-image function and averages."""

    _min_size: int = 1
    _what: str = ""

    def validate_inputs(self, predictions: jax.Array, targets: jax.Array) -> None:
        """Check shapes, dtypes, finiteness and the declared range (see ``calibrax.functional``).

        Raises:
            ValueError: If inputs are incompatible or out of range.
            TypeError: If a dtype is wrong.
        """
        F.validate_images(
            predictions,
            targets,
            self.config["data_range"],
            min_size=self._min_size,
            what=self._what,
        )


@register(
    "PSNR",
    kind="metric",
    tier=0,
    domain="image",
    higher_is_better=True,
    differentiable=True,
    example=_metric_example(lambda **kw: PSNR(**kw), 8),
)
class PSNR(_ImageMetric):
    """Peak signal-to-noise ratio in dB, mean over images (see :func:`calibrax.functional.psnr`).

    Args:
        data_range: A positive number ``d`` (images in ``[0, d]``), a ``(low, high)`` pair, or
            ``None`` to infer 1 or 2 per image from the target as scikit-image does.

    Raises:
        ValueError: A malformed ``data_range`` (at construction); bad inputs (at compute).
    """

    name = "psnr"
    higher_is_better = True

    def __init__(self, *, data_range: F.DataRange | None) -> None:
        if data_range is not None:
            F.resolve_data_range(data_range)
        super().__init__(data_range=data_range)

    def _compute(
        self, predictions: jax.Array, targets: jax.Array, *, data_range: F.DataRange | None
    ) -> jax.Array:
        return jnp.mean(F.psnr_per_image(predictions, targets, data_range))


@register(
    "SSIM",
    kind="metric",
    tier=0,
    domain="image",
    higher_is_better=True,
    differentiable=True,
    example=_metric_example(lambda **kw: SSIM(**kw), 16),
)
class SSIM(_ImageMetric):
    """Structural similarity, mean over images (see :func:`calibrax.functional.ssim`).

    Args:
        data_range: A positive number ``d`` (images in ``[0, d]``) or a ``(low, high)`` pair.
        padding: ``"valid"`` (Wang et al., scikit-image) or ``"reflect"`` (torchmetrics).

    Raises:
        ValueError: A malformed ``data_range`` or ``padding`` (at construction); bad inputs (at
            compute).
    """

    name = "ssim"
    higher_is_better = True
    _min_size = F.SSIM_WINDOW
    _what = " (the SSIM window)"

    def __init__(self, *, data_range: F.DataRange, padding: str = "valid") -> None:
        F.resolve_data_range(data_range)
        F.check_padding(padding)
        super().__init__(data_range=data_range, padding=padding)

    def _compute(
        self, predictions: jax.Array, targets: jax.Array, *, data_range: F.DataRange, padding: str
    ) -> jax.Array:
        return jnp.mean(F.ssim_per_image(predictions, targets, data_range, padding))


@register(
    "MSSSIM",
    kind="metric",
    tier=0,
    domain="image",
    higher_is_better=True,
    differentiable=True,
    example=_metric_example(lambda **kw: MSSSIM(**kw), _MS_SIZE, batch=1, channels=1),
)
class MSSSIM(_ImageMetric):
    """Multi-scale SSIM, mean over images (see :func:`calibrax.functional.ms_ssim`).

    Args:
        data_range: A positive number ``d`` (images in ``[0, d]``) or a ``(low, high)`` pair.
        betas: Exponents per scale, finest first (Wang et al.'s five by default).
        normalize: ``"relu"`` (default, as torchmetrics), ``"simple"`` or ``None``.
        padding: ``"valid"`` (default) or ``"reflect"`` (torchmetrics).

    Raises:
        ValueError: A malformed setting (at construction); bad inputs (at compute).
    """

    name = "ms_ssim"
    higher_is_better = True

    def __init__(
        self,
        *,
        data_range: F.DataRange,
        betas: tuple[float, ...] = F.MS_SSIM_BETAS,
        normalize: str | None = "relu",
        padding: str = "valid",
    ) -> None:
        F.check_ms_ssim_config(data_range, betas, normalize, padding)
        super().__init__(data_range=data_range, betas=betas, normalize=normalize, padding=padding)
        self._min_size = F.ms_ssim_min_size(len(betas))
        self._what = F.ms_ssim_what(len(betas))

    def _compute(self, predictions: jax.Array, targets: jax.Array, **config: Any) -> jax.Array:
        return jnp.mean(F.ms_ssim_per_image(predictions, targets, **config))


class _StreamingImage(SumCountMetric):
    """Sum of per-image scores and the image count; ``compute`` is their ratio."""

    _min_size: int = 1
    _what: str = ""

    def __init__(self, *, data_range: F.DataRange | None, dtype: Any = jnp.float32) -> None:
        super().__init__(dtype=dtype)
        self.data_range = data_range

    def _check(self, predictions: jax.Array, targets: jax.Array) -> None:
        F.validate_images(
            predictions, targets, self.data_range, min_size=self._min_size, what=self._what
        )

    def _per_image(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _batch(self, predictions: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
        scores = self._per_image(predictions, targets)
        return jnp.sum(scores), jnp.asarray(scores.shape[0], jnp.int32)


@register(
    "StreamingPSNR",
    kind="stateful_metric",
    tier=0,
    domain="image",
    higher_is_better=True,
    example=_streaming_example(lambda **kw: StreamingPSNR(**kw), 8),
)
class StreamingPSNR(_StreamingImage):
    """Streaming PSNR in dB: the mean over every image seen by :meth:`update`.

    ``update(*, predictions, targets, **kwargs)`` takes NHWC batches and ignores other keywords;
    ``compute()`` returns ``{"psnr": value}`` and raises before the first image (NaN under jit).

    Args:
        data_range: As :func:`calibrax.functional.psnr` (``None`` infers it per image).
        dtype: The dtype of the accumulated sum.

    Raises:
        ValueError: A malformed ``data_range`` (at construction); bad inputs (at update).
    """

    name = "psnr"
    higher_is_better = True

    def __init__(self, *, data_range: F.DataRange | None, dtype: Any = jnp.float32) -> None:
        if data_range is not None:
            F.resolve_data_range(data_range)
        super().__init__(data_range=data_range, dtype=dtype)

    def _per_image(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F.psnr_per_image(predictions, targets, self.data_range)


@register(
    "StreamingSSIM",
    kind="stateful_metric",
    tier=0,
    domain="image",
    higher_is_better=True,
    example=_streaming_example(lambda **kw: StreamingSSIM(**kw), 16),
)
class StreamingSSIM(_StreamingImage):
    """Streaming SSIM: the mean over every image seen by :meth:`update`.

    ``update(*, predictions, targets, **kwargs)`` takes NHWC batches and ignores other keywords;
    ``compute()`` returns ``{"ssim": value}`` and raises before the first image (NaN under jit).

    Args:
        data_range: A positive number ``d`` (images in ``[0, d]``) or a ``(low, high)`` pair.
        padding: ``"valid"`` (default) or ``"reflect"``.
        dtype: The dtype of the accumulated sum.

    Raises:
        ValueError: A malformed setting (at construction); bad inputs (at update).
    """

    name = "ssim"
    higher_is_better = True
    _min_size = F.SSIM_WINDOW
    _what = " (the SSIM window)"

    def __init__(
        self, *, data_range: F.DataRange, padding: str = "valid", dtype: Any = jnp.float32
    ) -> None:
        F.resolve_data_range(data_range)
        F.check_padding(padding)
        super().__init__(data_range=data_range, dtype=dtype)
        self.padding = padding

    def _per_image(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F.ssim_per_image(predictions, targets, self.data_range, self.padding)


@register(
    "StreamingMSSSIM",
    kind="stateful_metric",
    tier=0,
    domain="image",
    higher_is_better=True,
    example=_streaming_example(lambda **kw: StreamingMSSSIM(**kw), _MS_SIZE, channels=1),
)
class StreamingMSSSIM(_StreamingImage):
    """Streaming MS-SSIM: the mean over every image seen by :meth:`update`.

    ``update(*, predictions, targets, **kwargs)`` takes NHWC batches and ignores other keywords;
    ``compute()`` returns ``{"ms_ssim": value}`` and raises before the first image (NaN under jit).

    Args:
        data_range: A positive number ``d`` (images in ``[0, d]``) or a ``(low, high)`` pair.
        betas: Exponents per scale, finest first.
        normalize: ``"relu"`` (default), ``"simple"`` or ``None``.
        padding: ``"valid"`` (default) or ``"reflect"``.
        dtype: The dtype of the accumulated sum.

    Raises:
        ValueError: A malformed setting (at construction); bad inputs (at update).
    """

    name = "ms_ssim"
    higher_is_better = True

    def __init__(
        self,
        *,
        data_range: F.DataRange,
        betas: tuple[float, ...] = F.MS_SSIM_BETAS,
        normalize: str | None = "relu",
        padding: str = "valid",
        dtype: Any = jnp.float32,
    ) -> None:
        F.check_ms_ssim_config(data_range, betas, normalize, padding)
        super().__init__(data_range=data_range, dtype=dtype)
        self.betas = tuple(betas)
        self.normalize = normalize
        self.padding = padding
        self._min_size = F.ms_ssim_min_size(len(betas))
        self._what = F.ms_ssim_what(len(betas))

    def _per_image(self, predictions: jax.Array, targets: jax.Array) -> jax.Array:
        return F.ms_ssim_per_image(
            predictions, targets, self.data_range, self.betas, self.normalize, self.padding
        )
