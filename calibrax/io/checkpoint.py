"""Save and restore the state of any ``nnx.Module`` (model, metric, ``nnx.Optimizer``) with Orbax.

A checkpoint is a directory holding two Orbax items: ``state``, every variable of
``nnx.state(module)`` as a nested dict of arrays, and ``calibrax``, a JSON record with the calibrax
version, the module's qualified class name, the user's ``metadata`` dict, and a manifest of every
variable (path, shape, dtype, sha256 of its bytes). Restoring compares the manifest with the
target module *before* Orbax reads any array, so a mismatch is one clear ``ValueError`` naming the
variable, and checks every restored array against its sha256, so a changed byte is an error.

A metric (:class:`~calibrax.core.StatefulMetric`) checkpoint also records the metric's settings
(every plain attribute of the metric and its sub-modules: KID's ``subsets``, ``subset_size``,
``degree``, ``seed``, a backbone's ``input_size``, ...): restoring into a metric built with other
settings is an error naming the setting, since its state would silently mean something else. A
metric checkpoint holds its state, never the frozen backbone weights (:class:`FrozenWeight`): restore
into a metric built with its backbone.

Saving is atomic: Orbax writes into ``<path>.orbax-checkpoint-tmp``, writes ``commit_success.txt``
and only then renames the directory to ``<path>``. A save killed part-way leaves at most a
temporary directory, never a ``<path>`` that looks complete. (A rename protects against a killed
process; it does not ``fsync``, so it does not protect against a power cut.)

RNG state round-trips: ``nnx.Rngs`` keys are typed key arrays, which Orbax cannot write, so they are
stored as their raw ``uint32`` key data and re-wrapped with the same PRNG implementation on
restore.

Example::

    save_state("/tmp/ckpt", model, metadata={"lr": 1e-3})
    abstract = nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0)))
    model = restore_state("/tmp/ckpt", abstract)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from typing import Any
from typing import TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

__all__ = ["CheckpointManager", "read_metadata", "restore_state", "save_state"]

M = TypeVar("M", bound=nnx.Pytree)

_STATE_ITEM = "state"
_META_ITEM = "calibrax"
_FORMAT = 1
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_COMMIT_FILE = "commit_success.txt"


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _path_str(path: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in path)


def _is_metric(module: Any) -> bool:
    from calibrax.core.base import StatefulMetric

    return isinstance(module, StatefulMetric)


def _flat_variables(module: nnx.Pytree) -> list[tuple[tuple[Any, ...], Any]]:
    """``(path, value)`` of every saved variable in ``module`` (a metric's frozen backbone weights
    are not saved); abstract values are ShapeDtypeStructs."""
    from calibrax.core.state import FrozenWeight

    state = nnx.state(module, nnx.Not(FrozenWeight)) if _is_metric(module) else nnx.state(module)
    return [(tuple(path), var.get_value()) for path, var in nnx.to_flat_state(state)]


_SETTING_TYPES = (bool, int, float, str, type(None))
# Attributes that change how a metric behaves next, not what its saved state means.
_NOT_SETTINGS = frozenset({"reset_real_features"})


def _plain(value: Any) -> Any:
    """``value`` as JSON when it is a plain setting (scalars, strings, tuples of them), else a
    sentinel."""
    if isinstance(value, _SETTING_TYPES) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    return _SKIP


_SKIP = object()


def _settings(module: nnx.Pytree) -> dict[str, Any]:
    """The plain attributes of a metric and of every module inside it (``path/name``), and each
    sub-module's class: what, besides the arrays, decides what the state means."""
    out: dict[str, Any] = {}
    for path, node in nnx.iter_graph(module):
        if not isinstance(node, nnx.Module):
            continue
        prefix = "".join(f"{p}/" for p in path)
        out[f"{prefix}class"] = _class_name(node)
        for name, value in vars(node).items():
            if name.startswith("_") or name in _NOT_SETTINGS:
                continue
            plain = _plain(value)
            if plain is not _SKIP:
                out[f"{prefix}{name}"] = plain
    return out


def _sha256(value: Any) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(value)).tobytes()).hexdigest()


def _is_key(value: Any) -> bool:
    return hasattr(value, "dtype") and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)


def _key_impl(value: Any) -> str:
    # ``str(impl)`` is the name ``jax.random.wrap_key_data(impl=...)`` accepts, e.g. "threefry2x32".
    return str(jax.random.key_impl(value))


def _nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _lookup(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _orbax_error(path: os.PathLike | str, err: BaseException) -> ValueError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ValueError(
        f"could not read the checkpoint at {os.fspath(path)!r}: {type(err).__name__}: {first}"
    )


def save_state(
    path: os.PathLike | str,
    module: nnx.Pytree,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Save every variable of ``module`` to the checkpoint directory ``path``.

    The save is complete and atomic when this function returns (see the module docstring).

    Args:
        path: Directory to create. Its parent is created if needed.
        module: Any ``nnx.Module`` or other ``nnx.Pytree``: a model, a metric, an
            ``nnx.Optimizer``. All of its state is saved, including ``nnx.Rngs`` keys and counts.
        metadata: A JSON-serializable dict (e.g. the model's config) stored next to the state and
            returned by :func:`read_metadata` (as JSON gives it back: tuples become lists).
        overwrite: Replace an existing checkpoint at ``path``. The old one is deleted before the
            new one is written, so a crash in between loses both; :class:`CheckpointManager`
            never overwrites, it writes new steps.

    Raises:
        FileExistsError: If ``path`` exists and ``overwrite`` is false.
        TypeError: If ``module`` is not an ``nnx.Pytree`` or ``metadata`` is not JSON-serializable.
        ValueError: If ``module`` holds abstract (``nnx.eval_shape``) variables.
    """
    if not isinstance(module, nnx.Pytree):
        raise TypeError(
            f"expected `module` to be an nnx.Module or other nnx.Pytree, got {type(module).__name__}"
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"expected `metadata` to be a dict or None, got {type(metadata).__name__}")
    user_metadata = dict(metadata or {})
    try:
        json.dumps(user_metadata)
    except (TypeError, ValueError) as err:
        raise TypeError(f"expected `metadata` to be JSON-serializable, got {err}") from None
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"expected `path` to be a new checkpoint directory, got {path!r} which exists "
            "(pass overwrite=True to replace it)"
        )

    arrays: dict[tuple[str, ...], Any] = {}
    manifest = []
    for var_path, value in _flat_variables(module):
        where = _path_str(var_path)
        if isinstance(value, jax.ShapeDtypeStruct):
            raise ValueError(
                f"expected `module` to hold concrete arrays, got an abstract value at `{where}` "
                "(an nnx.eval_shape module cannot be saved)"
            )
        entry: dict[str, Any] = {
            "path": [str(p) for p in var_path],
            "shape": list(np.shape(value)),
        }
        if _is_key(value):
            entry["dtype"] = str(value.dtype)
            entry["key_impl"] = _key_impl(value)
            value = jax.random.key_data(value)
        else:
            value = value if isinstance(value, (jax.Array, np.ndarray)) else np.asarray(value)
            entry["dtype"] = str(value.dtype)
        entry["sha256"] = _sha256(value)
        arrays[tuple(entry["path"])] = value
        manifest.append(entry)

    record = {
        "format": _FORMAT,
        "calibrax_version": _version(),
        "class_name": _class_name(module),
        "metadata": user_metadata,
        "variables": manifest,
    }
    if _is_metric(module):
        record["settings"] = _settings(module)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            path,
            args=ocp.args.Composite(
                **{
                    _STATE_ITEM: ocp.args.PyTreeSave(_nest(arrays)),
                    _META_ITEM: ocp.args.JsonSave(record),
                }
            ),
            force=overwrite,
        )


def _version() -> str:
    from calibrax import __version__

    return __version__


def _read_record(path: os.PathLike | str) -> dict[str, Any]:
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"expected a checkpoint directory, got {path!r} which does not exist"
        )
    if not os.path.isdir(path):
        raise ValueError(f"expected a checkpoint directory, got {path!r} which is a file")
    if path.endswith(_TMP_SUFFIX) or not os.path.exists(os.path.join(path, _COMMIT_FILE)):
        raise ValueError(
            f"expected a complete checkpoint, got {path!r} which has no {_COMMIT_FILE} "
            "(an interrupted save, or not an Orbax checkpoint)"
        )
    if not os.path.isdir(os.path.join(path, _META_ITEM)) or not os.path.isdir(
        os.path.join(path, _STATE_ITEM)
    ):
        raise ValueError(
            f"expected a calibrax checkpoint with items {_STATE_ITEM!r} and {_META_ITEM!r}, got "
            f"{path!r} which has {sorted(os.listdir(path))}"
        )
    try:
        # The JSON item alone, straight from its handler: no array is touched.
        record = ocp.JsonCheckpointHandler().restore(
            epath.Path(path) / _META_ITEM, args=ocp.args.JsonRestore()
        )
    except Exception as err:  # any Orbax failure becomes one clear line
        raise _orbax_error(path, err) from None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise ValueError(
            f"expected a calibrax checkpoint record of format {_FORMAT}, got "
            f"{record.get('format') if isinstance(record, dict) else record!r} in {path!r}"
        )
    return record


def read_metadata(path: os.PathLike | str) -> dict[str, Any]:
    """The metadata stored with a checkpoint, without reading any array.

    Args:
        path: A directory written by :func:`save_state`.

    Returns:
        ``{"calibrax_version": str, "class_name": str, "metadata": dict}`` where ``class_name`` is
        the module's qualified class name and ``metadata`` is the dict given to
        :func:`save_state`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If ``path`` is not a complete calibrax checkpoint.
    """
    record = _read_record(path)
    return {
        "calibrax_version": record["calibrax_version"],
        "class_name": record["class_name"],
        "metadata": record["metadata"],
    }


def _shape_dtype(value: Any) -> tuple[tuple[int, ...], str]:
    # Variables may hold Python scalars; ``save_state`` stores them as numpy arrays.
    dtype = value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype
    return tuple(np.shape(value)), str(dtype)


def _describe(shape: Any, dtype: Any) -> str:
    return f"shape {tuple(shape)} and dtype {dtype}"


def _check_against(
    path: str, record: dict[str, Any], target: list[tuple[tuple[Any, ...], Any]]
) -> None:
    stored = {tuple(v["path"]): v for v in record["variables"]}
    wanted = {tuple(str(p) for p in var_path): value for var_path, value in target}
    missing = [_path_str(p) for p in wanted if p not in stored]
    extra = [_path_str(p) for p in stored if p not in wanted]
    if missing or extra:
        raise ValueError(
            f"expected the checkpoint at {path!r} to hold the same variables as the target module, "
            f"got {len(missing)} missing {missing[:5]} and {len(extra)} unexpected {extra[:5]}"
        )
    for key, value in wanted.items():
        entry = stored[key]
        shape, dtype = _shape_dtype(value)
        if tuple(entry["shape"]) != shape or entry["dtype"] != dtype:
            raise ValueError(
                f"expected variable `{_path_str(key)}` to have {_describe(shape, dtype)} "
                f"(target module), got {_describe(entry['shape'], entry['dtype'])} in the "
                f"checkpoint at {path!r}"
            )


def _check_settings(path: str, stored: dict[str, Any], target: dict[str, Any]) -> None:
    for name in sorted(set(stored) | set(target)):
        if name.endswith("/class") or name == "class":
            continue
        mine = target.get(name, "(not set)")
        theirs = stored.get(name, "(not set)")
        if mine != theirs:
            raise ValueError(
                f"expected the metric to have the settings the checkpoint at {path!r} was saved "
                f"with, got setting `{name}` = {_show(mine)} in the target and {_show(theirs)} in "
                "the checkpoint (build the metric with the checkpoint's settings)"
            )
    for name in sorted(set(stored) | set(target)):
        if (name.endswith("/class") or name == "class") and stored.get(name) != target.get(name):
            raise ValueError(
                f"expected the metric to have the settings the checkpoint at {path!r} was saved "
                f"with, got `{name}` = {target.get(name)} in the target and {stored.get(name)} "
                "in the checkpoint"
            )


def _show(value: Any) -> str:
    return repr(tuple(value)) if isinstance(value, list) else repr(value)


def _restore_target(value: Any) -> jax.ShapeDtypeStruct:
    sharding = getattr(value, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if _is_key(value):
        data_shape = jax.eval_shape(jax.random.key_data, value).shape
        return jax.ShapeDtypeStruct(data_shape, np.dtype(np.uint32), sharding=sharding)
    shape, dtype = _shape_dtype(value)
    return jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=sharding)


def restore_state(path: os.PathLike | str, abstract_module: M, *, strict_class: bool = True) -> M:
    """Restore a checkpoint written by :func:`save_state` into ``abstract_module``.

    ``abstract_module`` gives the structure, shapes, dtypes and shardings. It may be abstract
    (``nnx.eval_shape(lambda: Model(...))``, which allocates nothing) or a concrete module. Either
    way its variables are set in place to the checkpoint's values and the same object is returned,
    now concrete.

    Args:
        path: A directory written by :func:`save_state`.
        abstract_module: The module to restore into.
        strict_class: Require the checkpoint's class name to equal ``abstract_module``'s.

    Returns:
        ``abstract_module``, holding the restored values.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If ``path`` is not a complete calibrax checkpoint, was saved from another
            class, or a variable is missing, unexpected, or has another shape or dtype (the message
            names the variable, the expected and the stored shape and dtype).
        TypeError: If ``abstract_module`` is not an ``nnx.Pytree``.
    """
    if not isinstance(abstract_module, nnx.Pytree):
        raise TypeError(
            "expected `abstract_module` to be an nnx.Module or other nnx.Pytree, got "
            f"{type(abstract_module).__name__}"
        )
    path = os.path.abspath(os.fspath(path))
    record = _read_record(path)
    if strict_class and record["class_name"] != _class_name(abstract_module):
        raise ValueError(
            f"expected a checkpoint of {_class_name(abstract_module)}, got one of "
            f"{record['class_name']} at {path!r} (pass strict_class=False to restore anyway)"
        )
    if _is_metric(abstract_module):
        if "settings" in record:
            _check_settings(path, record["settings"], _settings(abstract_module))
        _check_backbone_present(path, abstract_module)
    target = _flat_variables(abstract_module)
    _check_against(path, record, target)

    keys = {tuple(str(p) for p in var_path): var_path for var_path, _ in target}
    values = dict(target)
    abstract = _nest({k: _restore_target(values[p]) for k, p in keys.items()})
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            restored = ckptr.restore(
                path,
                args=ocp.args.Composite(
                    **{
                        _STATE_ITEM: ocp.args.PyTreeRestore(
                            item=abstract,
                            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                        )
                    }
                ),
            )
        arrays = restored[_STATE_ITEM]
    except Exception as err:  # any Orbax failure becomes one clear line
        raise _orbax_error(path, err) from None

    impls = {tuple(v["path"]): v.get("key_impl") for v in record["variables"]}
    digests = {tuple(v["path"]): v.get("sha256") for v in record["variables"]}
    for key in keys:
        digest = digests[key]
        if digest is not None and _sha256(_lookup(arrays, key)) != digest:
            raise ValueError(
                f"expected variable `{_path_str(key)}` of the checkpoint at {path!r} to match its "
                "recorded sha256, got other bytes (the checkpoint was modified or corrupted)"
            )
    state = nnx.state(abstract_module)
    flat = dict(nnx.to_flat_state(state))
    for key, var_path in keys.items():
        value = _lookup(arrays, key)
        if impls[key] is not None:
            value = jax.random.wrap_key_data(value, impl=impls[key])
        flat[var_path].set_value(value)
    nnx.update(abstract_module, state)
    return abstract_module


def _check_backbone_present(path: str, module: nnx.Pytree) -> None:
    from calibrax.core.state import FrozenWeight

    for var_path, var in nnx.to_flat_state(nnx.state(module, FrozenWeight)):
        if isinstance(var.get_value(), jax.ShapeDtypeStruct):
            raise ValueError(
                f"expected a metric built with its backbone to restore {path!r} into (a metric "
                f"checkpoint does not carry the frozen backbone weights), got an abstract "
                f"`{_path_str(tuple(var_path))}`"
            )


class CheckpointManager:
    """Numbered checkpoints of a training loop in one directory, keeping the newest ``max_to_keep``.

    Each step is a :func:`save_state` checkpoint in ``directory/<step>``. Crash safety comes from
    :func:`save_state`'s atomic rename: a step directory only appears once it is complete, so a save
    killed part-way leaves the previous steps restorable and is never reported by
    :meth:`latest_step`. Old steps are first renamed out of the numbered namespace and then deleted,
    so an interrupted cleanup never leaves a half-deleted step either. Leftover temporary
    directories of interrupted saves are removed by the next :meth:`save`.

    One process writes to a directory at a time.

    Args:
        directory: Where the step directories live (created if missing).
        max_to_keep: Keep this many newest steps; ``None`` keeps all.

    Raises:
        ValueError: If ``max_to_keep`` is not a positive integer or None.
    """

    _STEP = re.compile(r"^\d+$")
    _TRASH_SUFFIX = ".calibrax-deleting"

    def __init__(self, directory: os.PathLike | str, *, max_to_keep: int | None = None) -> None:
        if max_to_keep is not None and (
            isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1
        ):
            raise ValueError(
                f"expected `max_to_keep` to be a positive integer or None, got {max_to_keep!r}"
            )
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_to_keep = max_to_keep
        os.makedirs(self.directory, exist_ok=True)

    def _step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _entries(self) -> list[os.DirEntry[str]]:
        with os.scandir(self.directory) as it:
            return list(it)

    def _resolve(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"expected a saved step in {self.directory!r}, got none")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise FileNotFoundError(
                f"expected `step` to be one of the saved steps {steps}, got {step!r}"
            )
        return step

    def all_steps(self) -> list[int]:
        """The complete saved steps, ascending."""
        return sorted(
            int(e.name)
            for e in self._entries()
            if self._STEP.match(e.name)
            and e.is_dir()
            and os.path.exists(os.path.join(e.path, _COMMIT_FILE))
        )

    def latest_step(self) -> int | None:
        """The newest complete step, or ``None`` if there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, module: nnx.Pytree, metadata: dict[str, Any] | None = None) -> None:
        """Save ``module`` as ``step``, then delete the oldest steps beyond ``max_to_keep``.

        Raises:
            ValueError: If ``step`` is not a non-negative integer or is already saved.
            TypeError: See :func:`save_state`.
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"expected `step` to be a non-negative integer, got {step!r}")
        step = int(step)
        if step in self.all_steps():
            raise ValueError(
                f"expected a new `step`, got {step} which is already saved in {self.directory!r}"
            )
        self._remove_leftovers()
        save_state(self._step_path(step), module, metadata=metadata)
        if self.max_to_keep is not None:
            for old in self.all_steps()[: -self.max_to_keep]:
                self._delete(old)

    def _delete(self, step: int) -> None:
        trash = self._step_path(step) + self._TRASH_SUFFIX
        os.rename(self._step_path(step), trash)
        shutil.rmtree(trash)

    def _remove_leftovers(self) -> None:
        for e in self._entries():
            if e.is_dir() and (e.name.endswith(self._TRASH_SUFFIX) or _TMP_SUFFIX in e.name):
                shutil.rmtree(e.path, ignore_errors=True)

    def restore(self, abstract_module: M, step: int | None = None) -> M:
        """Restore ``step`` (the latest by default) into ``abstract_module`` (see
        :func:`restore_state`).

        Raises:
            FileNotFoundError: If there is no checkpoint, or ``step`` was not saved.
            ValueError: See :func:`restore_state`.
        """
        return restore_state(self._step_path(self._resolve(step)), abstract_module)

    def read_metadata(self, step: int | None = None) -> dict[str, Any]:
        """:func:`read_metadata` of ``step`` (the latest by default)."""
        return read_metadata(self._step_path(self._resolve(step)))
