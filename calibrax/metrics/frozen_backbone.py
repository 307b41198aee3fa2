"""Tier-1 base: a frozen feature extractor in front of streaming feature statistics.

Backbone interface (any ``nnx.Module`` or plain callable):

- ``__call__(images) -> features``: ``images`` are float NHWC RGB in [0, 1], already resized to
  ``input_size``; the backbone applies its own normalization and returns ``(batch,
  num_features)`` features. It must be pure and jit-able. Pretrained weights are
  :class:`~calibrax.core.FrozenWeight` (never ``nnx.Param``).
- ``input_size``: ``(height, width)``; ``num_features``: the feature length (read from the
  backbone when present, else given to the metric / inferred with ``jax.eval_shape``).
- Optional ``logits(images)`` with ``num_classes`` (used by :class:`InceptionScore`) and
  ``resize_method`` (a :func:`~calibrax.functional.resize_images` mode, default ``"bilinear"``).

A string ``backbone`` is resolved with ``calibrax.backbones.load(name)`` when the metric is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.base import Rows
from calibrax.core.base import StatefulMetric
from calibrax.functional.resize import JAX_RESIZE_METHODS
from calibrax.functional.resize import RESIZE_MODES
from calibrax.functional.resize import resize_images
from calibrax.metrics.reference import backbone_name

__all__ = ["DEFAULT_BACKBONE", "FrozenBackboneMetric"]

DEFAULT_BACKBONE = "efficientnet-lite0"


def resolve_statistics_dtype(dtype: Any, owner: str) -> np.dtype:
    """The float dtype of a metric's statistics, enforcing the float64 policy.

    ``None`` (the default of every tier-1 metric) means float64 when ``jax_enable_x64`` is on and
    float32 when it is off: calibrax never asks a training script to switch x64 on for the whole
    process. Asking explicitly for float64 with x64 off is an error (jax would silently store
    float32) that says how to fix it.

    Raises:
        ValueError: If ``dtype`` is not None/float32/float64, or float64 is asked with x64 off.
    """
    if dtype is None:
        return np.dtype(np.float64 if jax.config.jax_enable_x64 else np.float32)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"expected `dtype` to be float32 or float64, got {dt}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"expected jax_enable_x64 to be on: {owner} keeps float64 statistics (dtype=float64); "
            "call jax.config.update('jax_enable_x64', True) (or set JAX_ENABLE_X64=1) before "
            "creating it, or pass dtype=jnp.float32 to accept float32 statistics"
        )
    return dt


def count_dtype(dtype: np.dtype) -> np.dtype:
    """Integer dtype of sample counts: int64 next to float64 statistics, else int32."""
    return np.dtype(np.int64 if dtype == np.float64 else np.int32)


def concrete_int(x: jax.Array) -> int | None:
    """``int(x)`` when ``x`` is concrete, ``None`` under tracing."""
    return int(x) if checks.is_concrete(x) else None


def _resolve_backbone(backbone: Any) -> Any:
    if isinstance(backbone, str):
        from calibrax.backbones import load

        return load(backbone)
    if backbone is not None and not callable(backbone):
        raise TypeError(
            "expected `backbone` to be a backbone name, a callable module or None, "
            f"got {type(backbone).__name__}"
        )
    return backbone


class FrozenBackboneMetric(StatefulMetric):
    """Base of the tier-1 metrics: frozen backbone, image conventions, real/fake bookkeeping.

    Images are NHWC RGB. ``normalize=False`` (the default, as torchmetrics) expects ``uint8``
    in [0, 255]; ``normalize=True`` expects floats in [0, 1]. Images are converted to floats in
    [0, 1] (float64 images stay float64, everything else becomes float32), resized to the
    backbone's ``input_size`` with ``resize_images(..., mode=resize_method)`` (see
    :func:`~calibrax.functional.resize_images`) and passed through the backbone under
    ``jax.lax.stop_gradient``. Precomputed features can be given instead with ``features=``.

    Subclasses store state in :class:`~calibrax.core.MetricState` variables whose names start
    with ``real_`` for the real distribution; :meth:`reset` keeps those when
    ``reset_real_features=False``.

    Args:
        backbone: A backbone module/callable, a name for ``calibrax.backbones.load``, or ``None``
            to accept only precomputed features.
        num_features: Feature length; required when ``backbone`` is ``None``, else checked
            against the backbone's.
        input_size: ``(height, width)`` for backbones that do not declare ``input_size``.
        normalize: Image convention: ``False`` uint8 in [0, 255], ``True`` floats in [0, 1].
        resize_method: A :func:`~calibrax.functional.resize_images` mode (``"pytorch-fid"``,
            ``"tf1"``, ``"clean"``, ``"antialias"`` or a ``jax.image.resize`` method); default
            the backbone's ``resize_method`` or ``"bilinear"``.
        reset_real_features: Whether :meth:`reset` also clears the real statistics.
        dtype: Float dtype of the statistics; ``None``: float64 with ``jax_enable_x64`` on,
            else float32 (explicit float64 needs x64).
        output: ``"features"`` (``backbone(images)``) or ``"logits"`` (``backbone.logits`` when
            the backbone has it, else ``backbone(images)``).

    Raises:
        ValueError: On inconsistent settings or float64 with x64 disabled.
        TypeError: If ``backbone`` is neither a name, a callable nor ``None``.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def __init__(
        self,
        *,
        backbone: Any,
        num_features: int | None,
        input_size: tuple[int, int] | None,
        normalize: bool,
        resize_method: str | None,
        reset_real_features: bool,
        dtype: Any,
        output: str = "features",
    ) -> None:
        owner = type(self).__name__
        self.dtype = resolve_statistics_dtype(dtype, owner)
        if not isinstance(normalize, bool):
            raise ValueError(f"expected `normalize` to be a bool, got {normalize!r}")
        if not isinstance(reset_real_features, bool):
            raise ValueError(
                f"expected `reset_real_features` to be a bool, got {reset_real_features!r}"
            )
        self.normalize = normalize
        self.reset_real_features = reset_real_features
        #: What a reference file records as the backbone (see :mod:`calibrax.metrics.reference`).
        self.backbone_name = backbone_name(backbone)
        backbone = _resolve_backbone(backbone)
        self.backbone = backbone
        self.output = output
        if backbone is None:
            if num_features is None:
                raise ValueError(
                    "expected `num_features` when `backbone` is None (precomputed features only), "
                    "got None"
                )
            checks.check_positive_int(num_features, "num_features")
            self.num_features = num_features
            self.input_size = None
            self.resize_method = None
            return
        size = input_size if input_size is not None else getattr(backbone, "input_size", None)
        if size is None:
            raise ValueError(
                "expected `input_size` (height, width) for a backbone without an `input_size` "
                "attribute, got None"
            )
        self.input_size = (int(size[0]), int(size[1]))
        method = resize_method or getattr(backbone, "resize_method", "bilinear")
        checks.check_choice(method, RESIZE_MODES + JAX_RESIZE_METHODS, "resize_method")
        self.resize_method = method
        attr = (
            "num_classes"
            if output == "logits" and hasattr(backbone, "logits")
            else ("num_features")
        )
        declared = getattr(backbone, attr, None)
        if declared is None:
            probe = jax.ShapeDtypeStruct((1, *self.input_size, 3), jnp.float32)
            declared = jax.eval_shape(self._backbone_fn(), probe).shape[-1]
        if num_features is not None and num_features != declared:
            raise ValueError(
                f"expected `num_features` to match the backbone's {attr} ({declared}), "
                f"got {num_features}"
            )
        self.num_features = int(declared)

    def _backbone_fn(self) -> Callable[[jax.Array], jax.Array]:
        if self.output == "logits" and hasattr(self.backbone, "logits"):
            return self.backbone.logits
        return self.backbone

    def features_of(self, images: Float[Array, "batch h w 3"]) -> Float[Array, "batch features"]:
        """The backbone features of ``images`` under this metric's input convention.

        Lets several metrics on the same backbone share one forward pass: feed the result to each
        with ``update(features=..., real=...)``.

        Raises:
            ValueError: On a wrong shape or out-of-range values.
            TypeError: On a dtype that does not fit ``normalize``.
        """
        if self.backbone is None:
            raise ValueError("expected a metric with a backbone to embed images, got backbone=None")
        return self._image_features(images)

    def _image_features(
        self, images: Float[Array, "batch h w 3"], rows: Rows | None = None
    ) -> Float[Array, "batch features"]:
        """Validate, convert, resize and embed a batch of images.

        With ``rows``, eager value checks look only at the kept rows (padding may hold anything).
        """
        x = self._prepared(images, rows)
        batch = x.shape[0]
        features = jax.lax.stop_gradient(self._backbone_fn()(x))
        if features.shape != (batch, self.num_features):
            raise ValueError(
                f"expected the backbone to return shape ({batch}, {self.num_features}), "
                f"got {tuple(features.shape)}"
            )
        return features

    def _prepared(
        self, images: Float[Array, "batch h w 3"], rows: Rows | None = None
    ) -> Float[Array, "batch h w 3"]:
        """Validate and convert a batch of images to floats in [0, 1] at the backbone's size."""
        checks.check_rank(images, 4, "images", "batch, height, width, channels")
        checks.check_dim(images, 3, 3, "images", "channels")
        checks.check_nonempty(images, "images")
        visible = rows.select(images)[0] if rows is not None else images
        dtype = np.dtype(images.dtype)
        if self.normalize:
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(
                    "expected `images` to have a floating dtype with values in [0, 1] "
                    f"(normalize=True), got {dtype}; pass uint8 images with normalize=False"
                )
            checks.check_range(
                visible, 0.0, 1.0, "images", hint="normalize=True expects floats in [0, 1]"
            )
            wide = dtype.itemsize > 4 and jax.config.jax_enable_x64
            x = jnp.asarray(images).astype(np.float64 if wide else np.float32)
        else:
            if dtype != np.uint8:
                raise TypeError(
                    "expected `images` to have dtype uint8 with values in [0, 255] "
                    f"(normalize=False), got {dtype}; pass floats in [0, 1] with normalize=True"
                )
            x = jnp.asarray(images).astype(np.float32) / 255.0
        if tuple(x.shape[1:3]) != self.input_size:
            x = resize_images(x, self.input_size, self.resize_method)
        return x

    def _check_features(
        self, features: jax.Array, name: str, rows: Rows | None = None
    ) -> jax.Array:
        checks.check_rank(features, 2, name, f"batch, {self.num_features}")
        checks.check_floating(features, name)
        checks.check_nonempty(features, name)
        if features.shape[1] != self.num_features:
            raise ValueError(
                f"expected `{name}` to have {self.num_features} columns (the metric's feature "
                f"dimension), got shape {tuple(features.shape)}"
            )
        checks.check_finite(rows.select(features)[0] if rows is not None else features, name)
        return jnp.asarray(features)

    def _inputs(
        self,
        images: jax.Array | None,
        features: jax.Array | None,
        name: str,
        mask: Any,
        *extra: jax.Array | None,
    ) -> tuple[Any, ...] | None:
        """The shared input rule: exactly one of ``images``/``features``, then empty batches and
        masks (``StatefulMetric._rows``).

        Returns ``None`` when the update is a no-op, else ``(rows, images, features, *extra)``.
        With a concrete mask (eager updates) the masked rows of every array are dropped here, so
        the backbone and the checks never see padding and the state is exactly that of the
        unpadded batch; under jit the mask is returned for the masked statistics.

        Raises:
            ValueError: If not exactly one of ``images``/``features`` is given, or ``images``
                are given to a metric without a backbone.
        """
        if (images is None) == (features is None):
            got = "both" if images is not None else "neither"
            raise ValueError(f"expected exactly one of `images` and `{name}`, got {got}")
        if images is not None and self.backbone is None:
            raise ValueError(
                f"expected `{name}` (this metric was built with backbone=None), got `images`"
            )
        rows = self._rows(images if images is not None else features, mask)
        if rows is None:
            return None
        rows, arrays = rows.compact(images, features, *extra)
        return (rows, *arrays)

    def _batch(
        self,
        images: jax.Array | None,
        features: jax.Array | None,
        name: str = "features",
        rows: Rows | None = None,
    ) -> jax.Array:
        """Features of one batch (inputs already checked by :meth:`_inputs`)."""
        if features is not None:
            return self._check_features(features, name, rows)
        return self._check_features(self._image_features(images, rows), "backbone output", rows)

    @staticmethod
    def _check_real_flag(real: Any) -> bool:
        if not isinstance(real, (bool, np.bool_)):
            raise TypeError(
                "expected `real` to be a Python bool (it selects the statistics to update and "
                f"must be static under jit), got {type(real).__name__}"
            )
        return bool(real)

    def reset(self) -> None:
        """Zero the state; the real statistics survive when ``reset_real_features=False``."""
        for path, var in self._state_variables():
            if not self.reset_real_features and str(path[0]).startswith("real_"):
                continue
            var[...] = jnp.zeros_like(var[...])
