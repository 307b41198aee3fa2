"""The registry: every public metric, loss and backbone, listed and got by name.

Entries are added with the :func:`register` decorator where each object is defined. Each entry
carries its flags (``higher_is_better``, ``jit_compatible``, ``differentiable``) and an
``example``: a zero-argument callable returning ``(fn, args)`` where ``fn(*args)`` is a pure
function of arrays that exercises the entry. The test suite jits every example, and
differentiates it with respect to ``args[0]`` where the entry says it is differentiable, so the
flags are proven rather than claimed.

Registered functions and statistics are wrapped by :func:`calibrax.core.checks.nan_if_invalid`:
traced bad values give NaN instead of a number.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from calibrax.core import checks

__all__ = ["DOMAINS", "KINDS", "Entry", "get", "get_entry", "list_entries", "names", "register"]

KINDS = ("function", "metric", "stateful_metric", "loss", "regularizer", "backbone", "statistic")
DOMAINS = (
    "regression",
    "classification",
    "calibration",
    "image",
    "retrieval",
    "generative",
    "perceptual",
    "metric_learning",
    "vision",
)

T = TypeVar("T")
_GUARDED_KINDS = ("function", "statistic")

_REGISTRY: dict[str, Entry] = {}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered object and its flags."""

    name: str
    obj: Any
    kind: str
    tier: int
    domain: str
    higher_is_better: bool | None
    jit_compatible: bool
    differentiable: bool
    forward_mode: bool
    example: Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]] | None
    description: str


def register(
    name: str,
    *,
    kind: str,
    tier: int,
    domain: str,
    higher_is_better: bool | None = None,
    jit_compatible: bool = True,
    differentiable: bool = False,
    forward_mode: bool = True,
    example: Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]] | None = None,
) -> Callable[[T], T]:
    """Decorator that adds a function or class to the registry under ``name``.

    ``forward_mode`` is False for a differentiable entry whose gradient is a hand-written
    reverse pass (``jax.custom_vjp``): ``jax.grad`` / ``jax.vjp`` work, ``jax.jvp`` /
    ``jax.jacfwd`` raise. The test suite checks the flag both ways.

    Raises:
        ValueError: If ``name`` is taken, or ``kind``/``domain``/``tier`` is not a known value.
    """
    if kind not in KINDS:
        raise ValueError(
            f"expected `kind` to be one of {', '.join(map(repr, KINDS))}, got {kind!r}"
        )
    if domain not in DOMAINS:
        raise ValueError(
            f"expected `domain` to be one of {', '.join(map(repr, DOMAINS))}, got {domain!r}"
        )
    if tier not in (0, 1, 2, 3):
        raise ValueError(f"expected `tier` to be one of 0, 1, 2, 3, got {tier!r}")

    def decorate(obj: T) -> T:
        if kind in _GUARDED_KINDS and inspect.isfunction(obj):
            # Traced bad values give NaN, not a plausible number (calibrax.core.checks).
            obj = checks.nan_if_invalid(obj)
        if name in _REGISTRY and _REGISTRY[name].obj is not obj:
            raise ValueError(f"expected a new registry name, got {name!r} which is already taken")
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        _REGISTRY[name] = Entry(
            name=name,
            obj=obj,
            kind=kind,
            tier=tier,
            domain=domain,
            higher_is_better=higher_is_better,
            jit_compatible=jit_compatible,
            differentiable=differentiable,
            forward_mode=forward_mode,
            example=example,
            description=doc[0] if doc else "",
        )
        return obj

    return decorate


def _load_all() -> None:
    # Importing the package registers everything its modules define.
    import calibrax  # noqa: F401


def get_entry(name: str) -> Entry:
    """The registry entry called ``name``.

    Raises:
        KeyError: If no entry has that name; the message lists the known names.
    """
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"expected a registered name, got {name!r}; known names: {known}") from None


def get(name: str) -> Any:
    """The function or class registered as ``name``."""
    return get_entry(name).obj


def list_entries(
    *,
    tier: int | None = None,
    domain: str | None = None,
    kind: str | None = None,
    differentiable: bool | None = None,
    jit_compatible: bool | None = None,
) -> list[Entry]:
    """All entries matching every given filter, sorted by name."""
    _load_all()
    out = []
    for entry in _REGISTRY.values():
        if tier is not None and entry.tier != tier:
            continue
        if domain is not None and entry.domain != domain:
            continue
        if kind is not None and entry.kind != kind:
            continue
        if differentiable is not None and entry.differentiable != differentiable:
            continue
        if jit_compatible is not None and entry.jit_compatible != jit_compatible:
            continue
        out.append(entry)
    return sorted(out, key=lambda e: e.name)


def names(**filters: Any) -> list[str]:
    """Names of the entries matching ``filters`` (see :func:`list_entries`)."""
    return [e.name for e in list_entries(**filters)]
