"""Image folders: recursive reading with Pillow, streamed in fixed-size batches.

Files are read one batch at a time, so a folder never has to fit in memory. Every image is
converted to RGB and resized to a common size by one of two declared methods:

- ``"clean"``: Pillow's bicubic filter on the uint8 image (what clean-fid calls a "clean" resize:
  antialiased, no aliasing from a naive bilinear kernel).
- ``"legacy"``: Pillow's bilinear filter (what pytorch-fid's ``ImagePathDataset`` pipeline gives
  when images are resized before entering the network).

Batches are ``uint8`` arrays of shape (batch, height, width, 3) in [0, 255].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from calibrax.core import checks

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "UnreadableImageError", "list_images", "load_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
RESIZE_METHODS = ("clean", "legacy")


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
    """Read one image as RGB uint8 (height, width, 3), resized to ``size`` = (height, width).

    Raises:
        UnreadableImageError: If the file cannot be decoded as an image.
        ValueError: If ``method`` is unknown.
    """
    checks.check_choice(method, RESIZE_METHODS, "method")
    Image = _pil()
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and (img.height, img.width) != tuple(size):
                resample = Image.BICUBIC if method == "clean" else Image.BILINEAR
                img = img.resize((size[1], size[0]), resample=resample)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(
            f"expected a readable image file, got {str(path)!r} ({err})"
        ) from None


@dataclasses.dataclass
class ImageFolder:
    """A folder of images streamed in batches.

    Args:
        folder: Directory searched recursively for PNG, JPEG and WebP files.
        size: (height, width) every image is resized to; ``None`` uses the first image's size, in
            which case every image must have that size.
        method: ``"clean"`` (bicubic) or ``"legacy"`` (bilinear).
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
        checks.check_choice(self.method, RESIZE_METHODS, "method")
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
        """Yield uint8 batches (batch, height, width, 3); the last one may be smaller."""
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
