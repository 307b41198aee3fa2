"""Map a PyTorch state dict onto a module's :class:`~calibrax.core.FrozenWeight` variables.

A module built from :mod:`calibrax.backbones._layers` with attribute names equal to the torch
module names (``nnx.List`` for ``nn.Sequential``/``nn.ModuleList`` children numbered 0, 1, ...;
``nnx.Dict`` with string keys when the numbering has gaps, e.g. ``features.0``, ``features.3``) has
``FrozenWeight`` paths that, joined with ``"."``, are exactly the torch state-dict keys
(``features.0.weight``, ``_blocks.3._bn1.running_mean``). :func:`load_state_dict` copies the tensors
over by those names and refuses missing keys, unexpected keys and mis-shaped tensors, naming the key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from flax import nnx

from calibrax.core.state import FrozenWeight

__all__ = [
    "IGNORED_SUFFIXES",
    "StateDictMismatchError",
    "load_state_dict",
    "module_state_dict",
    "torch_key",
]

#: State-dict entries that only matter for training and have no counterpart in frozen modules.
IGNORED_SUFFIXES = ("num_batches_tracked",)


class StateDictMismatchError(ValueError):
    """The state dict does not fit the module's architecture (missing, extra or mis-shaped key)."""


def torch_key(path: Iterable[Any]) -> str:
    """The torch state-dict key for an nnx state path: its parts joined with ``"."``."""
    return ".".join(str(p) for p in path)


def _frozen_variables(module: nnx.Module) -> dict[str, FrozenWeight]:
    out = {}
    for path, var in nnx.iter_graph(module):
        if isinstance(var, FrozenWeight):
            out[torch_key(path)] = var
    return out


def module_state_dict(module: nnx.Module) -> dict[str, np.ndarray]:
    """The module's frozen weights as a flat ``{torch_key: numpy array}`` dict (a copy)."""
    return {k: np.asarray(v[...]) for k, v in sorted(_frozen_variables(module).items())}


def load_state_dict(
    module: nnx.Module,
    state_dict: dict[str, np.ndarray],
    *,
    ignore_suffixes: tuple[str, ...] = IGNORED_SUFFIXES,
) -> None:
    """Copy a torch state dict onto ``module``'s frozen weights, in place.

    Each tensor is cast to the dtype of the variable it replaces (float32 for the layers in
    :mod:`calibrax.backbones._layers`), so float16/bfloat16 checkpoints load too.

    Args:
        module: A module whose ``FrozenWeight`` paths are torch names (see the module docstring).
        state_dict: Flat ``{key: array}``, e.g. from :func:`calibrax.io.load_torch_checkpoint`.
        ignore_suffixes: Keys ending with one of these are skipped (training-only buffers).

    Raises:
        StateDictMismatchError: (a ``ValueError``) on the first, in sorted key order, of: a key
            the module needs that the state dict lacks, a key the module does not have, or a
            tensor whose shape differs from the module's (both shapes are given). Nothing is
            changed in the module when an error is raised.
    """
    variables = _frozen_variables(module)
    given = {k: v for k, v in state_dict.items() if not k.endswith(ignore_suffixes)}
    name = type(module).__name__
    missing = sorted(set(variables) - set(given))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise StateDictMismatchError(
            f"expected the state dict to have key {missing[0]!r} needed by {name} "
            f"(shape {tuple(variables[missing[0]][...].shape)}), got no such key{more}"
        )
    extra = sorted(set(given) - set(variables))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise StateDictMismatchError(
            f"expected only keys of {name} in the state dict, got unexpected key {extra[0]!r} "
            f"with shape {tuple(np.shape(given[extra[0]]))}{more}"
        )
    for key in sorted(variables):
        want = tuple(variables[key][...].shape)
        got = tuple(np.shape(given[key]))
        if want != got:
            raise StateDictMismatchError(
                f"expected `{key}` to have shape {want} for {name}, got shape {got}"
            )
    for key, var in variables.items():
        # Cast in numpy and transfer: a jnp conversion would compile a program per shape.
        var[...] = jax.device_put(np.asarray(given[key]).astype(np.dtype(var[...].dtype)))
