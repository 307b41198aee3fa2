"""Inception Score: exp of the mean KL divergence between p(y|x) and the marginal p(y)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.functional.fid import _float_dtype

__all__ = ["check_splits", "inception_score", "inception_score_from_buffer"]


def inception_score_from_buffer(
    probs: jax.Array,
    num_samples: int | jax.Array,
    *,
    splits: int,
    seed: int | jax.Array | None,
    dtype: np.dtype,
) -> tuple[jax.Array, jax.Array]:
    """Inception Score of the first ``num_samples`` rows of ``probs`` (the rest are ignored).

    Rows are optionally shuffled (valid rows ranked by ``jax.random.uniform(key(seed), float32)``,
    the same draws with x64 on or off), then
    split into ``splits`` contiguous groups with boundaries ``i * n // splits`` (torch-fidelity's
    split rule). ``num_samples`` may be traced.
    """
    capacity = probs.shape[0]
    rows = jnp.arange(capacity)
    num_samples = jnp.asarray(num_samples).astype(rows.dtype)
    valid = rows < num_samples
    p = probs.astype(dtype)
    if seed is not None:
        u = jax.random.uniform(jax.random.key(seed), (capacity,), jnp.float32)
        p = p[jnp.argsort(jnp.where(valid, u, jnp.inf))]
    boundaries = (jnp.arange(1, splits) * num_samples) // splits
    split_id = jnp.sum(rows[:, None] >= boundaries[None, :], axis=1)
    member = (split_id[:, None] == jnp.arange(splits)[None, :]) & valid[:, None]
    member_f = member.astype(dtype)
    sizes = jnp.sum(member_f, axis=0)
    marginal = jnp.matmul(member_f.T, p, precision=jax.lax.Precision.HIGHEST) / sizes[:, None]
    kl = jnp.sum(xlogy(p, p) - xlogy(p, marginal[split_id]), axis=1)
    kl = jnp.where(valid, kl, 0.0)
    scores = jnp.exp(jnp.matmul(kl, member_f, precision=jax.lax.Precision.HIGHEST) / sizes)
    return jnp.mean(scores), jnp.std(scores)


def check_splits(splits: int, num_samples: int) -> None:
    """Raise ``ValueError`` unless ``1 <= splits <= num_samples``."""
    checks.check_positive_int(splits, "splits")
    if splits > num_samples:
        raise ValueError(
            f"expected `splits` to be at most the number of samples ({num_samples}), got {splits}"
        )


@register(
    "inception_score",
    kind="statistic",
    tier=1,
    domain="generative",
    higher_is_better=True,
    example=lambda: (
        lambda p: jnp.stack(inception_score(p, splits=2)),
        (jax.nn.softmax(jnp.sin(jnp.arange(40.0)).reshape(8, 5), axis=1),),
    ),
)
def inception_score(
    probs: Float[Array, "n classes"], *, splits: int = 10, seed: int | None = None
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Inception Score: mean and std over splits of ``exp(mean_x KL(p(y|x) ‖ p(y)))``.

    .. math::
        \mathrm{IS}_s = \exp\Big(\frac{1}{|S_s|}\sum_{x\in S_s}
        \sum_y p(y|x)\,\big(\log p(y|x) - \log \bar p_s(y)\big)\Big),
        \quad \bar p_s = \frac{1}{|S_s|}\sum_{x\in S_s} p(\cdot|x)

    Split ``s`` holds rows ``s * n // splits`` to ``(s + 1) * n // splits`` (torch-fidelity), after
    an optional shuffle drawn from ``seed`` (``None``: keep the given order). ``0 log 0 = 0``. The
    std is the population std (``ddof=0``, torch-fidelity's ``np.std``). Work happens in the input
    float dtype (at least float32). jit-able.

    Args:
        probs: Class probabilities p(y|x), shape (n, classes), rows summing to 1.
        splits: Number of splits, at most ``n``.
        seed: Seed of the shuffle before splitting, or ``None`` for no shuffle.

    Returns:
        ``(is_mean, is_std)`` scalars.

    Raises:
        ValueError: If ``probs`` is not 2-D, (eagerly) has NaN/Inf, values outside [0, 1] or rows
            not summing to 1, or ``splits`` is not in ``[1, n]``.
        TypeError: If ``probs`` is not floating point.

    References:
        Salimans et al., 2016, arXiv:1606.03498; torch-fidelity (Obukhov et al., 2020).
    """
    checks.check_rank(probs, 2, "probs", "samples, classes")
    checks.check_probabilities(probs, "probs", axis=1)
    check_splits(splits, probs.shape[0])
    return inception_score_from_buffer(
        probs, probs.shape[0], splits=splits, seed=seed, dtype=_float_dtype(probs)
    )
