"""DISTS: deep image structure and texture similarity, with trainable alpha/beta weights.

For images ``x`` and ``y`` in [0, 1], DISTS takes six stages of features: the raw image
(:math:`k = 0`, 3 channels) and the five VGG16 stages ``relu1_2`` ... ``relu5_3`` of the
ImageNet-normalised image, computed with L2 pooling (:func:`~calibrax.backbones._layers.l2_pool2d`)
in place of VGG's max pools. Per stage and channel it compares the spatial means
(texture) and the correlation (structure):

.. math::

    l_{kc} = \\frac{2 \\mu^x_{kc} \\mu^y_{kc} + c_1}{(\\mu^x_{kc})^2 + (\\mu^y_{kc})^2 + c_1},
    \\qquad
    s_{kc} = \\frac{2 \\sigma^{xy}_{kc} + c_2}{(\\sigma^x_{kc})^2 + (\\sigma^y_{kc})^2 + c_2},

    D(x, y) = 1 - \\sum_{k, c} \\big(\\hat\\alpha_{kc}\\, l_{kc} + \\hat\\beta_{kc}\\, s_{kc}\\big),
    \\qquad \\hat\\alpha = \\frac{\\alpha}{\\sum \\alpha + \\sum \\beta},\\;
    \\hat\\beta = \\frac{\\beta}{\\sum \\alpha + \\sum \\beta}

with :math:`c_1 = c_2 = 10^{-6}`, population (biased) variances and covariance over the spatial
positions, and 1475 weights each in ``alpha`` and ``beta`` (3 + 64 + 128 + 256 + 512 + 512). The
official weights ship with the PyPI package ``dists-pytorch`` (its ``weights.pt``), read here with
calibrax's safe reader, without torch.

Trainable alpha/beta: frozen (:class:`~calibrax.core.FrozenHead`) unless built with
``trainable=True``; :func:`calibrax.learned.train_dists` trains them on 2AFC judgments with the LPIPS
recipe (ranking head, BCE, Adam), keeping them non-negative (:meth:`DISTS.project`). Ding et al.
fit their weights with another objective (on the KADID-10k IQA data); the non-negativity is theirs
too (their shipped ``beta`` has exact zeros, the mark of a clamp). The VGG16 trunk is always
frozen.

Differences from the reference (``DISTS_pytorch.DISTS``, torchmetrics' ``DISTS``): NHWC input;
``pretrained=False`` starts every alpha and beta at 0.1 (the mean of the reference's random
``N(0.1, 0.01)`` start, without the draw); input checks (shape, dtype, range, NaN); under ``jit``,
where values cannot be checked, a pair with a value outside [0, 1] scores NaN instead of a number.

References:
    Ding et al., 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity",
    arXiv:2004.07728 (TPAMI 2022).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.core import checks
from calibrax.core.registry import register
from calibrax.learned.base import LearnedMetric
from calibrax.learned.base import head_weight
from calibrax.learned.base import read_head
from calibrax.learned.lpips import _trainable_paths

__all__ = ["DISTS", "dists", "load_official_dists_weights"]

#: Channels of the six stages: the image, then relu1_2 ... relu5_3.
STAGE_CHANNELS = (3, 64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
C1 = 1e-6
C2 = 1e-6
#: The reference's random start is N(0.1, 0.01); ``pretrained=False`` uses its mean.
INITIAL_WEIGHT = 0.1


def load_official_dists_weights(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The official ``alpha`` and ``beta`` of DISTS, read with the safe ``.pth`` reader.

    Args:
        path: A ``weights.pt`` file with ``alpha`` and ``beta`` of shape ``(1, 1475, 1, 1)``; by
            default the one the ``dists-pytorch`` package ships (``DISTS_pytorch/weights.pt``,
            or the copy its wheel puts in ``sys.prefix``), located without importing the package
            (which needs torch and torchvision).

    Returns:
        ``(alpha, beta)``, float32 vectors of 1475 values each.

    Raises:
        FileNotFoundError: If the file (or the ``dists-pytorch`` package) is missing.
        ValueError: If the file does not hold ``alpha`` and ``beta`` of 1475 values.
    """
    from calibrax.io import load_torch_checkpoint

    if path is None:
        spec = importlib.util.find_spec("DISTS_pytorch")
        candidates = [Path(sys.prefix) / "weights.pt"]
        if spec is not None and spec.origin is not None:
            candidates.insert(0, Path(spec.origin).parent / "weights.pt")
        found = [p for p in candidates if p.is_file()]
        if spec is None or not found:
            raise FileNotFoundError(
                "expected the `dists-pytorch` package to be installed for the official DISTS "
                "weights (pip install --no-deps dists-pytorch==0.1), or `path` to its weights.pt; "
                "got neither"
            )
        path = found[0]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a DISTS weights file at {str(path)!r}, got none")
    state = load_torch_checkpoint(path)
    size = sum(STAGE_CHANNELS)
    out = []
    for key in ("alpha", "beta"):
        if key not in state or state[key].size != size:
            got = state[key].shape if key in state else "no such key"
            raise ValueError(
                f"expected `{key}` with {size} values in {str(path)!r}, got {got} "
                f"(keys {sorted(state)[:4]})"
            )
        out.append(np.asarray(state[key], np.float32).reshape(-1))
    return out[0], out[1]


class _Weights(nnx.Module):
    """DISTS's ``alpha`` (texture) and ``beta`` (structure) weights, one per stage channel."""

    def __init__(self, *, trainable: bool) -> None:
        start = np.full((sum(STAGE_CHANNELS),), INITIAL_WEIGHT, np.float32)
        self.alpha = head_weight(jax.device_put(start), trainable=trainable)
        self.beta = head_weight(jax.device_put(start), trainable=trainable)


def _stage_terms(fx: jax.Array, fy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Texture ``l`` and structure ``s`` terms of one stage, each ``(batch, channels)``."""
    mx = jnp.mean(fx, axis=(1, 2))
    my = jnp.mean(fy, axis=(1, 2))
    texture = (2 * mx * my + C1) / (mx**2 + my**2 + C1)
    vx = jnp.mean((fx - mx[:, None, None, :]) ** 2, axis=(1, 2))
    vy = jnp.mean((fy - my[:, None, None, :]) ** 2, axis=(1, 2))
    # E[xy] - E[x]E[y], as the reference computes the covariance.
    cov = jnp.mean(fx * fy, axis=(1, 2)) - mx * my
    structure = (2 * cov + C2) / (vx + vy + C2)
    return texture, structure


class DISTS(LearnedMetric):
    """DISTS distance on a frozen VGG16 with L2 pooling, with alpha/beta weights.

    Also a streaming metric (``update(predictions=..., targets=..., mask=..., sample_weight=...)``,
    ``compute()``, ``reset()``, ``merge()``) of the mean (or summed) distance.

    Args:
        trunk: A :class:`calibrax.backbones.VGG16` (with weights, frozen); by default
            ``calibrax.backbones.load("vgg16")`` (torchvision's ImageNet weights, imported once with
            ``calibrax weights import vgg16 FILE``).
        pretrained: If True, load the official alpha/beta (from the ``dists-pytorch`` package);
            otherwise every weight starts at 0.1.
        weights_path: A ``weights.pt`` with ``alpha`` and ``beta`` to load instead.
        reduction: ``"mean"`` or ``"sum"`` for the streaming metric.
        trainable: If True, alpha and beta are ``nnx.Param`` (a model built for training);
            otherwise :class:`~calibrax.core.FrozenHead`, which no ``wrt=nnx.Param`` optimizer
            touches.

    Raises:
        TypeError: If ``trunk`` is not a ``VGG16``.
        ValueError: If the trunk holds trainable (``nnx.Param``) weights, or the weights file is
            not DISTS's.
        FileNotFoundError: If the official weights are asked for and not installed.
    """

    name: ClassVar[str] = "dists"
    higher_is_better: ClassVar[bool] = False

    def __init__(
        self,
        *,
        trunk: nnx.Module | None = None,
        pretrained: bool = True,
        weights_path: str | Path | None = None,
        reduction: str = "mean",
        trainable: bool = False,
    ) -> None:
        super().__init__(reduction=reduction)
        from calibrax.backbones import VGG16

        if trunk is None:
            from calibrax.backbones import load

            trunk = load("vgg16")
        if not isinstance(trunk, VGG16):
            raise TypeError(
                f"expected `trunk` to be a calibrax.backbones.VGG16, got {type(trunk).__name__}"
            )
        paths = _trainable_paths(trunk)
        if paths:
            raise ValueError(
                f"expected a frozen VGG16 trunk for DISTS, got trainable weight `{paths[0]}` "
                f"({len(paths)} in all; calibrax.backbones.freeze(trunk) freezes it)"
            )
        self.trunk = trunk
        self.heads = _Weights(trainable=trainable)
        if pretrained or weights_path is not None:
            self.set_weights(*load_official_dists_weights(weights_path))

    @property
    def alpha(self) -> jax.Array:
        """The raw (unnormalised) texture weights, 1475 values."""
        return self.heads.alpha[...]

    @property
    def beta(self) -> jax.Array:
        """The raw (unnormalised) structure weights, 1475 values."""
        return self.heads.beta[...]

    def set_weights(self, alpha: np.ndarray, beta: np.ndarray) -> None:
        """Replace alpha and beta (1475 values each, any shape).

        Raises:
            ValueError: If either does not hold 1475 values.
        """
        size = sum(STAGE_CHANNELS)
        for name, value in (("alpha", alpha), ("beta", beta)):
            value = np.asarray(value, np.float32).reshape(-1)
            if value.shape[0] != size:
                raise ValueError(f"expected `{name}` to have {size} values, got {value.shape[0]}")
            getattr(self.heads, name)[...] = jnp.asarray(value)

    def save_weights(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Save alpha and beta (trained or not) as an Orbax checkpoint.

        Raises:
            FileExistsError: If ``path`` exists and ``overwrite`` is false.
        """
        from calibrax.io.checkpoint import save_state

        save_state(path, self.heads, metadata={"metric": "dists"}, overwrite=overwrite)

    def load_weights(self, path: str | Path) -> None:
        """Load alpha and beta saved by :meth:`save_weights` (their frozen/trainable type stays).

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If it is not a DISTS weights checkpoint.
        """
        from calibrax.io.checkpoint import read_metadata
        from calibrax.io.checkpoint import restore_state

        if read_metadata(path)["metadata"].get("metric") != "dists":
            raise ValueError(
                f"expected a DISTS weights checkpoint at {str(path)!r}, got another kind"
            )
        restore_state(path, self.heads)

    def project(self) -> None:
        """Clamp alpha and beta at 0 (a convex combination after normalisation)."""
        self.heads.alpha[...] = jnp.maximum(self.heads.alpha[...], 0.0)
        self.heads.beta[...] = jnp.maximum(self.heads.beta[...], 0.0)

    def _validate(self, x: jax.Array, y: jax.Array) -> None:
        checks.check_rank(x, 4, "x", "batch, height, width, channels")
        checks.check_same_shape(x, y, "x", "y")
        checks.check_dim(x, -1, 3, "x", "channels")
        checks.check_floating(x, "x")
        checks.check_floating(y, "y")
        checks.check_nonempty(x, "x")
        size = self.trunk.min_input_size
        if min(x.shape[1:3]) < size:
            raise ValueError(
                f"expected images of at least {size}x{size} for DISTS, got {x.shape[1]}x{x.shape[2]}"
            )
        for arr, name in ((x, "x"), (y, "y")):
            checks.check_finite(arr, name)
            checks.check_range(arr, 0.0, 1.0, name)

    def _stages(self, images: jax.Array) -> tuple[jax.Array, ...]:
        # float32 constants, as the reference's buffers are (it matters only in float64).
        mean = jnp.asarray(np.asarray(IMAGENET_MEAN, np.float32), images.dtype).reshape(1, 1, 1, 3)
        std = jnp.asarray(np.asarray(IMAGENET_STD, np.float32), images.dtype).reshape(1, 1, 1, 3)
        return (images, *self.trunk.taps((images - mean) / std, pool="l2"))

    def __call__(
        self,
        x: Float[Array, "batch height width 3"],
        y: Float[Array, "batch height width 3"],
        *,
        per_stage: bool = False,
    ) -> Any:
        """DISTS distance between each pair of images (0 for identical images).

        Args:
            x: Images (batch, height, width, 3) in [0, 1], height and width at least 16.
            y: Images of the same shape.
            per_stage: Also return each stage's share of the similarity, a list of six
                ``(batch,)`` arrays (``1 - sum(shares)`` is the distance).

        Returns:
            Distances of shape (batch,); with ``per_stage``, ``(distance, [share per stage])``.

        Raises:
            ValueError: On shapes that differ, not NHWC RGB, smaller than 16x16, NaN/Inf, or
                values outside [0, 1].
            TypeError: On non-floating images.
        """
        self._validate(x, y)
        alpha = read_head(self.heads.alpha, x.dtype)
        beta = read_head(self.heads.beta, x.dtype)
        total = jnp.sum(alpha) + jnp.sum(beta)
        alpha, beta = alpha / total, beta / total
        shares = []
        start = 0
        for fx, fy, channels in zip(self._stages(x), self._stages(y), STAGE_CHANNELS, strict=True):
            texture, structure = _stage_terms(fx, fy)
            stop = start + channels
            shares.append(texture @ alpha[start:stop] + structure @ beta[start:stop])
            start = stop
        score = 1.0 - sum(shares[1:], shares[0])
        # Under jit the range check cannot run: a pair outside [0, 1] scores NaN, not a number.
        inside = jnp.all((x >= 0) & (x <= 1) & (y >= 0) & (y <= 1), axis=(1, 2, 3))
        score = jnp.where(inside, score, jnp.nan)
        return (score, shares) if per_stage else score

    def distance(self, x: jax.Array, y: jax.Array) -> jax.Array:
        return self(x, y)


def dists(
    x: Float[Array, "batch height width 3"],
    y: Float[Array, "batch height width 3"],
    *,
    model: DISTS,
) -> Float[Array, ""]:
    """Mean DISTS distance between ``x`` and ``y`` (in [0, 1]): a differentiable training loss.

    Gradients flow to ``x`` and ``y``, never to the frozen VGG16, and to alpha/beta only if the
    model was built with ``trainable=True``.

    Args:
        x: Images (batch, height, width, 3).
        y: Images of the same shape.
        model: The :class:`DISTS` module to use.

    Returns:
        The scalar mean distance over the batch.
    """
    return jnp.mean(model(x, y))


def _example():
    from calibrax.backbones import VGG16

    model = DISTS(trunk=VGG16(rngs=nnx.Rngs(0)), pretrained=False)
    k = jax.random.split(jax.random.key(0), 2)
    x = jax.random.uniform(k[0], (2, 16, 16, 3), jnp.float32)
    y = jax.random.uniform(k[1], (2, 16, 16, 3), jnp.float32)
    return (lambda a, b: dists(a, b, model=model)), (x, y)


register(
    "dists",
    kind="function",
    tier=2,
    domain="perceptual",
    higher_is_better=False,
    differentiable=True,
    example=_example,
)(dists)
