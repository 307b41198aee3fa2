"""Preallocated feature buffers for the tier-1 metrics that need raw features (KID, IS, PRDC)."""

from __future__ import annotations

from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp

from calibrax.core import checks
from calibrax.core.state import MetricState
from calibrax.metrics.frozen_backbone import FrozenBackboneMetric
from calibrax.metrics.frozen_backbone import concrete_int
from calibrax.metrics.frozen_backbone import count_dtype

__all__ = ["BufferedFeatureMetric"]


class BufferedFeatureMetric(FrozenBackboneMetric):
    """A :class:`FrozenBackboneMetric` that keeps features in fixed-capacity buffers.

    Each side named in ``sides`` (``"real"``, ``"fake"``) has a ``{side}_features`` buffer of
    shape ``(max_samples, num_features)`` and a ``{side}_count``. Rows ``>= count`` are empty.

    Overflow policy: a jitted update cannot raise, so the check runs eagerly on the host: before
    writing, ``count + batch`` (the batch size is static, the count is read from the device when
    it is concrete) is compared with ``max_samples`` and a ``ValueError`` is raised. Inside
    ``nnx.jit`` the check cannot run: rows past the capacity are dropped while the count keeps
    growing, and ``compute`` then raises (eagerly) or returns NaN (under jit).
    """

    sides: ClassVar[tuple[str, ...]]

    def _init_buffers(self, max_samples: int) -> None:
        checks.check_positive_int(max_samples, "max_samples")
        self.max_samples = max_samples
        ct = count_dtype(self.dtype)
        for side in self.sides:
            setattr(
                self,
                f"{side}_features",
                MetricState(jnp.zeros((max_samples, self.num_features), self.dtype)),
            )
            setattr(self, f"{side}_count", MetricState(jnp.zeros((), ct)))

    def _stored(self, x: jax.Array) -> jax.Array:
        """The features as buffered (a hook: CMMD L2-normalizes them); as given by default."""
        return x

    def _buffered_update(
        self, images: Any, features: Any, real: Any, mask: jax.Array | None
    ) -> None:
        """The shared body of ``update``: check, embed (or take ``features``) and append the kept
        rows of one batch to the real or generated buffer; a zero-row or all-masked batch is a
        no-op."""
        side = "real" if self._check_real_flag(real) else "fake"
        given = self._inputs(images, features, "features", mask)
        if given is None:
            return
        rows, images, features = given
        self._append(side, self._stored(self._batch(images, features, rows=rows)), rows.keep)

    def _buffer(self, side: str) -> tuple[MetricState, MetricState]:
        return getattr(self, f"{side}_features"), getattr(self, f"{side}_count")

    def _check_room(self, side: str, held: int | None, adding: int | None) -> None:
        if held is not None and adding is not None and held + adding > self.max_samples:
            raise ValueError(
                f"expected the `{side}` buffer to hold at most max_samples={self.max_samples} "
                f"samples, got {held} + {adding} = {held + adding}; "
                "build the metric with a larger `max_samples`"
            )

    def _append(self, side: str, x: jax.Array, keep: jax.Array | None = None) -> None:
        """Write the kept rows of ``x`` (all rows when ``keep`` is None) after the held ones."""
        buffer, count = self._buffer(side)
        batch = x.shape[0]
        if keep is None:
            adding = batch
            rows = count[...] + jnp.arange(batch, dtype=count[...].dtype)
        else:
            adding = jnp.sum(keep, dtype=count[...].dtype)
            offsets = jnp.cumsum(keep.astype(count[...].dtype)) - 1
            # Masked rows go to an out-of-range index, which the scatter drops.
            rows = jnp.where(keep, count[...] + offsets, self.max_samples)
        self._check_room(side, concrete_int(count[...]), concrete_int(jnp.asarray(adding)))
        buffer[...] = buffer[...].at[rows].set(x.astype(self.dtype), mode="drop")
        count[...] = count[...] + adding

    def _held(self, side: str, minimum: int, what: str) -> jax.Array:
        """The count of ``side``, checked eagerly for overflow and for at least ``minimum``."""
        _, count = self._buffer(side)
        n = concrete_int(count[...])
        if n is not None:
            if n > self.max_samples:
                raise ValueError(
                    f"expected the `{side}` buffer to hold at most max_samples="
                    f"{self.max_samples} samples, got {n} (a jitted update overflowed it)"
                )
            if n < minimum:
                raise ValueError(
                    f"expected at least {minimum} {side} samples to compute "
                    f"{type(self).__name__}{what}, got {n}"
                )
        return count[...]

    def _nan_if_overflowed(self, values: dict[str, jax.Array]) -> dict[str, jax.Array]:
        over = jnp.zeros((), bool)
        for side in self.sides:
            over = over | (self._buffer(side)[1][...] > self.max_samples)
        return {k: jnp.where(over, jnp.nan, v) for k, v in values.items()}

    def merge(self, other: Any) -> None:
        """Append ``other``'s buffered rows after this metric's rows.

        Raises:
            TypeError: If ``other`` is a different metric class.
            ValueError: If the settings differ or the combined rows exceed ``max_samples``.
        """
        self._check_mergeable(other)
        for side in self.sides:
            buffer, count = self._buffer(side)
            their_buffer, their_count = other._buffer(side)
            n_a, n_b = concrete_int(count[...]), concrete_int(their_count[...])
            self._check_room(side, n_a, n_b if n_b is not None else 0)
            rows = jnp.arange(self.max_samples, dtype=count[...].dtype)
            target = jnp.where(rows < their_count[...], count[...] + rows, self.max_samples)
            buffer[...] = buffer[...].at[target].set(their_buffer[...], mode="drop")
            count[...] = count[...] + their_count[...]

    def reduce(self, axis_name: str) -> None:
        """Gather every device's rows over a mesh axis and compact them into each buffer.

        Uses ``all_gather`` of the buffers and counts; device ``p``'s rows land after those of
        devices ``0 .. p-1``. More rows than ``max_samples`` overflow (see the class policy).
        """
        for side in self.sides:
            buffer, count = self._buffer(side)
            buffers = jax.lax.all_gather(buffer[...], axis_name)
            counts = jax.lax.all_gather(count[...], axis_name)
            offsets = jnp.cumsum(counts) - counts
            rows = jnp.arange(self.max_samples, dtype=counts.dtype)
            target = jnp.where(
                rows[None, :] < counts[:, None],
                offsets[:, None] + rows[None, :],
                self.max_samples,
            )
            flat = buffers.reshape(-1, self.num_features)
            buffer[...] = jnp.zeros_like(buffer[...]).at[target.reshape(-1)].set(flat, mode="drop")
            count[...] = jnp.sum(counts)
