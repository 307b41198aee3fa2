"""P2SGradLoss: mean squared error between the cosines to the class weights and one-hot labels."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float
from jaxtyping import Int

from calibrax.core.registry import register
from calibrax.metric_learning.losses._mined import reject_indices_tuple
from calibrax.metric_learning.losses._mined import reject_ref
from calibrax.metric_learning.losses._weight_losses import ClassWeightLoss
from calibrax.metric_learning.losses._weight_losses import compute_dtype

__all__ = ["P2SGradLoss"]

# torch.renorm(p=2, dim=1, maxnorm=1e-5) followed by * 1e5, as pytorch-metric-learning does on
# every call: columns above the max norm are scaled by maxnorm / (norm + 1e-7).
_MAXNORM = 1e-5
_RENORM_EPS = 1e-7


def unit_columns(weight: Float[Array, "dim classes"]) -> Float[Array, "dim classes"]:
    """``weight.renorm(2, 1, 1e-5) * 1e5``: each column of norm above 1e-5 scaled to norm
    ``norm / (norm + 1e-7)`` (1 up to 1e-7), the others multiplied by 1e5."""
    norm = jnp.sqrt(jnp.sum(weight * weight, axis=0, keepdims=True))
    factor = jnp.where(norm > _MAXNORM, _MAXNORM / (norm + _RENORM_EPS), 1)
    return weight * factor * (1 / _MAXNORM)


def _checked_unit_columns(weight: Float[Array, "dim classes"]) -> Float[Array, "dim classes"]:
    """:func:`unit_columns`, with NaN columns where PML's assertion ``|norm - 1| < 1e-5`` on the
    rescaled column fails (a column of norm up to about 0.01 or below 0.99999e-5; the arithmetic
    here is at least float32, where PML uses 1e-5). The norm tested is the one the rescaling
    gives, ``n / (n + 1e-7)`` (``1e5 n`` below 1e-5), rather than one measured again from the
    rescaled entries: they differ by rounding only. The NaN reaches the loss and every
    gradient, with no reduction of its own."""
    norm = jnp.sqrt(jnp.sum(weight * weight, axis=0, keepdims=True))
    factor = jnp.where(norm > _MAXNORM, _MAXNORM / (norm + _RENORM_EPS), 1)
    unit_norm = norm * factor * (1 / _MAXNORM)
    return jnp.where(jnp.abs(unit_norm - 1) < 1e-5, weight * factor * (1 / _MAXNORM), jnp.nan)


def _uses_gram(batch: int, dim: int, classes: int) -> bool:
    """Whether to take the Gram form: when its products, ``2 d^2 (B + C)`` multiply-adds, are
    under 2/3 of the direct form's three ``(B, d, C)`` products, ``3 B d C``, i.e.
    ``d (B + C) < B C`` (the other third pays for its extra (B, d) passes). Measured on one core,
    float32, d = 128 (direct / Gram ms): B = 1024, C = 256: 2.32 / 1.30; B = 256, C = 512:
    1.15 / 0.75; B = 512, C = 128 (just outside): 0.61 / 0.66; B = 256, C = 64: 0.20 / 0.34."""
    return dim * (batch + classes) < batch * classes


def _materialized_t(x: jax.Array) -> jax.Array:
    """``x.T`` as an array of its own: XLA otherwise folds the transpose into the product as a
    contraction over the rows, which XLA's CPU backend runs 15-40% slower (one core, B = 256 /
    1024) than the plain product of the copied transpose."""
    return jax.lax.optimization_barrier(x.T)


def _p2s_target(labels: jax.Array, classes: int, dtype: Any) -> jax.Array:
    """The one-hot targets; a row of NaN for a label outside ``[0, classes)`` (under jit, where
    it cannot raise), so that the loss is NaN with no reduction of its own."""
    valid = (labels >= 0) & (labels < classes)
    onehot = (labels[:, None] == jnp.arange(classes, dtype=labels.dtype)[None, :]).astype(dtype)
    return jnp.where(valid[:, None], onehot, jnp.nan)


@jax.custom_vjp
def _p2s_direct(
    embeddings: Float[Array, "batch dim"],
    weight: Float[Array, "dim classes"],
    labels: Int[Array, " batch"],
) -> Float[Array, ""]:
    r"""``mean((clamp(x_i . u_j / |x_i|, -1, 1) - [j = y_i])^2)`` over the batch and classes,
    with ``u = unit_columns(weight)``; the gradient w.r.t. ``u`` is passed to ``weight``
    unchanged (straight-through, see :class:`P2SGradLoss`).

    A custom VJP (reverse mode only; autodiff's backward walks the clamp's selects, the one-hot
    and the division separately): with :math:`G = 2 (\cos - \text{onehot}) / (BC)`, zero where
    the clamp was active (torch's clamp passes the gradient on [-1, 1], ends included), the
    gradients are :math:`(G / |x|) U^T - x \sum_j G \cos / |x|^2` and :math:`x^T (G / |x|)`.
    """
    return _p2s_direct_fwd(embeddings, weight, labels)[0]


def _p2s_direct_fwd(
    embeddings: jax.Array, weight: jax.Array, labels: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    unit = _checked_unit_columns(weight)
    x_norm = jnp.sqrt(jnp.sum(embeddings * embeddings, axis=1))
    cosine = (embeddings @ unit) / x_norm[:, None]
    target = _p2s_target(labels, unit.shape[1], cosine.dtype)
    loss = jnp.mean(jnp.square(jnp.clip(cosine, -1, 1) - target))
    return loss, (embeddings, unit, labels, x_norm, cosine)


def _p2s_direct_bwd(
    res: tuple[jax.Array, ...], grad: jax.Array
) -> tuple[jax.Array, jax.Array, None]:
    embeddings, unit, labels, x_norm, cosine = res
    target = _p2s_target(labels, unit.shape[1], cosine.dtype)
    inside = (cosine >= -1) & (cosine <= 1)
    scale = grad * (2 / cosine.size)
    g = jnp.where(inside, scale * (cosine - target), jnp.zeros_like(cosine)) / x_norm[:, None]
    d_x = g @ unit.T - embeddings * (jnp.sum(g * cosine, axis=1) / x_norm)[:, None]
    return d_x, _materialized_t(embeddings) @ g, None


_p2s_direct.defvjp(_p2s_direct_fwd, _p2s_direct_bwd)


@jax.custom_vjp
def _p2s_gram(
    embeddings: Float[Array, "batch dim"],
    weight: Float[Array, "dim classes"],
    labels: Int[Array, " batch"],
) -> Float[Array, ""]:
    r"""The same mean square as :func:`_p2s_direct` without the clamp, through (d, d) Gram
    matrices instead of the (B, C) cosines.

    With unit rows :math:`\hat x_i`, :math:`K = U U^T` and :math:`S = \hat X^T \hat X`,
    :math:`\sum_j \cos_{ij}^2 = \hat x_i^T K \hat x_i`, so

    .. math::
        L = \frac{1}{BC} \sum_i \big(\hat x_i \cdot (K \hat x_i - 2 u_{y_i}) + 1\big),
        \quad \frac{\partial L}{\partial \hat x_i} = \frac{2}{BC} (K \hat x_i - u_{y_i}),
        \quad \frac{\partial L}{\partial U} = \frac{2}{BC}
            \Big(S U - \big[\textstyle\sum_{i: y_i = j} \hat x_i\big]_j\Big),

    ``2 d^2 (B + C)`` multiply-adds instead of ``3 B d C``. The clamp is the identity in exact
    arithmetic (each column of ``unit_columns`` has norm ``n / (n + 1e-7) < 1``, so
    :math:`|\cos| < 1` by Cauchy-Schwarz); see :class:`P2SGradLoss` for where rounding makes
    the two forms differ. A custom VJP: reverse mode only.
    """
    return _p2s_gram_fwd(embeddings, weight, labels)[0]


def _p2s_gram_fwd(
    embeddings: jax.Array, weight: jax.Array, labels: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    batch, classes = embeddings.shape[0], weight.shape[1]
    unit = _checked_unit_columns(weight)
    x_norm = jnp.sqrt(jnp.sum(embeddings * embeddings, axis=1))
    rows = embeddings / x_norm[:, None]
    projected = rows @ (unit @ unit.T)
    # A label outside [0, C) (under jit, where it cannot raise) reads a row of NaN.
    # (jnp.take wraps negative indices: the range is tested here.)
    valid = (labels >= 0) & (labels < classes)
    own = jnp.where(valid[:, None], jnp.take(unit.T, labels, axis=0, mode="clip"), jnp.nan)
    loss = (jnp.sum(rows * (projected - 2 * own)) + batch) / (batch * classes)
    return loss, (rows, x_norm, unit, labels, projected, own)


def _p2s_gram_bwd(res: tuple[jax.Array, ...], grad: jax.Array) -> tuple[jax.Array, jax.Array, None]:
    rows, x_norm, unit, labels, projected, own = res
    scale = grad * (2 / (rows.shape[0] * unit.shape[1]))
    d_rows = scale * (projected - own)
    d_x = (d_rows - rows * jnp.sum(rows * d_rows, axis=1, keepdims=True)) / x_norm[:, None]
    per_class = jax.ops.segment_sum(rows, labels, unit.shape[1])
    d_unit = scale * ((_materialized_t(rows) @ rows) @ unit - per_class.T)
    return d_x, d_unit, None


_p2s_gram.defvjp(_p2s_gram_fwd, _p2s_gram_bwd)


def _example() -> tuple[Any, tuple[jax.Array, jax.Array]]:
    embeddings = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
    labels = jnp.array([0, 1, 2, 0, 1, 2, 0, 1], jnp.int32)

    def fn(embeddings: jax.Array, labels: jax.Array) -> jax.Array:
        return P2SGradLoss(4, 3, rngs=nnx.Rngs(0))(embeddings, labels)

    return fn, (embeddings, labels)


@register(
    "p2s_grad_loss",
    kind="loss",
    tier=3,
    domain="metric_learning",
    higher_is_better=False,
    differentiable=True,
    forward_mode=False,
    example=_example,
)
class P2SGradLoss(ClassWeightLoss):
    r"""P2SGrad loss, as pytorch-metric-learning 2.9's ``P2SGradLoss``.

    With :math:`\cos\theta_{ij} = x_i \cdot w_j / \lVert x_i \rVert` (unit-norm class weights),
    clamped to [-1, 1]:

    .. math::
        L = \frac{1}{B C} \sum_{i, j} \big(\cos\theta_{ij} - [j = y_i]\big)^2,

    the mean over the batch and the ``C`` classes (already reduced: there is no reducer). Its
    gradient is the paper's P2SGrad update.

    pytorch-metric-learning rescales the stored weight columns to unit norm in place on every
    call (``renorm``), then differentiates with respect to the rescaled weights. A pure JAX
    function cannot write to its parameters, so here the forward pass uses the rescaled columns
    and passes their gradient to ``weight`` unchanged (a straight-through estimate: the same
    gradient as PML's); :meth:`renormalize` writes the rescaled columns into ``weight``, to be
    called after each optimiser step to reproduce PML's trajectory exactly. A column that fails
    PML's assertion (rescaled norm ``n / (n + 1e-7)`` not within 1e-5 of 1: norm up to about
    0.01, or below 0.99999e-5) makes the loss and the gradients NaN. A zero embedding divides by
    its zero norm, as in PML, and gives NaN. Under jit, NaN/Inf embeddings and labels outside
    ``[0, num_classes)`` give a NaN loss through the arithmetic itself (see :meth:`__call__`).

    Two exact forms, chosen by shape: the direct one (PML's: the (B, C) cosines, three ``(B, d, C)``
    products) and, when ``d (B + C) < B C`` (e.g. B = 1024, d = 128, C = 256; see
    :func:`_uses_gram`), a Gram form that needs only the ``(d, d)`` matrices ``U U^T`` and ``X^T X``
    (see :func:`_p2s_gram`), 2.4x fewer multiply-adds at that size. Both have a custom VJP (reverse
    mode only: ``jax.jvp``/``jax.jacfwd`` raise). The Gram form drops PML's clamp of the cosines to
    [-1, 1], which is the identity in exact arithmetic (the columns' norm, ``n / (n + 1e-7)``, is
    below 1); it differs from PML only where a cosine rounds past +-1, i.e. an embedding parallel to
    a class column to within rounding: there PML uses the clamped value and a zero gradient for that
    entry, the Gram form the unclamped ones. In float64 this does not happen (the cosine stays 1e-7
    inside), in float32 it does for about 3% of embeddings equal to a column (PML's own result then
    depends on its product's rounding order; the direct form clamps as PML, after its own rounding).
    The Gram form also computes the sum of squares as :math:`\sum \cos^2 - 2 \sum \cos_{i y_i} + B`,
    so its value carries an absolute rounding error of a few eps times ``1/C`` even when the loss is
    near 0 (the gradients have the same eps-sized absolute error per cosine as the direct form).

    Attributes:
        weight: Class weights, ``nnx.Param`` of shape ``(descriptors_dim, num_classes)`` (the
            layout of pytorch-metric-learning's ``weight``), drawn uniformly from [-1, 1] with
            ``rngs.params()`` and rescaled to unit columns: PML's distribution, not its numbers
            (copy PML's ``weight`` in to reproduce a torch run).

    Args:
        descriptors_dim: Dimension of the embeddings (PML's name and argument order).
        num_classes: Number of classes.
        param_dtype: dtype of ``weight``.
        rngs: Random generators; ``rngs.params()`` initialises ``weight``.

    Raises:
        ValueError: If ``descriptors_dim`` or ``num_classes`` is not a positive integer.

    References:
        Zhang et al., 2019, "P2SGrad: Refined Gradients for Optimizing Deep Face Models",
        arXiv:1905.02479.
    """

    def __init__(
        self,
        descriptors_dim: int,
        num_classes: int,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(num_classes, descriptors_dim, None)
        self.descriptors_dim = int(descriptors_dim)
        init = jax.random.uniform(
            rngs.params(), (descriptors_dim, num_classes), param_dtype, -1.0, 1.0
        )
        self.weight = nnx.Param(unit_columns(init))
        # "direct" or "gram" forces a form (tests); None chooses by cost (see _uses_gram).
        self._form: str | None = None

    def class_weights(self) -> jax.Array:
        """The class weights as (num_classes, descriptors_dim), for the base's regularizer hook
        (P2SGrad takes no ``weight_regularizer``, as in pytorch-metric-learning, so it adds 0)."""
        return self.weight[...].T

    def renormalize(self) -> None:
        """Rescale the stored columns to unit norm, as PML does in place on every call."""
        self.weight[...] = unit_columns(self.weight[...])

    def _loss(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        miner_weights: Any = None,
    ) -> Float[Array, ""]:
        # ``miner_weights`` (the base's per-sample miner weights) are all ones: P2SGrad refuses an
        # ``indices_tuple``, as pytorch-metric-learning does, and averages over (batch, classes).
        weight = self.weight[...].astype(embeddings.dtype)
        form = self._form
        if form is None:
            batch, dim = embeddings.shape
            form = "gram" if _uses_gram(batch, dim, self.num_classes) else "direct"
        return (_p2s_gram if form == "gram" else _p2s_direct)(embeddings, weight, labels)

    def __call__(
        self,
        embeddings: Float[Array, "batch dim"],
        labels: Int[Array, " batch"],
        indices_tuple: Any = None,
        ref_emb: Any = None,
        ref_labels: Any = None,
    ) -> Float[Array, ""]:
        """The loss of a batch.

        Args:
            embeddings: Embedding vectors, shape ``(batch, descriptors_dim)``, any float dtype.
            labels: Integer class ids in ``[0, num_classes)``, shape ``(batch,)``.
            indices_tuple: Must be None (P2SGrad takes no miner output).
            ref_emb: Must be None (no reference set).
            ref_labels: Must be None.

        Returns:
            The scalar loss in the dtype of ``embeddings``.

        Raises:
            ValueError: If ``indices_tuple``, ``ref_emb`` or ``ref_labels`` is given, or see
                :meth:`ClassWeightLoss.validate_inputs`.
            TypeError: See :meth:`ClassWeightLoss.validate_inputs`.
        """
        reject_indices_tuple(type(self).__name__, indices_tuple)
        reject_ref(type(self).__name__, ref_emb, ref_labels)
        # The base's checks, which raise eagerly. Under jit no value check is recorded: the
        # arithmetic itself turns each bad value into a NaN loss, with no reduction of its own
        # (NaN/Inf embeddings: the cosines or unit rows are NaN, Inf / Inf; a label outside
        # [0, num_classes): a NaN target row; a column PML's assertion rejects: NaN, see
        # _checked_unit_columns). No regularizer or miner weights apply (P2SGrad takes none).
        embeddings, labels, _ = self.validate_inputs(embeddings, labels)
        dtype = compute_dtype(embeddings)
        return self._loss(embeddings.astype(dtype), labels).astype(embeddings.dtype)
