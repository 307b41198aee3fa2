"""Read PyTorch ``.pth`` checkpoints into numpy arrays, safely and without torch.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. This reader
uses a restricted :class:`pickle.Unpickler` whose ``find_class`` resolves only the names needed to
rebuild tensors and ordered dicts, each to calibrax's *own* inert replacement (no torch function
ever runs), and refuses every other global before anything is called.

The names it resolves, exactly (:data:`ALLOWED_GLOBALS`):

* ``collections.OrderedDict`` (state dicts and the empty backward-hook dicts);
* ``torch._utils._rebuild_tensor``, ``torch._utils._rebuild_tensor_v2`` and
  ``torch._utils._rebuild_tensor_v3`` (a tensor as a view of a storage: offset, size, stride; the
  first is what torch < 0.4 wrote, e.g. the ``lpips`` package's v0.0 heads),
  ``torch._utils._rebuild_parameter`` and
  ``torch._utils._rebuild_parameter_with_state`` (an ``nn.Parameter`` around such a tensor; the
  extra Python state is dropped);
* the typed storage classes ``torch.{Double,Float,Half,BFloat16,Long,Int,Short,Char,Byte,Bool,
  ComplexFloat,ComplexDouble}Storage`` and ``torch.storage.UntypedStorage``, which only ever appear
  inside persistent ids as dtype markers;
* the dtype objects ``torch.<dtype>`` passed to ``_rebuild_tensor_v3`` (e.g. ``torch.uint16``).

Storages are never unpickled: the persistent ids ``("storage", storage_type, key, location,
numel[, view])`` become references whose raw bytes are read afterwards (from ``<archive>/data/<key>``
in the zip format, or from the stream after the pickle in the legacy format), and tensors are cut
from them with bounds-checked offsets and strides, then copied. Objects the unpickler returns refuse
``__setstate__``, so the ``BUILD`` opcode cannot reach numpy or any other type's state setter.

Formats: the zip format (torch >= 1.6 default) and the legacy single-stream format (what
``torch.save(..., _use_new_zipfile_serialization=False)`` writes, used by many published weight
files, including EfficientNet-Lite0's). The pre-1.0 tar format is refused with a clear error.

TorchScript archives (``torch.jit.save``; OpenAI's released CLIP ``.pt`` files) are read for their
tensors only: their ``data.pkl`` pickles each scripted module as ``__torch__.<class>`` rebuilt
with ``NEWOBJ`` and given its attributes with ``BUILD``. In an archive that has TorchScript's
``code/`` folder (and only there), every ``__torch__.*`` name resolves to one inert record class
whose state setter keeps the attribute dict as data (no TorchScript code is read or run); the
record's tensors and sub-records are flattened with dotted names, which are the module's
``state_dict()`` keys, and its other attributes (``training`` flags, ints) are left out.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import tarfile
import zipfile
from typing import IO
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointError",
    "UnsafeCheckpointError",
    "load_torch_checkpoint",
]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001


class CheckpointError(ValueError):
    """The file is not a PyTorch checkpoint this reader can read."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle names a global outside the allowlist; nothing was executed."""


_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}

_TORCH_DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
}


class _Inert:
    """Base of every object the unpickler hands out: ``BUILD`` cannot set state on it."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(
            "expected the checkpoint to set no object state, got a BUILD on "
            f"{type(self).__name__.lstrip('_')}; refused"
        )


class _StorageType(_Inert):
    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: np.dtype):
        self.name = name
        self.dtype = dtype


class _DType(_Inert):
    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _Storage(_Inert):
    """A storage's dtype and element count; its bytes are attached after unpickling."""

    __slots__ = ("data", "dtype", "key", "numel")

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: bytes | None = None


class _StorageView(_Inert):
    """A legacy-format view: ``numel`` elements of ``root`` starting at element ``offset``."""

    __slots__ = ("numel", "offset", "root")

    def __init__(self, root: _Storage, offset: int, numel: int):
        self.root = root
        self.offset = offset
        self.numel = numel


class _ScriptObject:
    """A TorchScript module from a ``torch.jit.save`` archive: its attribute dict, as data."""

    __slots__ = ("attributes",)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(
                "expected a TorchScript module's state to be an attribute dict, got "
                f"{type(state).__name__}; refused"
            )
        self.attributes = state


class _Tensor(_Inert):
    __slots__ = ("dtype", "neg", "offset", "size", "storage", "stride")

    def __init__(self, storage, offset, size, stride, dtype, neg):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.dtype = dtype
        self.neg = neg


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(_is_int(v) and v >= 0 for v in x):
        raise CheckpointError(
            f"expected a tensor {what} to be a tuple of non-negative ints, got {x!r}"
        )
    return tuple(x)


def _tensor(storage, offset, size, stride, dtype, metadata) -> _Tensor:
    if not isinstance(storage, (_Storage, _StorageView)):
        raise CheckpointError(
            f"expected a tensor to be rebuilt from a storage, got {type(storage).__name__}"
        )
    if not _is_int(offset) or offset < 0:
        raise CheckpointError(f"expected a tensor storage offset >= 0, got {offset!r}")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(
            f"expected a tensor's size and stride to have the same length, got {size} and {stride}"
        )
    neg = False
    if metadata:
        if not isinstance(metadata, dict) or set(metadata) - {"neg", "conj"}:
            raise CheckpointError(
                f"expected tensor metadata with 'neg'/'conj' flags, got {metadata!r}"
            )
        neg = bool(metadata.get("neg", False))
        if metadata.get("conj", False):
            raise CheckpointError("expected no lazily conjugated tensors, got a 'conj' flag")
    return _Tensor(storage, offset, size, stride, dtype, neg)


def _rebuild_tensor(storage, offset, size, stride):
    # torch < 0.4's form: no requires_grad, hooks or metadata.
    dtype = (
        storage.root.dtype if isinstance(storage, _StorageView) else getattr(storage, "dtype", None)
    )
    return _tensor(storage, offset, size, stride, dtype, None)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    del requires_grad, hooks
    dtype = (
        storage.root.dtype if isinstance(storage, _StorageView) else getattr(storage, "dtype", None)
    )
    return _tensor(storage, offset, size, stride, dtype, metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    del requires_grad, hooks
    if not isinstance(dtype, _DType):
        raise CheckpointError(f"expected a torch dtype in _rebuild_tensor_v3, got {dtype!r}")
    return _tensor(storage, offset, size, stride, dtype.dtype, metadata)


def _rebuild_parameter(data, requires_grad, hooks):
    del requires_grad, hooks
    return data


def _rebuild_parameter_with_state(data, requires_grad, hooks, state):
    del requires_grad, hooks, state
    return data


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype(np.uint8)),
    **{("torch", name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()},
    **{("torch", name): _DType(dt) for name, dt in _TORCH_DTYPES.items()},
}
"""Every ``(module, name)`` the unpickler resolves, each to calibrax's inert replacement."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], source: str, *, torchscript: bool = False):
        super().__init__(file)
        self._source = source
        self._torchscript = torchscript
        self.storages: dict[str, _Storage] = {}
        self.views: dict[str, _StorageView] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self._torchscript and (module == "__torch__" or module.startswith("__torch__.")):
            return _ScriptObject
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeCheckpointError(
                f"expected `{self._source}` to reference only tensor-rebuilding globals, got "
                f"'{module}.{name}'; the file was refused before anything ran"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"expected a persistent id tuple, got {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise UnsafeCheckpointError(
                f"expected `{self._source}` to hold tensors (a state dict), got a pickled "
                "torch.nn.Module; save `model.state_dict()` instead"
            )
        if kind != "storage" or len(pid) not in (5, 6):
            raise CheckpointError(f"expected a ('storage', ...) persistent id, got {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(
                f"expected a storage type in a persistent id, got {storage_type!r}"
            )
        key = str(key)
        if not re.fullmatch(r"[0-9A-Za-z_]+", key) or not _is_int(numel) or numel < 0:
            raise CheckpointError(f"expected a storage key and element count, got {pid[2:5]!r}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        if view is None:
            return storage
        if not (
            isinstance(view, tuple)
            and len(view) == 3
            and _is_int(view[1])
            and _is_int(view[2])
            and view[1] >= 0
            and view[2] >= 0
        ):
            raise CheckpointError(
                f"expected storage view metadata (key, offset, size), got {view!r}"
            )
        view_key = str(view[0])
        if view_key not in self.views:
            self.views[view_key] = _StorageView(storage, view[1], view[2])
        return self.views[view_key]


def _materialize(t: _Tensor, byteorder: str) -> np.ndarray:
    if isinstance(t.storage, _StorageView):
        root, base, numel = t.storage.root, t.storage.offset, t.storage.numel
        if base + numel > root.numel:
            raise CheckpointError(
                f"expected a storage view inside its storage of {root.numel} elements, got "
                f"elements {base} to {base + numel}"
            )
    else:
        root, base, numel = t.storage, 0, t.storage.numel
    if root.data is None:
        raise CheckpointError(f"expected the data of storage {root.key!r} in the file, got none")
    storage_dtype = root.dtype
    dtype = t.dtype
    # v3 tensors reinterpret an untyped (byte) storage; typed storages count elements.
    nbytes_elem = storage_dtype.itemsize
    raw = np.frombuffer(root.data, dtype=np.uint8)[
        base * nbytes_elem : (base + numel) * nbytes_elem
    ]
    if raw.size % dtype.itemsize:
        raise CheckpointError(f"expected a storage of whole {dtype} elements, got {raw.size} bytes")
    flat = raw.view(dtype)
    if byteorder != "little" and dtype.itemsize > 1:
        flat = flat.view(f"u{dtype.itemsize}").byteswap().view(dtype)
    if any(s == 0 for s in t.size):
        return np.zeros(t.size, dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
    if last >= flat.size:
        raise CheckpointError(
            f"expected a tensor of size {t.size} and stride {t.stride} at offset {t.offset} to fit "
            f"its storage of {flat.size} elements, it reaches element {last}"
        )
    view = np.lib.stride_tricks.as_strided(
        flat[t.offset :],
        shape=t.size,
        strides=tuple(s * dtype.itemsize for s in t.stride),
        writeable=False,
    )
    out = np.array(view, dtype=dtype, copy=True)
    if t.neg:
        out = -out
    return out


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray], byteorder: str) -> None:
    if isinstance(obj, _ScriptObject):
        for k, v in getattr(obj, "attributes", {}).items():
            if not isinstance(k, str):
                raise CheckpointError(f"expected string attribute names, got {k!r}")
            if isinstance(v, (_Tensor, _ScriptObject)):
                _flatten(v, f"{prefix}{k}.", out, byteorder)
    elif isinstance(obj, _Tensor):
        key = prefix[:-1]
        if key in out:
            raise CheckpointError(f"expected unique flattened keys, got {key!r} twice")
        out[key] = _materialize(obj, byteorder)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise CheckpointError(f"expected string or int keys, got {k!r}")
            _flatten(v, f"{prefix}{k}.", out, byteorder)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}{i}.", out, byteorder)
    elif isinstance(obj, (bool, int, float)):
        out[prefix[:-1]] = np.asarray(obj)
    elif obj is None or isinstance(obj, (str, bytes)):
        return
    else:
        raise CheckpointError(f"expected tensors, numbers or containers, got {type(obj).__name__}")


def _not_a_checkpoint(source: str, got: str) -> CheckpointError:
    return CheckpointError(
        f"expected `{source}` to be a PyTorch checkpoint (a torch.save zip archive with "
        f"data.pkl, or the legacy pickle stream), got {got}"
    )


def _load_zip(path: str, source: str) -> tuple[Any, dict[str, _Storage], str]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise _not_a_checkpoint(source, "a zip archive without exactly one <archive>/data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        torchscript = any(n.startswith(prefix + "code/") for n in names)
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"expected byteorder 'little' or 'big', got {byteorder!r}")
        with zf.open(pickles[0]) as f:
            unpickler = _RestrictedUnpickler(f, source, torchscript=torchscript)
            result = unpickler.load()
        for key, storage in unpickler.storages.items():
            record = f"{prefix}data/{key}"
            if record not in names:
                raise CheckpointError(f"expected `{source}` to contain {record}, it does not")
            info = zf.getinfo(record)
            nbytes = storage.numel * storage.dtype.itemsize
            if info.file_size < nbytes:
                raise CheckpointError(
                    f"expected {record} to hold {nbytes} bytes, got {info.file_size}"
                )
            storage.data = zf.read(record)[:nbytes]
    return result, unpickler.storages, byteorder


def _load_legacy(path: str, source: str) -> tuple[Any, dict[str, _Storage], str]:
    with open(path, "rb") as f:
        try:
            magic = _RestrictedUnpickler(f, source).load()
        except UnsafeCheckpointError:
            raise
        except Exception:
            magic = None
        if magic != _MAGIC_NUMBER:
            f.seek(0)
            if tarfile.is_tarfile(path):
                raise CheckpointError(
                    f"expected `{source}` to be a zip or legacy-stream PyTorch checkpoint, got the "
                    "pre-1.0 tar format; re-save it with a recent torch"
                )
            raise _not_a_checkpoint(source, "a file that is neither")
        version = _RestrictedUnpickler(f, source).load()
        if version != _PROTOCOL_VERSION:
            raise CheckpointError(f"expected legacy protocol version 1001, got {version!r}")
        sys_info = _RestrictedUnpickler(f, source).load()
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        unpickler = _RestrictedUnpickler(f, source)
        result = unpickler.load()
        keys = _RestrictedUnpickler(f, source).load()
        if not isinstance(keys, list):
            raise CheckpointError(
                f"expected the legacy storage key list, got {type(keys).__name__}"
            )
        byteorder = "little" if little else "big"
        for key in keys:
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise CheckpointError(f"expected storage {key!r} to be referenced, it is not")
            header = f.read(8)
            if len(header) != 8:
                raise CheckpointError(f"expected the data of storage {key!r}, got end of file")
            numel = int.from_bytes(header, byteorder)  # type: ignore[arg-type]
            if numel != storage.numel:
                raise CheckpointError(
                    f"expected storage {key!r} to have {storage.numel} elements, got {numel}"
                )
            nbytes = numel * storage.dtype.itemsize
            storage.data = f.read(nbytes)
            if len(storage.data) != nbytes:
                raise CheckpointError(
                    f"expected {nbytes} bytes for storage {key!r}, got end of file"
                )
    return result, unpickler.storages, byteorder


def load_torch_checkpoint(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the tensors of a PyTorch ``.pth`` file as numpy arrays, without running its pickle.

    Dtypes: float64/32/16, bfloat16 (as ``ml_dtypes.bfloat16`` arrays), int64/32/16/8, uint8/16/
    32/64, bool and complex64/128. Non-contiguous views come back as contiguous copies with the
    view's values; tensors that share a storage come back as independent arrays.

    Nested containers are flattened: dict keys and list/tuple indices are joined with ``"."`` (a
    state dict, already flat, keeps its keys; ``{"model": {"fc.weight": t}}`` gives
    ``"model.fc.weight"``). Python numbers become 0-d arrays; strings and ``None`` are left out.
    A TorchScript archive gives its modules' tensors under their ``state_dict()`` names.

    Args:
        path: The ``.pth``/``.pt`` file.

    Returns:
        ``{key: array}`` in the file's order.

    Raises:
        UnsafeCheckpointError: (a ``CheckpointError``) if the pickle references any global outside
            :data:`ALLOWED_GLOBALS` (``os.system``, ``builtins.eval``, any class with a
            ``__reduce__``...) or a pickled ``nn.Module``; raised when the name is looked up, so
            nothing has run.
        CheckpointError: (a ``ValueError``) if the file is not a PyTorch checkpoint, is truncated or
            inconsistent (a tensor outside its storage, a missing storage record).
        FileNotFoundError: If ``path`` does not exist.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"expected `path` to be an existing file, got {source!r}")
    try:
        if zipfile.is_zipfile(source):
            result, _, byteorder = _load_zip(source, source)
        else:
            result, _, byteorder = _load_legacy(source, source)
        if not isinstance(result, (dict, _ScriptObject)):
            raise CheckpointError(
                f"expected `{source}` to hold a dict of tensors, got {type(result).__name__}"
            )
        out: dict[str, np.ndarray] = {}
        _flatten(result, "", out, byteorder)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"expected `{source}` to be a readable PyTorch checkpoint, got an error while reading "
            f"it: {type(err).__name__}: {err}"
        ) from err
    return out
