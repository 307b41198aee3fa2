"""Reference statistics: the real side of FID, KID and precision/recall in one ``.npz`` file.

A reference set (e.g. a dataset's training images) is embedded once and saved; later runs load it
instead of embedding it again. One file serves every metric with a real side:

================================  =================================================================
key                               content
================================  =================================================================
``mu``, ``sigma``                 FID: real mean and unbiased covariance, float64 (pytorch-fid's
                                  keys, so pytorch-fid reads the file and calibrax reads its files)
``num_samples``                   number of real samples (int64)
``real_features``                 KID / PRDC: the real feature rows, ``(num_samples, num_features)``
                                  (float32 when every row is exactly a float32, as backbone
                                  features are, else the metric's dtype)
``fid_scatter_fix_index``,        FID: the entries of the centred scatter that
``fid_scatter_fix_value``         ``sigma * (num_samples - 1)`` does not give back bit for bit
                                  (float64 statistics only; float32 ones always come back exactly)
``calibrax_reference``            format version (1)
``backbone``                      backbone name (``""``: unknown, see below)
``resize``                        resize mode of the images (``""``: unknown)
``normalize``                     the metric's image convention when the file was written
``num_features``                  feature dimension
``dtype``                         the statistics dtype of the metric that wrote the file
``sha256``                        content hash of every other key, checked on load
================================  =================================================================

The backbone is recorded by name: the name given to the metric, or, for a module, the
``calibrax.backbones`` name of its class (its weights are not checked), or ``"ClassName
(module)"`` for any other module. A metric built with ``backbone=None`` (precomputed features)
does not know its backbone or resize mode and records ``""``; a side that does not know a setting
skips that check. ``normalize`` and ``dtype`` are recorded, not checked: the same images give the
same features in either convention, and statistics are cast to the loading metric's dtype.

The Inception Score has no real side, so a reference file holds nothing for it.

Integrity: the hash covers every array and its ``.npy`` header, and the zip's own CRC-32 refuses
a changed byte in any member's data, so a corrupted or edited file is an error, never a wrong
number. Zip bookkeeping that holds no content (timestamps, the ZIP64 size fields of the local
headers, which readers take from the central directory) is not checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["FORMAT_VERSION", "Reference", "backbone_name", "read_reference"]

FORMAT_VERSION = 1
_HASH_KEY = "sha256"


def backbone_name(backbone: Any) -> str | None:
    """The name a reference file records for ``backbone`` (``None``: unknown).

    A string is the name itself; a module whose class is a registered
    :mod:`calibrax.backbones` backbone gets that name (its weights are not checked); any other
    module or callable gets ``"ClassName (module)"``; ``None`` (precomputed features) is unknown.
    """
    if backbone is None:
        return None
    if isinstance(backbone, str):
        return backbone
    cls = type(backbone)
    if cls.__module__.startswith("calibrax.backbones"):
        from calibrax.backbones import backbone_names
        from calibrax.backbones._zoo import get_spec

        for name in backbone_names():
            if get_spec(name).build is cls:
                return name
    return f"{cls.__name__} (module)"


def content_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over every array but ``sha256``: key, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        if key == _HASH_KEY:
            continue
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}\0{value.dtype.str}\0{value.shape}\0".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Reference:
    """The arrays of a reference file, read and verified by :func:`read_reference`.

    Attributes:
        path: The file it was read from.
        arrays: Every key of the file.
    """

    path: str
    arrays: Mapping[str, np.ndarray]

    def _text(self, key: str) -> str | None:
        value = str(self.arrays[key]) if key in self.arrays else ""
        return value or None

    @property
    def is_calibrax(self) -> bool:
        """Whether calibrax wrote the file (else it is a pytorch-fid / legacy mu-sigma file)."""
        return "calibrax_reference" in self.arrays

    @property
    def backbone(self) -> str | None:
        """Recorded backbone name, ``None`` when unknown or not recorded."""
        return self._text("backbone")

    @property
    def resize(self) -> str | None:
        """Recorded resize mode, ``None`` when unknown or not recorded."""
        return self._text("resize")

    @property
    def num_samples(self) -> int | None:
        """Number of real samples, ``None`` for a pytorch-fid file (which does not store it)."""
        if "num_samples" in self.arrays:
            return int(self.arrays["num_samples"])
        rows = self.real_features
        return None if rows is None else int(rows.shape[0])

    @property
    def num_features(self) -> int:
        """Feature dimension."""
        if "num_features" in self.arrays:
            return int(self.arrays["num_features"])
        if "mu" in self.arrays:
            return int(np.shape(self.arrays["mu"])[-1])
        return int(np.shape(self.arrays["real_features"])[-1])

    @property
    def has_fid(self) -> bool:
        """Whether the file holds ``mu`` and ``sigma``."""
        return "mu" in self.arrays and "sigma" in self.arrays

    @property
    def real_features(self) -> np.ndarray | None:
        """The real feature rows, ``None`` when the file holds only FID statistics."""
        return self.arrays.get("real_features")

    def check_settings(
        self, *, backbone: str | None, resize: str | None, num_features: int
    ) -> None:
        """Raise unless the file fits a metric with these settings (unknown ones are skipped).

        Raises:
            ValueError: "expected X, got Y" naming the file and the setting.
        """
        where = f"the reference `{self.path}`"
        if backbone is not None and self.backbone is not None and backbone != self.backbone:
            raise ValueError(
                f"expected {where} to come from the backbone {backbone!r} (the metric's "
                f"`backbone`), got {self.backbone!r}"
            )
        if resize is not None and self.resize is not None and resize != self.resize:
            raise ValueError(
                f"expected {where} to use the resize mode {resize!r} (the metric's "
                f"`resize_method`), got {self.resize!r}"
            )
        if self.num_features != num_features:
            hint = ""
            if self.num_features == 2048 and self.backbone in (None, "inception-v3-fid"):
                # pytorch-fid's and clean-fid's statistics files are InceptionV3 pool features.
                hint = (
                    "; 2048 features are InceptionV3-FID's, as pytorch-fid writes them: use "
                    'backbone="inception-v3-fid" (--backbone inception-v3-fid)'
                )
            raise ValueError(
                f"expected {where} to have {num_features} features (the metric's "
                f"`num_features`), got {self.num_features}{hint}"
            )

    def fid_statistics(self, num_samples: int | None, dtype: np.dtype) -> tuple[Any, Any, int]:
        """``(mean, centred scatter, count)`` of the real side in ``dtype``.

        From ``mu``/``sigma`` when the file has them (bit-exact for a calibrax file), else from
        the real feature rows (mean and scatter computed in float64).

        Raises:
            ValueError: If the sample count is unknown (a pytorch-fid file without
                ``num_samples``), contradicts the file, or is below 2.
        """
        stored = self.num_samples
        if num_samples is not None and stored is not None and num_samples != stored:
            raise ValueError(
                f"expected `num_samples` to match the {stored} samples recorded in the "
                f"reference `{self.path}`, got {num_samples}"
            )
        n = stored if stored is not None else num_samples
        if n is None:
            raise ValueError(
                f"expected `num_samples` for the reference `{self.path}`, which has no "
                "`num_samples` key (pytorch-fid files store only `mu` and `sigma`), got None"
            )
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"expected `num_samples` to be an integer >= 2, got {n!r}")
        if not self.has_fid:
            rows = np.asarray(self.real_features, np.float64)
            mean = rows.mean(axis=0)
            centred = rows - mean
            scatter = (centred.T @ centred).astype(dtype)
            return mean.astype(dtype), scatter, n
        mu = np.asarray(self.arrays["mu"], np.float64)
        sigma = np.asarray(self.arrays["sigma"], np.float64)
        scatter = (sigma * (n - 1)).astype(dtype)
        if "fid_scatter_fix_index" in self.arrays:
            flat = scatter.reshape(-1)
            flat[self.arrays["fid_scatter_fix_index"]] = self.arrays["fid_scatter_fix_value"]
        return mu.astype(dtype), scatter, n


def _unreadable(path: str, err: Exception) -> ValueError:
    return ValueError(
        f"expected `{path}` to be an intact .npz reference file, got an unreadable file "
        f"({type(err).__name__}: {err})"
    )


def read_reference(path: str | os.PathLike) -> Reference:
    """Read a reference file (calibrax's, pytorch-fid's or :meth:`save_real_statistics`'s).

    A calibrax file's content hash is checked; the arrays' shapes and values are validated.

    Raises:
        ValueError: If the file cannot be read as a ``.npz`` (e.g. a changed byte), its content
            does not match its stored sha256, a key is missing, or shapes or values are invalid.
    """
    name = os.fspath(path)
    try:
        with np.load(name, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise ValueError(f"expected an existing reference file, got {name!r}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise _unreadable(name, err) from None
    ref = Reference(path=name, arrays=arrays)
    if ref.is_calibrax:
        stored = str(arrays.get(_HASH_KEY, ""))
        actual = content_sha256(arrays)
        if stored != actual:
            raise ValueError(
                f"expected the content of `{name}` to match its stored sha256 {stored or None}, "
                f"got {actual}: the file was changed or corrupted after it was saved"
            )
    _validate(ref)
    return ref


def _validate(ref: Reference) -> None:
    arrays = ref.arrays
    if not ref.has_fid and ref.real_features is None:
        raise ValueError(
            f"expected the reference `{ref.path}` to hold `mu` and `sigma` or `real_features`, "
            f"got keys {sorted(arrays)}"
        )
    d = ref.num_features
    if ref.has_fid:
        mu, sigma = np.shape(arrays["mu"]), np.shape(arrays["sigma"])
        if mu != (d,) or sigma != (d, d):
            raise ValueError(
                f"expected `mu` of shape ({d},) and `sigma` of shape ({d}, {d}) in "
                f"`{ref.path}`, got {mu} and {sigma}"
            )
        if not (np.all(np.isfinite(arrays["mu"])) and np.all(np.isfinite(arrays["sigma"]))):
            raise ValueError(
                f"expected `mu` and `sigma` in `{ref.path}` to be finite, got NaN or Inf values"
            )
    rows = ref.real_features
    if rows is not None:
        if rows.ndim != 2 or rows.shape[1] != d:
            raise ValueError(
                f"expected `real_features` of shape (n, {d}) in `{ref.path}`, got {rows.shape}"
            )
        if not np.all(np.isfinite(rows)):
            raise ValueError(
                f"expected `real_features` in `{ref.path}` to be finite, got NaN or Inf values"
            )


def fid_arrays(count: Any, mean: Any, scatter: Any) -> dict[str, np.ndarray]:
    """The FID keys of a reference file from one side's (count, mean, centred scatter)."""
    n = int(count)
    scatter = np.asarray(scatter)
    sigma = scatter.astype(np.float64) / (n - 1)
    back = (sigma * (n - 1)).astype(scatter.dtype)
    wrong = np.flatnonzero(back != scatter)
    arrays = {
        "mu": np.asarray(mean).astype(np.float64),
        "sigma": sigma,
        "num_samples": np.asarray(n, np.int64),
    }
    if wrong.size:
        arrays["fid_scatter_fix_index"] = wrong.astype(np.int64)
        arrays["fid_scatter_fix_value"] = scatter.reshape(-1)[wrong]
    return arrays


def rows_arrays(buffer: Any, count: Any) -> dict[str, np.ndarray]:
    """The ``real_features`` key: the held rows, as float32 when that loses nothing."""
    rows = np.asarray(buffer)[: int(count)]
    narrow = rows.astype(np.float32)
    if rows.dtype != np.float32 and np.array_equal(narrow.astype(rows.dtype), rows):
        rows = narrow
    return {"real_features": rows, "num_samples": np.asarray(rows.shape[0], np.int64)}


def set_rows(metric: Any, ref: Reference, who: str) -> None:
    """Replace the real buffer of a buffered metric by the file's rows.

    Raises:
        ValueError: If the file has no rows or more rows than the metric's ``max_samples``.
    """
    rows = ref.real_features
    if rows is None:
        raise ValueError(
            f"expected the reference `{ref.path}` to hold the real feature rows "
            f"(`real_features`) for {who}, got only FID statistics (`mu`, `sigma`); "
            "write it with `calibrax stats` or save_reference of KernelDistance, "
            "PrecisionRecall or GenerativeMetrics"
        )
    n = rows.shape[0]
    if n > metric.max_samples:
        raise ValueError(
            f"expected the reference `{ref.path}` to hold at most {metric.max_samples} real "
            f"rows (the metric's `max_samples`), got {n}"
        )
    buffer, count = metric._buffer("real")
    full = np.zeros(buffer[...].shape, buffer[...].dtype)
    full[:n] = rows
    buffer[...] = jnp.asarray(full)
    count[...] = jnp.asarray(n, dtype=count[...].dtype)


def held_rows(metric: Any) -> dict[str, np.ndarray]:
    """The ``real_features`` of a buffered metric, checked for at least 2 rows and overflow.

    Raises:
        ValueError: If the real buffer holds fewer than 2 rows or has overflowed.
    """
    buffer, count = metric._buffer("real")
    n = int(count[...])
    if n > metric.max_samples:
        raise ValueError(
            f"expected the `real` buffer to hold at most max_samples={metric.max_samples} "
            f"samples, got {n} (a jitted update overflowed it)"
        )
    if n < 2:
        raise ValueError(
            f"expected at least 2 real samples to save a reference of {type(metric).__name__}, "
            f"got {n}"
        )
    return rows_arrays(buffer[...], n)


def write_reference(path: str | os.PathLike, metric: Any, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` and ``metric``'s settings to ``path`` (exactly that name); returns sha256.

    The file is written next to ``path`` and renamed into place, so a failed write never leaves
    a truncated reference.
    """
    record = dict(arrays)
    record.update(
        calibrax_reference=np.asarray(FORMAT_VERSION, np.int64),
        backbone=np.asarray(metric.backbone_name or ""),
        resize=np.asarray(metric.resize_method or ""),
        normalize=np.asarray(bool(metric.normalize)),
        num_features=np.asarray(metric.num_features, np.int64),
        dtype=np.asarray(np.dtype(metric.dtype).name),
    )
    record[_HASH_KEY] = np.asarray(content_sha256(record))
    target = os.fspath(path)
    partial = target + ".partial"
    with open(partial, "wb") as f:
        np.savez(f, **record)
    os.replace(partial, target)
    return str(record[_HASH_KEY])


class RealRowsReference:
    """``save_reference`` / ``load_reference`` of the buffered metrics with a real side.

    Mixed into :class:`~calibrax.metrics.KernelDistance` and
    :class:`~calibrax.metrics.PrecisionRecall`, whose real side is the buffer of real feature
    rows.
    """

    def save_reference(self, path: str | os.PathLike) -> str:
        """Write the real feature rows to a reference file (``.npz``).

        The file holds ``real_features`` (the held rows; float32 when every row is exactly a
        float32, as backbone features are), ``num_samples``, the backbone name, resize mode,
        ``normalize``, feature dimension, dtype and a sha256 of the content (see
        :mod:`calibrax.metrics.reference`). It has no ``mu``/``sigma``, so pytorch-fid cannot read
        it; :class:`~calibrax.metrics.FrechetDistance` can (from the rows), and
        :class:`~calibrax.metrics.GenerativeMetrics` writes both. ``path`` is used as given.

        Returns:
            The file's content sha256.

        Raises:
            ValueError: If the real buffer holds fewer than 2 rows or has overflowed.
        """
        return write_reference(path, self, held_rows(self))

    def load_reference(self, source: str | os.PathLike | Reference) -> None:
        """Replace the real buffer by the rows of a reference file (bit for bit).

        Args:
            source: A path, or a :class:`Reference` already read with :func:`read_reference`.

        Raises:
            ValueError: If the file is unreadable or changed since it was saved, was written
                with another backbone, resize mode or feature dimension, holds more rows than
                ``max_samples``, or holds only FID statistics (a pytorch-fid file): each an
                "expected X, got Y" naming the file and the setting.
        """
        ref = source if isinstance(source, Reference) else read_reference(source)
        ref.check_settings(
            backbone=self.backbone_name, resize=self.resize_method, num_features=self.num_features
        )
        set_rows(self, ref, type(self).__name__)
