"""The backbone zoo: constructors registered by name, loaded with their cached weights.

Each backbone module registers a constructor with :func:`register_backbone` when it is imported.
The constructor builds the architecture with placeholder (zero) frozen weights; :func:`load` fills
them from the calibrax cache (see :mod:`calibrax.io.weights`), importing the weight file first when
the file ships with an installed package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from flax import nnx

from calibrax.core import checks
from calibrax.io import weights

__all__ = ["BackboneSpec", "backbone_names", "build", "get_spec", "load", "register_backbone"]

StateDictConvert = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and fit a torch state dict to it.

    Attributes:
        name: The backbone's name, which is also its weight-file name in
            :data:`calibrax.io.weights.KNOWN_WEIGHTS`.
        build: Zero-argument constructor returning the module with placeholder weights.
        convert: Optional function applied to the torch state dict before it is mapped by name
            (renaming or dropping keys); ``None`` maps the file's keys as they are.
    """

    name: str
    build: Callable[[], nnx.Module]
    convert: StateDictConvert | None = None


_ZOO: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str, build: Callable[[], nnx.Module], *, convert: StateDictConvert | None = None
) -> None:
    """Register the constructor of the backbone ``name``.

    Args:
        name: Backbone and weight-file name, e.g. ``"efficientnet-lite0"``.
        build: Zero-argument constructor (placeholder weights).
        convert: Optional state-dict transformation applied before name mapping.

    Raises:
        ValueError: If ``name`` is already registered with a different constructor.
    """
    if name in _ZOO and _ZOO[name].build is not build:
        raise ValueError(f"expected a new backbone name, got {name!r} which is already taken")
    _ZOO[name] = BackboneSpec(name=name, build=build, convert=convert)


def backbone_names() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_ZOO)


def get_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` registered as ``name``.

    Raises:
        ValueError: If no backbone has that name; the message lists the known names.
    """
    checks.check_choice(name, backbone_names(), "name")
    return _ZOO[name]


def build(name: str) -> nnx.Module:
    """Build the backbone ``name`` with placeholder (zero) weights, without touching the cache."""
    return get_spec(name).build()


def load(name: str, *, home: str | None = None) -> nnx.Module:
    """The backbone ``name`` with its pretrained weights, read from the calibrax cache.

    On first use of a backbone whose weight file ships with an installed package
    (``efficientnet-lite0``), the file is imported into the cache automatically. For the other
    backbones the weight file must have been imported once with
    ``calibrax weights import NAME /path/to/file.pth`` (or :func:`calibrax.io.import_weights`).
    Weights of your own imported with ``calibrax weights import NAME PATH --as ALIAS`` load as
    ``load("ALIAS")``: the architecture of ``NAME`` with the weights of ``PATH``.

    Args:
        name: Backbone name, one of :func:`backbone_names`, or an alias in the cache.
        home: Cache root; defaults to ``$CALIBRAX_HOME`` or ``~/.cache/calibrax``.

    Returns:
        The module, weights loaded.

    Raises:
        ValueError: If ``name`` is neither a backbone nor an alias in the cache.
        calibrax.io.weights.WeightsNotFoundError: If the weights are neither cached nor shipped by
            an installed package; the message names the file and the import command.
    """
    if name not in _ZOO:
        architecture = weights.alias_architecture(name, home)
        if architecture is not None:
            return weights.load_cached(get_spec(architecture), home=home, alias=name)
    spec = get_spec(name)
    return weights.load_cached(spec, home=home)
