"""Kernel Inception Distance: unbiased MMD² with a polynomial (or Gaussian RBF) kernel, averaged
over subsets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.functional.fid import _float_dtype
from calibrax.functional.fid import check_feature_sets

__all__ = [
    "KID_KERNELS",
    "kernel_inception_distance",
    "kid_subset_indices",
    "polynomial_kernel",
    "rbf_kernel",
    "unbiased_mmd2",
]

#: The kernels of :func:`kernel_inception_distance`: torch-fidelity's ``kid_kernel`` values.
KID_KERNELS = ("poly", "rbf")


def polynomial_kernel(
    x: Float[Array, "n dim"],
    y: Float[Array, "m dim"],
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
) -> Float[Array, "n m"]:
    r"""``k(x, y) = (gamma * xᵀy + coef) ** degree``, with ``gamma = 1 / dim`` by default."""
    g = 1.0 / x.shape[1] if gamma is None else gamma
    dots = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    return (dots * g + coef) ** degree


def rbf_kernel(
    x: Float[Array, "n dim"],
    y: Float[Array, "m dim"],
    *,
    sigma: float = 10.0,
) -> Float[Array, "n m"]:
    r"""Gaussian RBF kernel ``k(x, y) = exp(-‖x - y‖² / (2 sigma²))``.

    The squared distance is expanded as ``2 xᵀy - ‖x‖² - ‖y‖²`` (as torch-fidelity's
    ``kernel_rbf`` and the CMMD reference code compute it), so values match theirs to rounding.
    """
    xx = jnp.sum(x * x, axis=1)
    yy = jnp.sum(y * y, axis=1)
    dots = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.exp((2.0 * dots - xx[:, None] - yy[None, :]) / (2.0 * sigma**2))


def _kernel_spec(
    kernel: str, degree: int, gamma: float | None, coef: float, sigma: float, dim: int
) -> dict:
    """The static description of a kernel that the blocked sums below evaluate."""
    if kernel == "rbf":
        return {"kind": "rbf", "sigma": sigma}
    return {
        "kind": "poly",
        "degree": degree,
        "gamma": 1.0 / dim if gamma is None else gamma,
        "coef": coef,
    }


def _kernel(x: jax.Array, y: jax.Array, spec: dict) -> jax.Array:
    if spec["kind"] == "rbf":
        return rbf_kernel(x, y, sigma=spec["sigma"])
    return polynomial_kernel(x, y, degree=spec["degree"], gamma=spec["gamma"], coef=spec["coef"])


def _kernel_diagonal(x: jax.Array, spec: dict) -> jax.Array:
    """``k(x_i, x_i)`` for every row, as the full kernel matrix's diagonal would hold it."""
    sq = jnp.sum(x * x, axis=1)
    if spec["kind"] == "rbf":
        return jnp.exp((2.0 * sq - sq - sq) / (2.0 * spec["sigma"] ** 2))
    return (sq * spec["gamma"] + spec["coef"]) ** spec["degree"]


def unbiased_mmd2(
    x: Float[Array, "m dim"],
    y: Float[Array, "m dim"],
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    kernel: str = "poly",
    sigma: float = 10.0,
) -> Float[Array, ""]:
    r"""Unbiased MMD² between two equally sized samples.

    .. math::
        \frac{\sum_{i\ne j} k(x_i, x_j) + \sum_{i\ne j} k(y_i, y_j)}{m(m-1)}
        - \frac{2}{m^2}\sum_{i,j} k(x_i, y_j)

    with the polynomial kernel (``kernel="poly"``, KID's) or the Gaussian RBF kernel
    (``kernel="rbf"``, torch-fidelity's ``kid_kernel="rbf"``, bandwidth ``sigma``).

    References:
        Bińkowski et al., 2018, arXiv:1801.01401.
    """
    return _unbiased_mmd2(x, y, _kernel_spec(kernel, degree, gamma, coef, sigma, x.shape[1]))


def _unbiased_mmd2(x: jax.Array, y: jax.Array, spec: dict) -> jax.Array:
    """:func:`unbiased_mmd2` with the kernel already described by ``spec``."""
    m = x.shape[0]
    off_diagonal = _off_diagonal_kernel_sum(x, spec) + _off_diagonal_kernel_sum(y, spec)
    return off_diagonal / (m * (m - 1)) - 2.0 * jnp.sum(_kernel(x, y, spec)) / (m * m)


def _off_diagonal_kernel_sum(x: jax.Array, spec: dict) -> jax.Array:
    """``Σ_{i≠j} k(x_i, x_j)``, computing each off-diagonal block of the symmetric kernel once.

    From 512 rows the rows are cut into 4 blocks: the 4 diagonal blocks and the 6 blocks below
    them (10 of 16 block products); each lower block counts twice.
    """
    m = x.shape[0]
    if m < 512:
        k = _kernel(x, x, spec)
        return jnp.sum(k) - jnp.trace(k)
    nb = 4
    cuts = [round(i * m / nb) for i in range(nb + 1)]
    rows = [x[cuts[i] : cuts[i + 1]] for i in range(nb)]
    total = jnp.zeros((), x.dtype)
    for i in range(nb):
        k = _kernel(rows[i], rows[i], spec)
        total = total + (jnp.sum(k) - jnp.trace(k))
        for j in range(i):
            k = _kernel(rows[i], rows[j], spec)
            total = total + 2.0 * jnp.sum(k)
    return total


def kid_subset_indices(
    key: jax.Array,
    num_samples: int | jax.Array,
    capacity: int,
    *,
    subsets: int,
    subset_size: int,
) -> Int[Array, "subsets subset_size"]:
    """Row indices of ``subsets`` draws of ``subset_size`` rows without replacement.

    Draw ``s`` ranks the rows ``0 .. capacity-1`` by ``jax.random.uniform(fold_in(key, s),
    (capacity,), float32)`` (float32 whatever ``jax_enable_x64`` says, so a seed gives the same
    subsets in a training script with x64 off and in one with x64 on), sends rows ``>= num_samples`` (empty buffer slots) to the end, and keeps the
    first ``subset_size``: a uniform draw without replacement from the ``num_samples`` valid rows.
    Uniform draws are prefix-consistent in the capacity, so a buffer of any capacity holding the
    same rows gives the same indices. ``num_samples`` may be traced (a buffer count under jit).

    Args:
        key: A ``jax.random`` key.
        num_samples: Number of valid rows (the first ``num_samples`` of the buffer).
        capacity: Number of rows of the buffer (static).
        subsets: Number of draws.
        subset_size: Rows per draw, at most ``num_samples``.

    Returns:
        Integer indices, shape (subsets, subset_size).
    """
    rows = jnp.arange(capacity)
    num_samples = jnp.asarray(num_samples).astype(rows.dtype)

    def draw(s: jax.Array) -> jax.Array:
        u = jax.random.uniform(jax.random.fold_in(key, s), (capacity,), jnp.float32)
        u = jnp.where(rows < num_samples, u, jnp.inf)
        return jnp.argsort(u)[:subset_size]

    return jax.vmap(draw)(jnp.arange(subsets))


def kid_keys(seed: int | jax.Array) -> tuple[jax.Array, jax.Array]:
    """The (real, fake) subset-draw keys for ``seed``."""
    real_key, fake_key = jax.random.split(jax.random.key(seed))
    return real_key, fake_key


def kid_from_buffers(
    real: jax.Array,
    num_real: int | jax.Array,
    fake: jax.Array,
    num_fake: int | jax.Array,
    *,
    subsets: int,
    subset_size: int,
    degree: int,
    gamma: float | None,
    coef: float,
    seed: int | jax.Array,
    dtype: np.dtype,
    method: str = "auto",
    kernel: str = "poly",
    sigma: float = 10.0,
) -> tuple[jax.Array, jax.Array]:
    """KID mean and std over subsets drawn from the first ``num_*`` rows of two buffers.

    ``method="subsets"`` computes three ``subset_size``² kernel blocks per subset;
    ``"buffers"`` computes the kernel over the whole buffers once, in row blocks, and reads
    every subset's sums from it with 0/1 selection matrices; ``"auto"`` (default) picks the one
    with fewer kernel entries (static shapes only, so it is fixed at trace time). Both give
    the same values up to the order of floating-point sums.
    """
    real_key, fake_key = kid_keys(seed)
    real_idx = kid_subset_indices(
        real_key, num_real, real.shape[0], subsets=subsets, subset_size=subset_size
    )
    fake_idx = kid_subset_indices(
        fake_key, num_fake, fake.shape[0], subsets=subsets, subset_size=subset_size
    )
    spec = _kernel_spec(kernel, degree, gamma, coef, sigma, real.shape[1])
    if method == "auto":
        # Kernel rows computed: the whole buffers once, or three m x m blocks per subset.
        whole = real.shape[0] ** 2 + fake.shape[0] ** 2 + real.shape[0] * fake.shape[0]
        method = "buffers" if whole < 3 * subsets * subset_size**2 else "subsets"
    if method == "buffers":
        scores = _mmd2_from_whole_buffers(
            real.astype(dtype), real_idx, fake.astype(dtype), fake_idx, spec
        )
        return jnp.mean(scores), jnp.std(scores)

    def one(idx: tuple[jax.Array, jax.Array]) -> jax.Array:
        x = real[idx[0]].astype(dtype)
        y = fake[idx[1]].astype(dtype)
        return _unbiased_mmd2(x, y, spec)

    scores = jax.lax.map(one, (real_idx, fake_idx))
    return jnp.mean(scores), jnp.std(scores)


def _selection(idx: jax.Array, capacity: int, dtype: np.dtype) -> jax.Array:
    """0/1 matrix (subsets, capacity): row s marks the rows drawn in subset s."""
    sel = jnp.zeros((idx.shape[0], capacity), dtype)
    return sel.at[jnp.arange(idx.shape[0])[:, None], idx].set(1.0)


def _subset_kernel_sums(
    a: jax.Array, sel_a: jax.Array, b: jax.Array, sel_b: jax.Array, kernel: dict, block: int = 512
) -> jax.Array:
    """``Σ_{i ∈ A_s, j ∈ B_s} k(a_i, b_j)`` for every subset s, in row blocks of ``a``.

    Each block of ``a``'s rows meets all of ``b`` once (``k`` is block x n_b), and the subset
    sums come from ``k @ sel_bᵀ`` weighted by the block's selection: memory O(block x n_b).
    """
    n = a.shape[0]
    pad = (-n) % block
    a = jnp.concatenate([a, jnp.zeros((pad, a.shape[1]), a.dtype)])
    sel_a = jnp.concatenate([sel_a, jnp.zeros((sel_a.shape[0], pad), sel_a.dtype)], axis=1)
    rows = a.reshape(-1, block, a.shape[1])
    sel_rows = sel_a.T.reshape(-1, block, sel_a.shape[0])
    hi = jax.lax.Precision.HIGHEST

    def body(total: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        r, sr = xs
        k = _kernel(r, b, kernel)
        t = jnp.matmul(k, sel_b.T, precision=hi)  # (block, subsets)
        return total + jnp.sum(sr * t, axis=0), None

    total, _ = jax.lax.scan(body, jnp.zeros((sel_a.shape[0],), a.dtype), (rows, sel_rows))
    return total


def _mmd2_from_whole_buffers(
    real: jax.Array, real_idx: jax.Array, fake: jax.Array, fake_idx: jax.Array, kernel: dict
) -> jax.Array:
    """Per-subset unbiased MMD² from the kernel over the whole buffers (computed once).

    Equal to :func:`unbiased_mmd2` on each subset (the same sums, in another order); cheaper
    when the subsets together cover more kernel entries than the buffers hold (KID's default
    100 subsets of 1000 from up to ~10k rows per side).
    """
    m = real_idx.shape[1]
    sel_r = _selection(real_idx, real.shape[0], real.dtype)
    sel_f = _selection(fake_idx, fake.shape[0], fake.dtype)

    def diagonal(x: jax.Array, sel: jax.Array) -> jax.Array:
        return jnp.matmul(sel, _kernel_diagonal(x, kernel), precision=jax.lax.Precision.HIGHEST)

    kxx = _subset_kernel_sums(real, sel_r, real, sel_r, kernel) - diagonal(real, sel_r)
    kyy = _subset_kernel_sums(fake, sel_f, fake, sel_f, kernel) - diagonal(fake, sel_f)
    kxy = _subset_kernel_sums(real, sel_r, fake, sel_f, kernel)
    return (kxx + kyy) / (m * (m - 1)) - 2.0 * kxy / (m * m)


def check_kid_settings(
    subsets: int,
    subset_size: int,
    degree: int,
    gamma: float | None,
    coef: float,
    kernel: str = "poly",
    sigma: float = 10.0,
) -> None:
    """Validate the KID hyper-parameters."""
    if kernel not in KID_KERNELS:
        raise ValueError(f"expected `kernel` to be one of {KID_KERNELS}, got {kernel!r}")
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, (int, float))
        or not np.isfinite(sigma)
        or sigma <= 0
    ):
        raise ValueError(f"expected `sigma` to be a positive finite number, got {sigma!r}")
    checks.check_positive_int(subsets, "subsets")
    checks.check_positive_int(degree, "degree")
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"expected `subset_size` to be an integer >= 2, got {subset_size!r}")
    if gamma is not None and not (isinstance(gamma, (int, float)) and gamma > 0):
        raise ValueError(f"expected `gamma` to be None or a positive number, got {gamma!r}")
    if not isinstance(coef, (int, float)) or isinstance(coef, bool):
        raise ValueError(f"expected `coef` to be a number, got {coef!r}")


def check_subset_size(subset_size: int, num_samples: int, which: str) -> None:
    """Raise ``ValueError`` if ``subset_size`` exceeds the number of ``which`` samples."""
    if subset_size > num_samples:
        raise ValueError(
            f"expected `subset_size` to be at most the number of {which} samples "
            f"({num_samples}), got {subset_size}"
        )


@register(
    "kernel_inception_distance",
    kind="statistic",
    tier=1,
    domain="generative",
    higher_is_better=False,
    example=lambda: (
        lambda r, f: jnp.stack(kernel_inception_distance(r, f, subsets=4, subset_size=5)),
        (
            jnp.sin(jnp.arange(32.0)).reshape(8, 4),
            jnp.cos(jnp.arange(28.0)).reshape(7, 4),
        ),
    ),
)
def kernel_inception_distance(
    real: Float[Array, "n_real dim"],
    fake: Float[Array, "n_fake dim"],
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
    kernel: str = "poly",
    sigma: float = 10.0,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Kernel Inception Distance: mean and std of the unbiased MMD² over random subsets.

    Each of ``subsets`` rounds draws ``subset_size`` real and ``subset_size`` fake rows without
    replacement (:func:`kid_subset_indices` with the keys ``jax.random.split(key(seed))``) and
    computes :func:`unbiased_mmd2` with ``k(x, y) = (gamma xᵀy + coef)^degree``, ``gamma = 1/dim``
    by default (torchmetrics' and the KID paper's kernel), or with torch-fidelity's
    ``kid_kernel="rbf"`` Gaussian kernel ``k(x, y) = exp(-‖x - y‖² / (2 sigma²))`` (its default
    ``kid_kernel_rbf_sigma`` is 10, as ours). The std is the population std
    (``ddof=0``), as torchmetrics. When ``subset_size`` equals both sample counts every subset
    is the whole of both sets (and with ``subsets=1`` there is one subset), so the std is 0 by
    construction and says nothing, as in torchmetrics and torch-fidelity; ``calibrax kid``
    reports it as unknown then. Work happens in the widest input float dtype (at least
    float32). jit-able with static settings.

    Args:
        real: Real-sample features, shape (n_real, dim).
        fake: Generated-sample features, shape (n_fake, dim).
        subsets: Number of subsets.
        subset_size: Samples per subset (>= 2, at most ``n_real`` and ``n_fake``).
        degree: Polynomial kernel degree.
        gamma: Kernel scale; ``None`` means ``1 / dim``.
        coef: Kernel offset.
        seed: Seed of the subset draws.
        kernel: ``"poly"`` (default) or ``"rbf"``.
        sigma: RBF bandwidth (``kernel="rbf"`` only).

    Returns:
        ``(kid_mean, kid_std)`` scalars.

    Raises:
        ValueError: On bad settings, fewer than 2 samples, different feature dims, NaN/Inf
            (eagerly) or ``subset_size`` larger than either set.
        TypeError: If an input is not floating point.

    References:
        Bińkowski et al., 2018, arXiv:1801.01401.
    """
    check_kid_settings(subsets, subset_size, degree, gamma, coef, kernel, sigma)
    check_feature_sets(real, fake)
    check_subset_size(subset_size, real.shape[0], "real")
    check_subset_size(subset_size, fake.shape[0], "fake")
    return kid_from_buffers(
        real,
        real.shape[0],
        fake,
        fake.shape[0],
        subsets=subsets,
        subset_size=subset_size,
        degree=degree,
        gamma=gamma,
        coef=coef,
        seed=seed,
        dtype=_float_dtype(real, fake),
        kernel=kernel,
        sigma=sigma,
    )
