"""Precision, recall, density and coverage of generated samples from k-NN balls in feature space."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.functional.fid import _float_dtype
from calibrax.functional.fid import check_feature_sets

__all__ = ["check_prdc_k", "prdc_from_buffers", "precision_recall_density_coverage"]


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    # |a|² + |b|² - 2 a·b, clamped at 0 against rounding; exact for small integer features.
    dots = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    sq_a = jnp.sum(a * a, axis=1)
    sq_b = jnp.sum(b * b, axis=1)
    return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * dots, 0.0)


def _map_row_blocks(
    fn: Callable[[jax.Array], tuple[jax.Array, ...]], x: jax.Array, block_size: int
) -> tuple[jax.Array, ...]:
    """Apply ``fn`` to blocks of ``block_size`` rows of ``x`` (padded), one block at a time.

    ``fn`` maps a ``(block, dim)`` block to per-row outputs of shape ``(block,)``; the results are
    concatenated and cut back to ``x.shape[0]`` rows. Peak memory is that of one block.
    """
    n, d = x.shape
    block = min(block_size, n)
    num_blocks = -(-n // block)
    padded = jnp.pad(x, ((0, num_blocks * block - n), (0, 0)))
    outs = jax.lax.map(fn, padded.reshape(num_blocks, block, d))
    return tuple(o.reshape(num_blocks * block)[:n] for o in outs)


def _knn_radii(x: jax.Array, valid: jax.Array, k: int, block_size: int) -> jax.Array:
    """Squared distance from each row to its k-th nearest valid neighbour (self excluded)."""

    def radii(rows: jax.Array) -> tuple[jax.Array]:
        d2 = jnp.where(valid[None, :], _squared_distances(rows, x), jnp.inf)
        # The (k+1)-th smallest distance: the row itself is the first.
        return (-jax.lax.top_k(-d2, k + 1)[0][:, k],)

    return _map_row_blocks(radii, x, block_size)[0]


def prdc_from_buffers(
    real: jax.Array,
    num_real: int | jax.Array,
    fake: jax.Array,
    num_fake: int | jax.Array,
    *,
    k: int,
    block_size: int,
    dtype: np.dtype,
) -> dict[str, jax.Array]:
    """PRDC of the first ``num_real`` / ``num_fake`` rows of two buffers (counts may be traced)."""
    real = real.astype(dtype)
    fake = fake.astype(dtype)
    real_rows = jnp.arange(real.shape[0])
    fake_rows = jnp.arange(fake.shape[0])
    valid_real = real_rows < jnp.asarray(num_real).astype(real_rows.dtype)
    valid_fake = fake_rows < jnp.asarray(num_fake).astype(fake_rows.dtype)
    radius_real = _knn_radii(real, valid_real, k, block_size)
    radius_fake = _knn_radii(fake, valid_fake, k, block_size)

    def per_fake(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
        d2 = _squared_distances(rows, real)
        inside = d2 <= radius_real[None, :]
        strictly = d2 < radius_real[None, :]
        hit = jnp.any(inside & valid_real[None, :], axis=1)
        count = jnp.sum(strictly & valid_real[None, :], axis=1)
        return hit.astype(dtype), count.astype(dtype)

    def per_real(rows_and_radius: jax.Array) -> tuple[jax.Array, jax.Array]:
        rows, radius = rows_and_radius[:, :-1], rows_and_radius[:, -1]
        d2 = _squared_distances(rows, fake)
        hit = jnp.any((d2 <= radius_fake[None, :]) & valid_fake[None, :], axis=1)
        nearest = jnp.min(jnp.where(valid_fake[None, :], d2, jnp.inf), axis=1)
        return hit.astype(dtype), (nearest < radius).astype(dtype)

    precision_hit, density_count = _map_row_blocks(per_fake, fake, block_size)
    real_and_radius = jnp.concatenate([real, radius_real[:, None]], axis=1)
    recall_hit, covered = _map_row_blocks(per_real, real_and_radius, block_size)
    n_real = jnp.sum(valid_real.astype(dtype))
    n_fake = jnp.sum(valid_fake.astype(dtype))
    return {
        "precision": jnp.sum(jnp.where(valid_fake, precision_hit, 0.0)) / n_fake,
        "recall": jnp.sum(jnp.where(valid_real, recall_hit, 0.0)) / n_real,
        "density": jnp.sum(jnp.where(valid_fake, density_count, 0.0)) / (k * n_fake),
        "coverage": jnp.sum(jnp.where(valid_real, covered, 0.0)) / n_real,
    }


def check_prdc_k(k: int, num_samples: int, which: str) -> None:
    """Raise ``ValueError`` unless ``1 <= k < num_samples`` (k neighbours besides the point)."""
    checks.check_positive_int(k, "k")
    if k >= num_samples:
        raise ValueError(
            f"expected `k` to be less than the number of {which} samples ({num_samples}), got {k}"
        )


@register(
    "precision_recall_density_coverage",
    kind="statistic",
    tier=1,
    domain="generative",
    higher_is_better=True,
    example=lambda: (
        lambda r, f: jnp.stack(list(precision_recall_density_coverage(r, f, k=2).values())),
        (
            jnp.sin(jnp.arange(32.0)).reshape(8, 4),
            jnp.cos(jnp.arange(28.0)).reshape(7, 4),
        ),
    ),
)
def precision_recall_density_coverage(
    real: Float[Array, "n_real dim"],
    fake: Float[Array, "n_fake dim"],
    *,
    k: int = 5,
    block_size: int = 1024,
) -> dict[str, Float[Array, ""]]:
    r"""Precision, recall (Kynkäänniemi et al.) and density, coverage (Naeem et al.).

    With ``r(x)`` the distance from ``x`` to its k-th nearest neighbour in its own set (the
    (k+1)-th smallest distance, the point itself being the first) and ``B(x, r)`` its ball:

    - precision: fraction of fake ``y`` with ``‖y - x‖ <= r(x)`` for some real ``x``;
    - recall: fraction of real ``x`` with ``‖x - y‖ <= r(y)`` for some fake ``y``;
    - density: ``1/(k M) Σ_y #{x real: ‖y - x‖ < r(x)}``;
    - coverage: fraction of real ``x`` whose nearest fake ``y`` has ``‖x - y‖ < r(x)``.

    Distances are computed in blocks of ``block_size`` rows (memory ``O(block_size * n)``) in the
    widest input float dtype (at least float32); comparisons use squared distances. jit-able.

    Args:
        real: Real-sample features, shape (n_real, dim).
        fake: Generated-sample features, shape (n_fake, dim).
        k: Number of neighbours defining each ball, ``1 <= k < min(n_real, n_fake)``.
        block_size: Rows per block of the pairwise distance computation.

    Returns:
        A dict with scalar ``precision``, ``recall``, ``density`` and ``coverage``.

    Raises:
        ValueError: On fewer than 2 samples, different dims, NaN/Inf (eagerly) or a bad ``k``.
        TypeError: If an input is not floating point.

    References:
        Kynkäänniemi et al., 2019, arXiv:1904.06991; Naeem et al., 2020, arXiv:2002.09797.
    """
    check_feature_sets(real, fake)
    check_prdc_k(k, real.shape[0], "real")
    check_prdc_k(k, fake.shape[0], "fake")
    checks.check_positive_int(block_size, "block_size")
    return prdc_from_buffers(
        real,
        real.shape[0],
        fake,
        fake.shape[0],
        k=k,
        block_size=block_size,
        dtype=_float_dtype(real, fake),
    )
