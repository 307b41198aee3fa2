"""SNRDistance: the signal-to-noise-ratio distance of Yuan et al. (2019)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from calibrax.metric_learning.distances.base_distance import BaseDistance
from calibrax.metric_learning.distances.base_distance import plain_gram

__all__ = ["SNRDistance"]


@dataclasses.dataclass(frozen=True)
class SNRDistance(BaseDistance):
    r"""Signal-to-noise-ratio distance, as pytorch-metric-learning's ``SNRDistance``.

    The noise ``r - q`` of reading the reference ``r`` for the query (anchor) ``q``, over the
    variance of the signal:

    .. math::
        d(q, r) = \frac{\operatorname{var}(q - r)}{\operatorname{var}(q)}

    with the unbiased variance over the embedding dimensions (as ``torch.var``), on embeddings
    L``p``-normalised first (``normalize_embeddings=True`` by default, as in
    pytorch-metric-learning). The matrix is not symmetric (each row is divided by its query's
    variance), so ``is_symmetric`` is False and the pair losses take their general path.

    ``var(q - r) = var(q) + var(r) - 2 cov(q, r)``: one matmul of the centred embeddings, O(n·m)
    memory, where pytorch-metric-learning builds the (n, m, dim) differences. Numerators within
    rounding error of zero (below ``4 eps (var(q) + var(r))``) are set to exactly 0 (identical
    embeddings are at distance 0 with a zero gradient, as the explicit differences give).

    An embedding with zero variance (all components equal) divides by zero: its row is Inf/NaN, as
    in pytorch-metric-learning.

    Args:
        normalize_embeddings: L``p``-normalise each embedding first (default True).
        p: The norm's order (default 2).
        power: Exponent applied to each distance (default 1).

    References:
        Yuan et al., 2019, "Signal-to-Noise Ratio: A Robust Distance Metric for Deep Metric
        Learning", CVPR, arXiv:1904.02616.

    Example:
        >>> import jax.numpy as jnp
        >>> from calibrax.metric_learning import SNRDistance
        >>> x = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 4.0]])
        >>> d = SNRDistance(normalize_embeddings=False)(x)
        >>> print([[round(float(v), 4) for v in row] for row in d])
        [[0.0, 0.3333], [0.1429, 0.0]]
    """

    is_inverted = False
    is_symmetric = False

    def compute_mat(self, query: jax.Array, ref: jax.Array, mode: str = "plain") -> jax.Array:
        # The matrix is not symmetric: whatever ``mode`` a caller asks for, autodiff's backward
        # pass (the symmetric and cross-block shortcuts assume a symmetric matrix).
        dim = query.shape[1]
        qc = query - jnp.mean(query, axis=1, keepdims=True)
        rc = ref - jnp.mean(ref, axis=1, keepdims=True)
        var_q = jnp.sum(qc * qc, axis=1) / (dim - 1)
        var_r = jnp.sum(rc * rc, axis=1) / (dim - 1)
        scale = var_q[:, None] + var_r[None, :]
        noise = scale - (2.0 / (dim - 1)) * plain_gram(qc, rc)
        keep = noise > 4 * float(jnp.finfo(query.dtype).eps) * scale
        noise = jnp.where(keep, noise, jnp.zeros_like(noise))
        return noise / var_q[:, None]
