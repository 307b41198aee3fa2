"""Image folders: recursive reading with Pillow, streamed in fixed-size batches.

Files are read one batch at a time, so a folder never has to fit in memory. Every image is
converted to RGB. Images read at their own size are ``uint8`` in [0, 255]. With a ``size``, each
image is resized on its own, from its original size, by one of the named modes of
:func:`calibrax.functional.resize_images` (``"pytorch-fid"``, ``"tf1"``, ``"clean"``,
``"antialias"``), exactly as the reference tools resize each file of a folder of mixed sizes; the
resize runs in float32 and is never requantised, so resized images are ``float32`` in [0, 1].

Batches are arrays of shape (batch, height, width, 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from calibrax.core import checks
from calibrax.functional.resize import RESIZE_MODES
from calibrax.functional.resize import resize_images_numpy

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "UnreadableImageError", "list_images", "load_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


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


def list_images(folder: str | Path) -> list[Path]:
    """All image files under ``folder`` (recursive), sorted, by extension (case-insensitive).

    Raises:
        FileNotFoundError: If ``folder`` does not exist or is not a directory.
        ValueError: If it holds no image file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"expected `folder` to be an existing directory, got {str(root)!r}")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise ValueError(
            f"expected `folder` to contain image files ({exts}), got none in {str(root)!r}"
        )
    return files


def load_image(path: str | Path, size: tuple[int, int] | None = None, method: str = "clean"):
    """Read one image as RGB (height, width, 3).

    Args:
        path: The image file.
        size: ``None`` keeps the image's size and returns ``uint8`` in [0, 255]; a (height,
            width) resizes it from its own size with ``method`` and returns ``float32`` in [0, 1]
            (clipped there: only float rounding, or the bicubic overshoot that clean-fid clips too,
            can leave it).
        method: A named mode of :func:`calibrax.functional.resize_images`.

    Raises:
        UnreadableImageError: If the file cannot be decoded as an image.
        ValueError: If ``method`` is unknown.
    """
    checks.check_choice(method, RESIZE_MODES, "method")
    Image = _pil()
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(
            f"expected a readable image file, got {str(path)!r} ({err})"
        ) from None
    if size is None:
        return pixels
    resized = resize_images_numpy(pixels.astype(np.float32) / np.float32(255.0), size, method)
    return np.clip(resized, 0.0, 1.0, out=resized)


@dataclasses.dataclass
class ImageFolder:
    """A folder of images streamed in batches.

    Args:
        folder: Directory searched recursively for PNG, JPEG and WebP files.
        size: (height, width) every image is resized to, each from its own size (batches are
            then ``float32`` in [0, 1]); ``None`` keeps the images' size, which every image must
            share (batches are then ``uint8`` in [0, 255]).
        method: The resize, a named mode of :func:`calibrax.functional.resize_images`:
            ``"pytorch-fid"``, ``"tf1"``, ``"clean"`` or ``"antialias"``.
        skip_unreadable: If True, unreadable files are skipped and counted in ``skipped``;
            otherwise the first one stops iteration with an error naming it.

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
        self.files = list_images(self.folder)
        self.skipped: list[Path] = []
        self._seen_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

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
