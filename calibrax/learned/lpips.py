"""LPIPS: learned perceptual image patch similarity with trainable, non-negative heads.

For images ``x`` and ``y`` in [-1, 1] (or [0, 1] with ``normalize=True``), LPIPS shifts and scales
them into the trunk's input space, takes activations :math:`f^l` at a few taps of a frozen trunk,
normalises each spatial vector to unit length over channels, and compares:

.. math::

    d(x, y) = \\sum_l \\frac{1}{H_l W_l} \\sum_{h, w} \\big\\| w_l \\odot
        (\\hat f^l_{hw}(x) - \\hat f^l_{hw}(y)) \\big\\|_2^2

where :math:`w_l \\ge 0` are the per-channel weights of a 1x1 linear head. With ``lpips=False`` the
heads are dropped (every weight 1): the unweighted "baseline" distance.

Frozen unless built for training: loaded for evaluation (official or trained heads, the default),
the heads are :class:`~calibrax.core.FrozenHead` weights, not ``nnx.Param``, so a generator trained
with ``nnx.Optimizer(generator, tx, wrt=nnx.Param)`` on an LPIPS loss can never move them (the
failure behind torchmetrics' "LPIPS returns negative values", their issue 2315). ``trainable=True``
(or ``tune=True``, or :func:`calibrax.learned.train_lpips`, for its run) makes them ``nnx.Param``.

Versions: ``version="0.1"`` (default) is the reference's current model; ``"0.0"`` loads the heads of
the first release (arXiv:1801.03924v1) and, as that release did, feeds the [-1, 1] images to the
trunk without the ImageNet shift and scale (the reference's ``ScalingLayer`` was missing there).

Training options as in the reference: ``use_dropout=True`` puts a dropout layer (p = 0.5, inverted
scaling) before each head, active only in training mode (``model.train()``, which
:func:`~calibrax.learned.train_lpips` sets for its run) and an identity in evaluation mode (the
default); ``pnet_rand=True`` uses a randomly initialised trunk instead of the pretrained one, drawn
from the explicit ``rngs``.

With ``tune=True`` (the reference's ``pnet_tune``, the paper's "tune" variant) the trunk's
weights are unfrozen (:func:`calibrax.backbones.unfreeze`: they become
:class:`~calibrax.core.TunedWeight`, an ``nnx.Param``) and train together with the heads; by
default they are frozen and never change.

Unit normalisation uses :math:`f / \\sqrt{\\sum_c f_c^2 + \\epsilon^2}` with
:math:`\\epsilon = 10^{-10}` instead of the reference's :math:`f / (\\|f\\| + \\epsilon)`: the value
differs by at most :math:`\\epsilon / \\|f\\|` (far below float32 resolution for any live
activation), and the square root is never taken at 0, so gradients stay finite when ``x == y`` or a
tap is all zero.

References:
    Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
    arXiv:1801.03924.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
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

__all__ = ["LPIPS", "TRUNKS", "LPIPSMetric", "load_official_heads", "lpips", "read_heads"]

# LPIPS trunk name -> backbone name in calibrax.backbones.
TRUNKS = {
    "alex": "alexnet",
    "vgg": "vgg16",
    "squeeze": "squeezenet1_1",
    "efficientnet-lite0": "efficientnet-lite0",
}
# The reference's fixed input layer for the ImageNet-trained torchvision trunks: inputs in [-1, 1]
# are mapped to (x - shift) / scale, which equals ImageNet mean/std normalisation of (x + 1) / 2.
IMAGENET_SHIFT = (-0.030, -0.088, -0.188)
IMAGENET_SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
OFFICIAL_HEADS = ("alex", "vgg", "squeeze")
VERSIONS = ("0.0", "0.1")
DROPOUT_RATE = 0.5  # the reference's nn.Dropout() default


def load_official_heads(
    net: str, path: str | Path | None = None, *, version: str = "0.1"
) -> list[np.ndarray]:
    """The linear heads of the reference ``lpips`` package, read with the safe reader.

    Args:
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"``.
        path: A ``.pth`` file of heads; by default ``weights/v{version}/{net}.pth`` inside the
            installed ``lpips`` package (located without importing it, so torch is not needed).
        version: ``"0.1"`` (the current heads) or ``"0.0"`` (the first release's).

    Returns:
        One float32 vector of per-channel weights per tap.

    Raises:
        ValueError: If ``net`` has no official heads, ``version`` is unknown, or the file's keys
            are not LPIPS heads.
        FileNotFoundError: If the file (or the ``lpips`` package) is missing.
    """
    checks.check_choice(net, OFFICIAL_HEADS, "net")
    checks.check_choice(version, VERSIONS, "version")
    if path is None:
        spec = importlib.util.find_spec("lpips")
        if spec is None or spec.origin is None or spec.submodule_search_locations is None:
            raise FileNotFoundError(
                "expected the `lpips` package to be installed for its official heads "
                "(pip install --no-deps lpips==0.1.4), or `path` to a heads .pth file; got neither"
            )
        path = Path(spec.origin).parent / "weights" / f"v{version}" / f"{net}.pth"
    return read_heads(path)


def read_heads(path: str | Path) -> list[np.ndarray]:
    """Head vectors from a ``.pth`` file in the reference layout (``lin{i}.model.1.weight``).

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If the file holds no LPIPS head keys.
    """
    from calibrax.io import load_torch_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected an LPIPS heads file at {str(path)!r}, got none")
    state = load_torch_checkpoint(path)
    heads = []
    while f"lin{len(heads)}.model.1.weight" in state:
        heads.append(np.asarray(state[f"lin{len(heads)}.model.1.weight"], np.float32).reshape(-1))
    if not heads:
        raise ValueError(
            f"expected LPIPS head keys lin0.model.1.weight, ... in {str(path)!r}, "
            f"got keys {sorted(state)[:4]}"
        )
    return heads


class _Head(nnx.Module):
    """A 1x1 convolution from C channels to 1, without bias: a per-channel weight vector.

    The weight is an ``nnx.Param`` if ``trainable``, otherwise a :class:`~calibrax.core.FrozenHead`
    read through ``stop_gradient``.
    """

    def __init__(self, channels: int, *, trainable: bool) -> None:
        # Ones: at initialisation the weighted distance equals the unweighted baseline.
        ones = jax.device_put(np.ones((channels,), np.float32))
        self.weight = head_weight(ones, trainable=trainable)

    def __call__(self, diff: jax.Array) -> jax.Array:
        return jnp.einsum("...c,c->...", diff, read_head(self.weight, diff.dtype))


def _unit_normalize(f: jax.Array) -> jax.Array:
    sq = jnp.sum(f * f, axis=-1, keepdims=True)
    return f / jnp.sqrt(sq + EPS**2)


def _upsample(v: jax.Array, size: tuple[int, int]) -> jax.Array:
    # Bilinear with half-pixel centres (torch's align_corners=False); upsampling, so no antialias.
    return jax.image.resize(v, (v.shape[0], *size), method="bilinear", antialias=False)


def _min_size(trunk: Any) -> int:
    return int(getattr(trunk, "min_input_size", 32))


def _trainable_paths(module: nnx.Module) -> list[str]:
    return [
        ".".join(str(p) for p in path)
        for path, _ in nnx.to_flat_state(nnx.state(module, nnx.Param))
    ]


def _set_trunk_trainable(trunk: nnx.Module, tune: bool) -> None:
    """Unfreeze the trunk for ``tune``; otherwise make sure nothing in it would be trained."""
    if tune:
        from calibrax.backbones import unfreeze

        unfreeze(trunk)
        if not _trainable_paths(trunk):
            raise ValueError(
                "expected a trunk with weights to tune (`tune=True`), got none "
                "(it holds no FrozenWeight or nnx.Param)"
            )
        return
    paths = _trainable_paths(trunk)
    if paths:
        raise ValueError(
            f"expected a frozen trunk with `tune=False`, got trainable weight `{paths[0]}` "
            f"({len(paths)} in all; pass tune=True to train the trunk, or "
            "calibrax.backbones.freeze(trunk))"
        )


class LPIPS(LearnedMetric):
    """LPIPS distance with per-tap heads on a frozen trunk (heads trainable on request).

    Also a streaming metric (``update(predictions=..., targets=...)``, ``compute()``, ``reset()``,
    ``merge()``) of the mean (or summed) distance.

    Args:
        net: Trunk name: ``"alex"``, ``"vgg"``, ``"squeeze"`` or ``"efficientnet-lite0"``.
        trunk: The trunk module itself (with weights); by default ``calibrax.backbones.load`` of
            ``net``'s backbone. It must provide ``taps(x)`` (activations at the LPIPS taps for
            already-normalised NHWC input) and ``tap_channels``.
        lpips: If False, the unweighted baseline (heads unused).
        spatial: If True, return a distance map upsampled to the input size.
        pretrained: If True, load the official heads of ``version`` (``alex``, ``vgg``,
            ``squeeze`` only); otherwise heads start at 1 (the baseline).
        heads_path: A heads ``.pth`` file to load instead of the packaged one.
        version: ``"0.1"`` (default) or ``"0.0"``: the reference's model version. v0.0 loads the
            first release's heads and, like that release, skips the ImageNet shift and scale of
            the input (``alex``, ``vgg``, ``squeeze`` only).
        normalize: Default input convention: False for [-1, 1], True for [0, 1].
        reduction: ``"mean"`` or ``"sum"`` for the streaming metric.
        tune: If True, unfreeze the trunk (in place: a ``trunk`` passed in is modified) so that
            training updates it along with the heads (the reference's ``pnet_tune``). Batch-norm
            running statistics stay fixed. If False (default) the trunk must be frozen: no
            ``nnx.Param`` in it.
        trainable: If True, the heads are ``nnx.Param`` (a model built for training); if False
            they are :class:`~calibrax.core.FrozenHead` and nothing that optimizes ``nnx.Param``
            can change them. Default: ``tune`` (a tuned model trains its heads too).
        use_dropout: Dropout (p = 0.5) before each head in training mode (``model.train()``), as
            the reference's ``use_dropout=True`` with which its trainer trains; an identity in
            evaluation mode (``model.eval()``, the default). Needs ``rngs``.
        pnet_rand: If True, a randomly initialised trunk (the reference's ``pnet_rand=True``):
            ``net``'s architecture with torch's default layer initialisation (uniform in
            :math:`\\pm 1/\\sqrt{\\text{fan\\_in}}`) drawn from ``rngs``, so a seed gives the same
            trunk every time. (torchvision initialises its VGG and AlexNet differently; a random
            trunk is only ever reproducible within one library.) Official heads are still loaded
            if ``pretrained``, as in the reference.
        rngs: Keys for ``pnet_rand`` (the ``params`` stream) and ``use_dropout`` (the
            ``dropout`` stream); each falls back to the default stream.

    Raises:
        ValueError: On an unknown ``net`` or ``version``, heads whose sizes do not fit the trunk,
            a trunk with trainable (``nnx.Param``) weights when ``tune`` is False, one with no
            weights to tune when ``tune`` is True, ``pnet_rand`` with a ``trunk``, ``rngs``
            missing for ``pnet_rand`` or ``use_dropout``, or ``version="0.0"`` for a trunk that
            has no v0.0 model.
    """

    name: ClassVar[str] = "lpips"
    higher_is_better: ClassVar[bool] = False

    def __init__(
        self,
        *,
        net: str = "alex",
        trunk: nnx.Module | None = None,
        lpips: bool = True,
        spatial: bool = False,
        pretrained: bool = True,
        heads_path: str | Path | None = None,
        normalize: bool = False,
        reduction: str = "mean",
        tune: bool = False,
        version: str = "0.1",
        trainable: bool | None = None,
        use_dropout: bool = False,
        pnet_rand: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        super().__init__(reduction=reduction)
        checks.check_choice(net, tuple(TRUNKS), "net")
        checks.check_choice(version, VERSIONS, "version")
        if version == "0.0" and net not in OFFICIAL_HEADS:
            raise ValueError(
                f"expected version='0.1' for trunk {net!r} (v0.0 exists for 'alex', 'vgg', "
                f"'squeeze'), got version='0.0'"
            )
        for flag, value, what in (
            ("pnet_rand", pnet_rand, "the random trunk's seed"),
            ("use_dropout", use_dropout, "the dropout keys"),
        ):
            if value and rngs is None:
                raise ValueError(f"expected `rngs` ({what}) with `{flag}=True`, got None")
        if pnet_rand:
            if trunk is not None:
                raise ValueError("expected either `trunk` or `pnet_rand=True`, got both")
            from calibrax.backbones._zoo import get_spec

            trunk = get_spec(TRUNKS[net]).build(rngs=rngs)
        elif trunk is None:
            from calibrax.backbones import load

            trunk = load(TRUNKS[net])
        _set_trunk_trainable(trunk, tune)
        self.net = net
        self.version = version
        self.pnet_rand = pnet_rand
        self.trunk = trunk
        self.lpips = lpips
        self.spatial = spatial
        self.normalize = normalize
        trainable = tune if trainable is None else trainable
        channels = tuple(int(c) for c in trunk.tap_channels)
        self.heads = nnx.List([_Head(c, trainable=trainable) for c in channels])
        # Evaluation mode until model.train(); created only when asked, so that models without
        # dropout keep no random state.
        self.dropout = (
            nnx.Dropout(DROPOUT_RATE, deterministic=True, rngs=rngs) if use_dropout else None
        )
        if version == "0.0":
            # The first release fed [-1, 1] images to the trunk as they are.
            shift, scale = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        elif net in OFFICIAL_HEADS:
            shift, scale = IMAGENET_SHIFT, IMAGENET_SCALE
        else:
            # The trunk's own normalisation of [0, 1] input, rewritten for [-1, 1] input.
            shift = tuple(2.0 * m - 1.0 for m in trunk.mean)
            scale = tuple(2.0 * s for s in trunk.std)
        self.shift = tuple(float(s) for s in shift)
        self.scale = tuple(float(s) for s in scale)
        if lpips and (pretrained or heads_path is not None):
            if net not in OFFICIAL_HEADS and heads_path is None:
                raise ValueError(
                    f"expected `pretrained=False` for trunk {net!r} (official heads exist for "
                    f"'alex', 'vgg', 'squeeze'), got pretrained=True"
                )
            if heads_path is not None:
                self.set_heads(read_heads(heads_path))
            else:
                self.set_heads(load_official_heads(net, version=version))

    @property
    def tune(self) -> bool:
        """Whether the trunk is trainable (built with ``tune=True``, or unfrozen since)."""
        return bool(_trainable_paths(self.trunk))

    @property
    def tap_channels(self) -> tuple[int, ...]:
        return tuple(int(h.weight[...].shape[0]) for h in self.heads)

    def set_heads(self, heads: Sequence[np.ndarray]) -> None:
        """Replace the head weights (one vector, or a (1, C, 1, 1) array, per tap).

        Raises:
            ValueError: If the number of heads or a head's size does not fit the trunk.
        """
        if len(heads) != len(self.heads):
            raise ValueError(
                f"expected {len(self.heads)} heads for trunk {self.net!r}, got {len(heads)} "
                f"(a head checkpoint for another trunk?)"
            )
        for i, (head, w) in enumerate(zip(self.heads, heads, strict=True)):
            w = np.asarray(w, np.float32).reshape(-1)
            want = head.weight[...].shape[0]
            if w.shape[0] != want:
                raise ValueError(
                    f"expected head {i} of trunk {self.net!r} to have {want} channels, got "
                    f"{w.shape[0]} (a head checkpoint for another trunk?)"
                )
            head.weight[...] = jnp.asarray(w)

    def project(self) -> None:
        """Clamp every head weight at 0 (the heads are kept non-negative)."""
        for head in self.heads:
            head.weight[...] = jnp.maximum(head.weight[...], 0.0)

    def _validate(self, x: jax.Array, y: jax.Array, normalize: bool) -> None:
        checks.check_rank(x, 4, "x", "batch, height, width, channels")
        checks.check_same_shape(x, y, "x", "y")
        checks.check_dim(x, -1, 3, "x", "channels")
        checks.check_floating(x, "x")
        checks.check_floating(y, "y")
        checks.check_nonempty(x, "x")
        size = _min_size(self.trunk)
        if min(x.shape[1:3]) < size:
            raise ValueError(
                f"expected images of at least {size}x{size} for trunk {self.net!r}, "
                f"got {x.shape[1]}x{x.shape[2]}"
            )
        low, hint = (0.0, "normalize=True") if normalize else (-1.0, "normalize=False")
        for arr, name in ((x, "x"), (y, "y")):
            checks.check_finite(arr, name)
            checks.check_range(arr, low, 1.0, name, hint=hint)

    @checks.nan_if_invalid
    def __call__(
        self,
        x: Float[Array, "batch height width 3"],
        y: Float[Array, "batch height width 3"],
        *,
        normalize: bool | None = None,
        per_layer: bool = False,
    ) -> Any:
        """LPIPS distance between each pair of images.

        Args:
            x: Images (batch, height, width, 3), in [-1, 1] (or [0, 1] with ``normalize``).
            y: Images of the same shape.
            normalize: Override the module's input convention for this call.
            per_layer: Also return the per-tap values.

        Returns:
            Distances of shape (batch,), or (batch, height, width) with ``spatial=True``; with
            ``per_layer``, a tuple ``(distance, [value per tap])``.

        Raises:
            ValueError: On shapes that differ, not NHWC RGB, smaller than the trunk's minimum,
                NaN/Inf, or values outside the declared range.
            TypeError: On non-floating images.
        """
        normalize = self.normalize if normalize is None else normalize
        self._validate(x, y, normalize)
        values = []
        for v in self.tap_maps(x, y, normalize=normalize):
            if self.spatial:
                values.append(_upsample(v, x.shape[1:3]))
            else:
                values.append(jnp.mean(v, axis=(1, 2)))
        total = sum(values[1:], values[0])
        return (total, values) if per_layer else total

    def tap_maps(self, x: jax.Array, y: jax.Array, *, normalize: bool) -> list[jax.Array]:
        """The per-position distance of each tap, (batch, H_l, W_l) each, before the mean.

        No input checks (see :meth:`__call__`); :func:`calibrax.learned.lpips_tiled` sums these
        over tiles of a large image.
        """
        if normalize:
            x, y = 2.0 * x - 1.0, 2.0 * y - 1.0
        shift = jnp.asarray(self.shift, x.dtype).reshape(1, 1, 1, 3)
        scale = jnp.asarray(self.scale, x.dtype).reshape(1, 1, 1, 3)
        taps_x = self.trunk.taps((x - shift) / scale)
        taps_y = self.trunk.taps((y - shift) / scale)
        maps = []
        for head, fx, fy in zip(self.heads, taps_x, taps_y, strict=True):
            diff = (_unit_normalize(fx) - _unit_normalize(fy)) ** 2
            if self.lpips and self.dropout is not None:
                diff = self.dropout(diff)
            maps.append(head(diff) if self.lpips else jnp.sum(diff, axis=-1))
        return maps

    def distance(self, x: jax.Array, y: jax.Array) -> jax.Array:
        d = self(x, y)
        return jnp.mean(d, axis=(1, 2)) if self.spatial else d

    def save_heads(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Save what training changed as an Orbax checkpoint, with the trunk name and tap sizes.

        That is the heads, and for a tuned model (``tune=True``) the trunk's weights as well: a
        tuned trunk is part of the learned metric. A frozen trunk is not saved (it is the
        pretrained one).

        Raises:
            FileExistsError: If ``path`` exists and ``overwrite`` is false.
        """
        from calibrax.io.checkpoint import save_state

        tuned = self.tune
        save_state(
            path,
            _TunedCheckpoint(self.heads, self.trunk) if tuned else _HeadsCheckpoint(self.heads),
            metadata={
                "net": self.net,
                "tap_channels": list(self.tap_channels),
                "tuned_trunk": tuned,
                "version": self.version,
            },
            overwrite=overwrite,
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, trunk: nnx.Module | None = None, **kwargs: Any
    ) -> LPIPS:
        """An LPIPS model with the heads (and tuned trunk) saved by :meth:`save_heads` at ``path``.

        For a checkpoint of a tuned model the trunk's weights come from the checkpoint too: they
        are restored into a copy of ``trunk`` (which is left as it is), or by default into the
        ``net`` architecture built without pretrained weights (none are needed). The model's trunk
        is frozen unless ``tune=True`` is passed (to continue training it), and so are its heads
        unless ``trainable=True`` (or ``tune=True``) is passed: a checkpoint saved from a model
        with trainable heads loads into an evaluation model whose heads no optimizer can move. The
        model version saved with the heads is used unless ``version`` is passed (checkpoints
        written before versions were recorded are v0.1).

        Args:
            path: The heads checkpoint.
            trunk: The trunk module; by default loaded by name from the checkpoint's ``net``.
            **kwargs: Other :class:`LPIPS` settings (``spatial``, ``normalize``, ``tune``, ...).

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If it is not a heads checkpoint, or its heads (or tuned trunk) do not fit
                ``trunk``.
        """
        from calibrax.io.checkpoint import read_metadata
        from calibrax.io.checkpoint import restore_state

        meta = read_metadata(path)["metadata"]
        if "net" not in meta or "tap_channels" not in meta:
            raise ValueError(
                f"expected an LPIPS heads checkpoint at {str(path)!r}, got another kind"
            )
        tuned = bool(meta.get("tuned_trunk", False))
        if tuned:
            from calibrax.backbones import build
            from calibrax.backbones import freeze

            trunk = build(TRUNKS[meta["net"]]) if trunk is None else nnx.clone(trunk)
            freeze(trunk)  # restored weights are frozen unless tune=True asks otherwise
        kwargs.setdefault("version", meta.get("version", "0.1"))
        model = cls(net=meta["net"], trunk=trunk, pretrained=False, **kwargs)
        if list(model.tap_channels) != list(meta["tap_channels"]):
            raise ValueError(
                f"expected heads with channels {list(model.tap_channels)} for this trunk, got "
                f"{meta['tap_channels']} (a head checkpoint for another trunk?)"
            )
        if tuned:
            restore_state(path, _TunedCheckpoint(model.heads, model.trunk))
        else:
            restore_state(path, _HeadsCheckpoint(model.heads))
        return model


class _HeadsCheckpoint(nnx.Module):
    """The heads of an LPIPS model, as saved on their own."""

    def __init__(self, heads: nnx.List) -> None:
        self.heads = heads


class _TunedCheckpoint(nnx.Module):
    """The heads and the tuned trunk of an LPIPS model."""

    def __init__(self, heads: nnx.List, trunk: nnx.Module) -> None:
        self.heads = heads
        self.trunk = trunk


LPIPSMetric = LPIPS
"""LPIPS as a streaming metric: the same module (``update`` / ``compute`` / ``reset`` / ``merge``)."""


def lpips(
    x: Float[Array, "batch height width 3"],
    y: Float[Array, "batch height width 3"],
    *,
    model: LPIPS,
    normalize: bool | None = None,
) -> Float[Array, ""]:
    """Mean LPIPS distance between ``x`` and ``y``: a differentiable training loss.

    Gradients flow to ``x`` and ``y``, never to frozen heads (the default) or a frozen trunk: only
    to heads built with ``trainable=True`` and a trunk built with ``tune=True``. The gradient is
    finite when ``x == y``.

    Args:
        x: Images (batch, height, width, 3).
        y: Images of the same shape.
        model: The :class:`LPIPS` module to use.
        normalize: Input convention override (see :class:`LPIPS`).

    Returns:
        The scalar mean distance over the batch (and over space for a spatial model).
    """
    return jnp.mean(model(x, y, normalize=normalize))


def _example():
    from calibrax.learned._toy import ToyTrunk

    model = LPIPS(net="alex", trunk=ToyTrunk(rngs=nnx.Rngs(0)), pretrained=False)
    k = jax.random.split(jax.random.key(0), 2)
    x = jax.random.uniform(k[0], (2, 32, 32, 3), jnp.float32, -1.0, 1.0)
    y = jax.random.uniform(k[1], (2, 32, 32, 3), jnp.float32, -1.0, 1.0)
    return (lambda a, b: lpips(a, b, model=model)), (x, y)


register(
    "lpips",
    kind="function",
    tier=2,
    domain="perceptual",
    higher_is_better=False,
    differentiable=True,
    example=_example,
)(lpips)
