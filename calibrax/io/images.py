"""Image folders: recursive reading with Pillow, streamed in fixed-size batches.

Files are read one batch at a time, so a folder never has to fit in memory. Every image is
converted to RGB (see :func:`load_image` for 16-bit, float, palette, alpha and CMYK images).
Images read at their own size are ``uint8`` in [0, 255]. With a ``size``, each
image is resized on its own, from its original size, by one of the named modes of
:func:`calibrax.functional.resize_images` (``"pytorch-fid"``, ``"tf1"``, ``"clean"``,
``"antialias"``), exactly as the reference tools resize each file of a folder of mixed sizes; the
resize runs in float32 and is never requantised, so resized images are ``float32`` in [0, 1].

Batches are arrays of shape (batch, height, width, 3).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from calibrax.core import checks
from calibrax.functional.resize import RESIZE_MODES
from calibrax.functional.resize import resize_images_numpy

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "ImageScan",
    "UnreadableImageError",
    "list_images",
    "load_image",
    "scan_images",
]

# pytorch-fid's extensions (bmp, jpg, jpeg, pgm, png, ppm, tif, tiff, webp) and gif (first frame).
IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)
# Pillow modes of 16-bit integer samples (one channel); a 16-bit RGB(A) PNG is opened as 8-bit.
_MODES_16 = ("I;16", "I;16B", "I;16L", "I;16N")


class UnreadableImageError(ValueError):
    """A file with an image extension that Pillow cannot decode."""


def _pil():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "reading image files needs Pillow: pip install 'calibrax[images]'"
        ) from err
    return Image


@dataclasses.dataclass
class ImageScan:
    """What a recursive search of a folder found.

    Attributes:
        root: The folder searched.
        files: The image files (by extension, case-insensitive), sorted; symlinked files and
            folders are followed.
        skipped: The files not listed, by reason: ``"unsupported extension"`` (any other
            extension, hidden files included) and ``"broken symlink"``; and the folders that
            could not be listed (``"unlistable folder"``, e.g. without read permission).
        revisited: Symlinked folders not entered because their target was already read (a
            symlink loop, or a second link to the same folder): each folder is read once.
    """

    root: Path
    files: list[Path]
    skipped: dict[str, list[Path]]
    revisited: list[Path]

    @property
    def found(self) -> int:
        """Every file seen: the image files and the skipped ones."""
        return len(self.files) + sum(len(v) for v in self.skipped.values())


def _walk(folder: Path, seen: set[str], scan: ImageScan) -> None:
    try:
        entries = sorted(folder.iterdir())
    except OSError:  # a folder that cannot be listed (permissions): counted, not searched
        scan.skipped.setdefault("unlistable folder", []).append(folder)
        return
    for entry in entries:
        if entry.is_dir():  # follows symlinks
            real = os.path.realpath(entry)
            if real in seen:
                scan.revisited.append(entry)
                continue
            seen.add(real)
            _walk(entry, seen, scan)
        elif entry.is_file():
            if entry.suffix.lower() in IMAGE_EXTENSIONS:
                scan.files.append(entry)
            else:
                scan.skipped.setdefault("unsupported extension", []).append(entry)
        elif entry.is_symlink():
            scan.skipped.setdefault("broken symlink", []).append(entry)


def scan_images(folder: str | Path) -> ImageScan:
    """Search ``folder`` recursively for image files, following symlinks, each folder once.

    Image files are those with an extension of :data:`IMAGE_EXTENSIONS` (case-insensitive):
    pytorch-fid's (bmp, jpg, jpeg, pgm, png, ppm, tif, tiff, webp) and gif. A symlinked folder
    whose resolved path was already read (a loop, or a second link to a folder) is not entered
    again; other files and broken symlinks are counted by reason in ``skipped``.

    Raises:
        FileNotFoundError: If ``folder`` does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"expected `folder` to be an existing directory, got {str(root)!r}")
    scan = ImageScan(root=root, files=[], skipped={}, revisited=[])
    _walk(root, {os.path.realpath(root)}, scan)
    scan.files.sort()
    return scan


def list_images(folder: str | Path) -> list[Path]:
    """All image files under ``folder`` (recursive, see :func:`scan_images`), sorted.

    Raises:
        FileNotFoundError: If ``folder`` does not exist or is not a directory.
        ValueError: If it holds no image file.
    """
    return _image_files(scan_images(folder))


def _image_files(scan: ImageScan) -> list[Path]:
    if not scan.files:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise ValueError(
            f"expected `folder` to contain image files ({exts}), got none in {str(scan.root)!r}"
        )
    return scan.files


def _as_rgb(img: Any, path: str | Path) -> np.ndarray:
    """The pixels of an open Pillow image: ``uint8`` RGB, or ``float32`` RGB in [0, 1]."""
    mode = img.mode
    if mode in _MODES_16 or (mode == "I" and img.format == "PNG"):
        # 16-bit gray (Pillow opens a PNG's 16-bit samples as I;16, older Pillows as I).
        gray = np.asarray(img).astype(np.float32) / np.float32(65535.0)
    elif mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        finite = gray[np.isfinite(gray)]
        if finite.size < gray.size or (finite.size and (finite.min() < 0 or finite.max() > 1)):
            got = f"[{finite.min():g}, {finite.max():g}]" if finite.size else "no finite value"
            bad = "" if finite.size == gray.size else " and NaN/Inf"
            raise UnreadableImageError(
                f"expected the float samples of {str(path)!r} to lie in [0, 1], got {got}{bad} "
                "(the scale of a float image is not guessed; rescale it to [0, 1])"
            )
    elif mode == "I":
        raise UnreadableImageError(
            f"expected 8-bit, 16-bit or float samples in {str(path)!r}, got 32-bit integers "
            "(Pillow mode 'I'; their scale is not guessed: save it as 16-bit or as float in [0, 1])"
        )
    else:
        # P, L, LA, RGBA, CMYK, 1, YCbCr ...: Pillow's conversion, as pytorch-fid and clean-fid;
        # alpha is dropped (not composited on a background).
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def load_image(path: str | Path, size: tuple[int, int] | None = None, method: str = "clean"):
    """Read one image as RGB (height, width, 3).

    Pillow decodes the file (the first frame of an animated GIF or a multi-page TIFF). 8-bit
    images go through Pillow's ``convert("RGB")`` as pytorch-fid and clean-fid do: palette and
    gray images become RGB, CMYK is converted by Pillow's formula, and alpha is dropped (not
    composited). 16-bit gray samples (PNG or TIFF, Pillow modes ``I;16``) are scaled by 1/65535;
    float samples (32-bit float TIFF, mode ``F``) must lie in [0, 1] and are used as they are.
    Such images keep their precision through a resize and are rounded to the nearest of 256
    levels (within 0.5/255) when read at their own size. Pillow reads a 16-bit RGB(A) PNG as
    8-bit (the high byte of each sample, within 1/255 of the 16-bit value).

    Args:
        path: The image file.
        size: ``None`` keeps the image's size and returns ``uint8`` in [0, 255]; a (height,
            width) resizes it from its own size with ``method`` and returns ``float32`` in [0, 1]
            (clipped there: only float rounding, or the bicubic overshoot that clean-fid clips too,
            can leave it).
        method: A named mode of :func:`calibrax.functional.resize_images`.

    Raises:
        UnreadableImageError: If the file cannot be decoded as an image, or holds float samples
            outside [0, 1] or 32-bit integer samples (whose scale is not guessed).
        ValueError: If ``method`` is unknown.
    """
    checks.check_choice(method, RESIZE_MODES, "method")
    Image = _pil()
    try:
        with Image.open(path) as img:
            pixels = _as_rgb(img, path)
    except UnreadableImageError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(
            f"expected a readable image file, got {str(path)!r} ({err})"
        ) from None
    if pixels.dtype == np.uint8:
        if size is None:
            return pixels
        pixels = pixels.astype(np.float32) / np.float32(255.0)
    elif size is None:
        return np.rint(pixels * np.float32(255.0)).astype(np.uint8)
    resized = resize_images_numpy(pixels, size, method)
    return np.clip(resized, 0.0, 1.0, out=resized)


def format_counts(counts: dict[str, Any]) -> str:
    """:meth:`ImageFolder.counts` as one line: ``found N files: used U, skipped S (...)``."""
    line = f"found {counts['found']} files: used {counts['used']}, skipped {counts['skipped']}"
    if counts["skipped"]:
        by_reason = counts["skipped_by_reason"].items()
        line += " (" + ", ".join(f"{n} {reason}" for reason, n in by_reason) + ")"
    if "folders_read_once" in counts:
        line += f"; {counts['folders_read_once']} symlinked folder(s) not re-entered (already read)"
    return line


@dataclasses.dataclass
class ImageFolder:
    """A folder of images streamed in batches.

    Args:
        folder: Directory searched recursively for image files (see :func:`scan_images`).
        size: (height, width) every image is resized to, each from its own size (batches are
            then ``float32`` in [0, 1]); ``None`` keeps the images' size, which every image must
            share (batches are then ``uint8`` in [0, 255]).
        method: The resize, a named mode of :func:`calibrax.functional.resize_images`:
            ``"pytorch-fid"``, ``"tf1"``, ``"clean"`` or ``"antialias"``.
        skip_unreadable: If True, unreadable files are skipped and counted in ``skipped``;
            otherwise the first one stops iteration with an error naming it.

    Attributes:
        scan: The :class:`ImageScan` of ``folder`` (the files found and skipped by reason).
        skipped: The unreadable files skipped by the last :meth:`batches`.

    Raises:
        FileNotFoundError: If ``folder`` is missing.
        ValueError: If it has no images, or ``method`` is unknown.
    """

    folder: str | Path
    size: tuple[int, int] | None = None
    method: str = "clean"
    skip_unreadable: bool = False

    def __post_init__(self) -> None:
        checks.check_choice(self.method, RESIZE_MODES, "method")
        self.scan = scan_images(self.folder)
        self.files = _image_files(self.scan)
        self.skipped: list[Path] = []
        self._seen_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> dict[str, Any]:
        """The files found, used and skipped by reason (after :meth:`batches` has run).

        ``used`` counts the image files not skipped as unreadable, so it is only final once
        :meth:`batches` has been iterated to the end.
        """
        reasons = {k: len(v) for k, v in self.scan.skipped.items()}
        if self.skipped:
            reasons["unreadable"] = len(self.skipped)
        out: dict[str, Any] = {
            "found": self.scan.found,
            "used": len(self.files) - len(self.skipped),
            "skipped": sum(reasons.values()),
            "skipped_by_reason": dict(sorted(reasons.items())),
        }
        if self.scan.revisited:
            out["folders_read_once"] = len(self.scan.revisited)
        return out

    def summary(self) -> str:
        """One line: ``found N files: used U, skipped S (k unreadable, j unsupported ...)``."""
        return format_counts(self.counts())

    def __getitem__(self, idx: int) -> np.ndarray:
        return self._read(self.files[idx])

    def _read(self, path: Path) -> np.ndarray:
        img = load_image(path, self.size, self.method)
        if self.size is None:
            if self._seen_size is None:
                self._seen_size = img.shape[:2]
            elif img.shape[:2] != self._seen_size:
                raise ValueError(
                    f"expected every image to have size {self._seen_size} (pass `size` to "
                    f"resize), got {img.shape[:2]} for {str(path)!r}"
                )
        return img

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield batches (batch, height, width, 3); the last one may be smaller."""
        checks.check_positive_int(batch_size, "batch_size")
        self.skipped = []
        batch: list[np.ndarray] = []
        for path in self.files:
            try:
                batch.append(self._read(path))
            except UnreadableImageError:
                if not self.skip_unreadable:
                    raise
                self.skipped.append(path)
                continue
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def get_batch(self, batch_size: int, start_idx: int) -> dict[str, np.ndarray]:
        """A batch of ``batch_size`` images from ``start_idx`` (``BatchableDatasetProtocol``)."""
        checks.check_positive_int(batch_size, "batch_size")
        stop = min(start_idx + batch_size, len(self.files))
        if not 0 <= start_idx < stop:
            raise IndexError(f"expected `start_idx` in [0, {len(self.files) - 1}], got {start_idx}")
        return {"images": np.stack([self[i] for i in range(start_idx, stop)])}
