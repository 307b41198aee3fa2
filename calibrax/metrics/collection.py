"""FID, KID, Inception Score and precision/recall from one backbone pass per batch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.base import StatefulMetric
from calibrax.core.registry import register
from calibrax.metrics.cmmd import CMMD
from calibrax.metrics.fid import FrechetDistance
from calibrax.metrics.frozen_backbone import DEFAULT_BACKBONE
from calibrax.metrics.frozen_backbone import FrozenBackboneMetric
from calibrax.metrics.inception_score import InceptionScore
from calibrax.metrics.kid import KernelDistance
from calibrax.metrics.prdc import PrecisionRecall
from calibrax.metrics.reference import Reference
from calibrax.metrics.reference import fid_arrays
from calibrax.metrics.reference import held_rows
from calibrax.metrics.reference import read_reference
from calibrax.metrics.reference import set_rows
from calibrax.metrics.reference import write_reference

__all__ = ["DEFAULT_GENERATIVE_METRICS", "GENERATIVE_METRICS", "GenerativeMetrics"]

#: The members a :class:`GenerativeMetrics` can hold, by short name.
GENERATIVE_METRICS = ("fid", "kid", "is", "prdc", "cmmd")
#: The members built when ``metrics`` is not given (CMMD is asked for by name: it is meant for a
#: CLIP feature space).
DEFAULT_GENERATIVE_METRICS = ("fid", "kid", "is", "prdc")
_CLASSES = {
    "fid": FrechetDistance,
    "kid": KernelDistance,
    "is": InceptionScore,
    "prdc": PrecisionRecall,
    "cmmd": CMMD,
}
# Attribute of each member on the collection ("is" is a Python keyword).
_ATTRS = {"fid": "fid", "kid": "kid", "is": "inception", "prdc": "prdc", "cmmd": "cmmd"}


def _member_options(metrics: Any) -> dict[str, dict[str, Any]]:
    if isinstance(metrics, str):
        metrics = tuple(m.strip() for m in metrics.split(",") if m.strip())
    if isinstance(metrics, Mapping):
        chosen = {k: dict(v or {}) for k, v in metrics.items()}
    else:
        chosen = {k: {} for k in metrics}
    if not chosen:
        raise ValueError(
            f"expected `metrics` to name at least one of {', '.join(GENERATIVE_METRICS)}, got none"
        )
    for key in chosen:
        checks.check_choice(key, GENERATIVE_METRICS, "metrics")
    for key, options in chosen.items():
        for fixed in ("backbone", "num_features", "num_classes", "normalize", "input_size"):
            if fixed in options:
                raise ValueError(
                    f"expected the options of `metrics[{key!r}]` not to set `{fixed}` (the "
                    "collection's own setting, shared by every member), got it"
                )
    return chosen


@register(
    "GenerativeMetrics",
    kind="statistic",
    tier=1,
    domain="generative",
    example=lambda: (
        lambda r, f: _example(r, f),
        (
            jnp.sin(jnp.arange(48.0)).reshape(12, 4),
            jnp.cos(jnp.arange(44.0)).reshape(11, 4),
        ),
    ),
)
class GenerativeMetrics(FrozenBackboneMetric):
    """FID, KID, Inception Score and precision/recall/density/coverage from ONE backbone pass.

    The torchmetrics ``FeatureShare`` / ``MetricCollection(compute_groups=...)`` idea for JAX:
    the collection owns the backbone; each ``update(images=..., real=...)`` runs it once
    (``backbone.forward`` gives features and logits together when the backbone has it, as
    InceptionV3-FID and EfficientNet-Lite0 do) and feeds the features to
    :class:`FrechetDistance`, :class:`KernelDistance` and :class:`PrecisionRecall` and the logits
    to :class:`InceptionScore` (generated samples only), and on request to :class:`CMMD` (with a
    CLIP backbone, CLIP-FID and CMMD come from the same pass). KID and PRDC share one feature buffer
    per side (the same ``MetricState`` arrays), so asking for both costs the memory of one.

    It is a :class:`~calibrax.core.StatefulMetric` like its members: ``update`` runs under
    ``nnx.jit`` as one step and takes ``mask=`` (padded batches) like every metric; zero-row and
    all-masked batches are no-ops; ``merge``, ``reduce`` (inside ``shard_map``),
    :func:`calibrax.parallel.sync` and Orbax save/restore work on the whole collection.
    ``compute()`` returns every member's values in one dict
    (``frechet_distance``, ``kid_mean``/``kid_std``, ``inception_score_mean``/``_std``,
    ``precision``/``recall``/``density``/``coverage``).

    Example::

        metrics = GenerativeMetrics(backbone="inception-v3-fid", max_samples=50_000)
        step = nnx.jit(lambda m, x, k, real: m.update(images=x, mask=k, real=real),
                       static_argnums=3)
        for images, mask in real_batches:      # fixed shape, last batch padded and masked
            step(metrics, images, mask, True)
        for images, mask in generated_batches:
            step(metrics, images, mask, False)
        print(metrics.compute())

    Args:
        backbone: Backbone module/callable, name for ``calibrax.backbones.load``, or ``None``
            (precomputed ``features=`` and ``logits=`` only).
        metrics: Members to compute: names from ``("fid", "kid", "is", "prdc", "cmmd")`` (a
            sequence or a comma-separated string; default all but ``"cmmd"``), or a mapping name -> options of that member's constructor
            (e.g. ``{"kid": {"subset_size": 500}, "prdc": {"k": 3}}``).
        max_samples: Default buffer capacity per side of the buffered members.
        num_features: Feature length (required with ``backbone=None``).
        num_classes: Logit count for ``"is"`` with ``backbone=None``.
        input_size: ``(height, width)`` for backbones without ``input_size``.
        normalize: ``False``: uint8 images in [0, 255]; ``True``: floats in [0, 1].
        resize_method: Resize mode (default the backbone's; see
            :func:`calibrax.functional.resize_images`).
        reset_real_features: Whether :meth:`reset` clears the real side too.
        dtype: Statistics dtype of every member; ``None``: float64 with x64 on, else float32.

    Raises:
        ValueError: On an unknown member name, member options that set a shared setting, or any
            member's own invalid settings.
    """

    name = "generative_metrics"

    def __init__(
        self,
        *,
        backbone: Any = DEFAULT_BACKBONE,
        metrics: Any = DEFAULT_GENERATIVE_METRICS,
        max_samples: int = 10_000,
        num_features: int | None = None,
        num_classes: int | None = None,
        input_size: tuple[int, int] | None = None,
        normalize: bool = False,
        resize_method: str | None = None,
        reset_real_features: bool = True,
        dtype: Any = None,
    ) -> None:
        chosen = _member_options(metrics)
        super().__init__(
            backbone=backbone,
            num_features=num_features,
            input_size=input_size,
            normalize=normalize,
            resize_method=resize_method,
            reset_real_features=reset_real_features,
            dtype=dtype,
        )
        self.members = tuple(k for k in GENERATIVE_METRICS if k in chosen)
        common = {"backbone": None, "dtype": self.dtype}
        for key in self.members:
            options = dict(chosen[key])
            if key == "fid":
                options.setdefault("reset_real_features", reset_real_features)
                member = FrechetDistance(num_features=self.num_features, **common, **options)
            elif key == "is":
                classes = getattr(self.backbone, "num_classes", None) or num_classes
                if classes is None:
                    raise ValueError(
                        "expected `num_classes` (or a backbone with `num_classes` and `logits`) "
                        'for the inception score ("is"), got None'
                    )
                options.setdefault("max_samples", max_samples)
                member = InceptionScore(num_classes=int(classes), **common, **options)
            else:
                options.setdefault("max_samples", max_samples)
                options.setdefault("reset_real_features", reset_real_features)
                member = _CLASSES[key](num_features=self.num_features, **common, **options)
            setattr(self, _ATTRS[key], member)
        # KID and PRDC keep the same rows: one buffer per side, shared by both members.
        if "kid" in self.members and "prdc" in self.members:
            if self.kid.max_samples != self.prdc.max_samples:
                raise ValueError(
                    "expected `kid` and `prdc` to share `max_samples` (they share one buffer), "
                    f"got {self.kid.max_samples} and {self.prdc.max_samples}"
                )
            for side in ("real", "fake"):
                setattr(self.prdc, f"{side}_features", getattr(self.kid, f"{side}_features"))
                setattr(self.prdc, f"{side}_count", getattr(self.kid, f"{side}_count"))

    def _fed_keys(self) -> tuple[str, ...]:
        """The members whose state ``update``/``merge``/``reduce`` write (one per buffer)."""
        return tuple(k for k in self.members if not (k == "prdc" and "kid" in self.members))

    def _fed(self) -> tuple[StatefulMetric, ...]:
        return tuple(getattr(self, _ATTRS[k]) for k in self._fed_keys())

    def _embed(self, images: jax.Array, rows: Any, want_logits: bool) -> tuple[Any, Any]:
        """Features and (when wanted) logits of a batch from one backbone pass."""
        x = self._prepared(images, rows)
        forward = getattr(self.backbone, "forward", None)
        if forward is not None:
            out = forward(x)
            features, logits = out.features, (out.logits if want_logits else None)
        else:
            features = self.backbone(x)
            logits = self.backbone.logits(x) if want_logits else None
        stop = jax.lax.stop_gradient
        return stop(features), (None if logits is None else stop(logits))

    def update(
        self,
        images: Float[Array, "batch h w 3"] | None = None,
        *,
        features: Float[Array, "batch features"] | None = None,
        logits: Float[Array, "batch classes"] | None = None,
        real: bool,
        mask: jax.Array | None = None,
        **kwargs: Any,
    ) -> None:
        """Embed one batch once and fold it into every member.

        Args:
            images: NHWC images (see ``normalize``), or ``None``.
            features: Precomputed features, ``(batch, num_features)``, instead of ``images``.
            logits: Precomputed logits for ``"is"`` with ``features`` (generated side).
            real: Which distribution the batch belongs to (a static Python bool). The Inception
                Score only sees generated batches.
            mask: Optional ``(batch,)`` bool / 0-1 vector; masked rows change nothing.
            **kwargs: Ignored (other metrics' inputs in ``nnx.MultiMetric``).

        Raises:
            ValueError: On bad input, a full buffer, or ``features`` without ``logits`` when the
                collection computes the Inception Score of generated samples.
            TypeError: On a wrong image dtype or a non-bool ``real``.
        """
        real = self._check_real_flag(real)
        given = self._inputs(images, features, "features", mask, logits)
        if given is None:
            return
        rows, images, features, logits = given
        want_logits = "is" in self.members and not real
        if images is not None:
            features, logits = self._embed(images, rows, want_logits)
        elif want_logits and logits is None:
            raise ValueError(
                "expected `logits` with precomputed generated `features` (the collection "
                'computes the inception score, "is"), got None'
            )
        for key in self._fed_keys():
            if key != "is":
                getattr(self, _ATTRS[key]).update(features=features, real=real, mask=rows.keep)
            elif want_logits:
                self.inception.update(logits=logits, mask=rows.keep)

    def compute(self) -> dict[str, jax.Array]:
        """Every member's values in one dict.

        Raises:
            ValueError: As each member's ``compute`` (too few samples, an overflowed buffer).
        """
        out: dict[str, jax.Array] = {}
        for key in self.members:
            out.update(getattr(self, _ATTRS[key]).compute())
        return out

    def reset(self) -> None:
        """Reset every member (the real side survives with ``reset_real_features=False``)."""
        for member in self._fed():
            member.reset()

    def _check_mergeable(self, other: StatefulMetric) -> None:
        super()._check_mergeable(other)
        if other.members != self.members:
            raise ValueError(
                f"expected `other` to hold the members {self.members}, got {other.members}"
            )

    def merge(self, other: GenerativeMetrics) -> None:
        """Merge ``other``'s members into this collection's, member by member.

        Raises:
            TypeError: If ``other`` is not a :class:`GenerativeMetrics`.
            ValueError: If the members or their settings differ, or a buffer would overflow.
        """
        self._check_mergeable(other)
        for mine, theirs in zip(self._fed(), other._fed(), strict=True):
            mine.merge(theirs)

    def reduce(self, axis_name: str) -> None:
        """Combine every member over a mesh axis (inside ``shard_map``), as each member does."""
        for member in self._fed():
            member.reduce(axis_name)

    def _rows_member(self) -> StatefulMetric | None:
        """The member that owns the real feature rows (KID's buffer, shared with PRDC)."""
        for key in ("kid", "prdc"):
            if key in self.members:
                return getattr(self, key)
        return None

    def save_reference(self, path: str | os.PathLike) -> str:
        """Write the real side of every member to one reference file (``.npz``).

        The file holds FID's ``mu``/``sigma``/``num_samples`` (pytorch-fid's keys, so pytorch-fid
        reads it) when ``"fid"`` is a member, the real feature rows (``real_features``) when
        ``"kid"`` or ``"prdc"`` is, and the backbone name, resize mode, ``normalize``, feature
        dimension, dtype and a sha256 of the content (see :mod:`calibrax.metrics.reference`).
        The Inception Score has no real side: the file holds nothing for it. ``path`` is used as
        given.

        Returns:
            The file's content sha256.

        Raises:
            ValueError: If no member has a real side (only ``"is"``), or a member has fewer than
                2 real samples.
        """
        arrays: dict[str, Any] = {}
        rows = self._rows_member()
        if rows is not None:
            arrays.update(held_rows(rows))
        if "fid" in self.members:
            self.fid._statistics("real")
            arrays.update(fid_arrays(*(v[...] for v in self.fid._side("real"))))
        if not arrays:
            raise ValueError(
                "expected a member with a real side (fid, kid or prdc) to save a reference, "
                f"got the members {self.members}"
            )
        return write_reference(path, self, arrays)

    def load_reference(
        self, source: str | os.PathLike | Reference, *, num_samples: int | None = None
    ) -> None:
        """Replace the real side of every member by a reference file's.

        FID takes ``mu``/``sigma`` (or the statistics of the rows when the file has no
        ``mu``/``sigma``); KID and PRDC take the rows (one shared buffer). A pytorch-fid file
        (``mu``/``sigma`` only, pass ``num_samples``) serves ``"fid"`` alone. The Inception
        Score has no real side and is left as it is.

        Args:
            source: A path, or a :class:`~calibrax.metrics.reference.Reference` already read
                with :func:`~calibrax.metrics.reference.read_reference`.
            num_samples: Sample count of a file without ``num_samples`` (pytorch-fid's).

        Raises:
            ValueError: If the file is unreadable or changed since it was saved, was written
                with another backbone, resize mode or feature dimension, holds more rows than
                ``max_samples`` or no rows for KID/PRDC, or no member has a real side: each an
                "expected X, got Y" naming the file and the setting.
        """
        ref = source if isinstance(source, Reference) else read_reference(source)
        ref.check_settings(
            backbone=self.backbone_name, resize=self.resize_method, num_features=self.num_features
        )
        rows = self._rows_member()
        if rows is None and "fid" not in self.members:
            raise ValueError(
                "expected a member with a real side (fid, kid or prdc) to load a reference, "
                f"got the members {self.members}"
            )
        # Every check runs before any member changes: a refused file leaves the state as it was.
        fid = ref.fid_statistics(num_samples, self.dtype) if "fid" in self.members else None
        if rows is not None:
            who = " and ".join(
                type(getattr(self, k)).__name__ for k in ("kid", "prdc") if k in self.members
            )
            set_rows(rows, ref, who)
        if fid is not None:
            self.fid._set_real(*fid)


def _example(real: jax.Array, fake: jax.Array) -> jax.Array:
    metric = GenerativeMetrics(
        backbone=None,
        num_features=real.shape[1],
        num_classes=real.shape[1],
        max_samples=16,
        metrics={
            "fid": {},
            "kid": {"subsets": 3, "subset_size": 6},
            "is": {"splits": 2},
            "prdc": {"k": 2},
        },
        dtype=real.dtype,
    )
    metric.update(features=real, real=True)
    metric.update(features=fake, logits=fake, real=False)
    return jnp.stack(list(metric.compute().values()))
