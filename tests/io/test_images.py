"""Image folders: recursive listing, RGB conversion, per-image float resizes, streaming, bad files."""

import re

import numpy as np
import pytest
from PIL import Image

from calibrax.core.protocols import BatchableDatasetProtocol
from calibrax.io import ImageFolder
from calibrax.io import UnreadableImageError
from calibrax.io import list_images
from calibrax.io import load_image


def _write(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        _write(tmp_path / f"a{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _write(tmp_path / "sub" / "deep" / "b.PNG", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _write(tmp_path / "c.jpg", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _write(tmp_path / "d.webp", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _write(tmp_path / "gray.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_lists_recursively_by_extension(folder):
    files = list_images(folder)
    assert len(files) == 9
    assert all(f.suffix.lower() in (".png", ".jpg", ".webp") for f in files)
    assert files == sorted(files)


def test_batches_are_uint8_rgb_and_cover_everything(folder):
    ds = ImageFolder(folder)
    batches = list(ds.batches(4))
    assert [b.shape[0] for b in batches] == [4, 4, 1]
    assert all(b.dtype == np.uint8 and b.shape[1:] == (16, 16, 3) for b in batches)
    assert isinstance(ds, BatchableDatasetProtocol)
    np.testing.assert_array_equal(ds.get_batch(2, 1)["images"], batches[0][1:3])


def test_gray_image_is_converted_to_rgb(folder):
    img = load_image(folder / "gray.png")
    assert img.shape == (16, 16, 3)
    np.testing.assert_array_equal(img[..., 0], img[..., 1])


@pytest.mark.parametrize(
    ("method", "resample"), [("clean", Image.BICUBIC), ("antialias", Image.BILINEAR)]
)
def test_resize_is_pillow_on_float_channels_never_quantised(folder, method, resample):
    # clean-fid's clean resize: Pillow's filter on each channel as a float32 ("F") image.
    path = folder / "a0.png"
    got = load_image(path, (9, 11), method)
    assert got.dtype == np.float32 and got.shape == (9, 11, 3)
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32)
    want = np.stack(
        [
            np.asarray(Image.fromarray(rgb[..., c], mode="F").resize((11, 9), resample))
            for c in range(3)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(got * 255, np.clip(want, 0, 255), rtol=0, atol=2e-4)
    assert not np.array_equal(got * 255, np.round(got * 255))  # no uint8 quantisation


def test_folder_of_mixed_sizes_resizes_each_image_from_its_own_size(tmp_path):
    rng = np.random.default_rng(0)
    for name, shape in (("a", (20, 30, 3)), ("b", (8, 8, 3)), ("c", (16, 12, 3))):
        _write(tmp_path / f"{name}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    (batch,) = ImageFolder(tmp_path, size=(10, 10), method="pytorch-fid").batches(4)
    assert batch.dtype == np.float32 and batch.shape == (3, 10, 10, 3)
    for got, path in zip(batch, sorted(tmp_path.iterdir()), strict=True):
        np.testing.assert_array_equal(got, load_image(path, (10, 10), "pytorch-fid"))


def test_mixed_sizes_need_a_size(tmp_path):
    _write(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    _write(tmp_path / "b.png", np.zeros((10, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=re.escape("expected every image to have size (8, 8)")):
        list(ImageFolder(tmp_path).batches(2))
    assert next(ImageFolder(tmp_path, size=(6, 6)).batches(2)).shape == (2, 6, 6, 3)


def test_unreadable_file_errors_or_is_skipped(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(
        UnreadableImageError, match=re.escape("expected a readable image file, got")
    ):
        list(ImageFolder(folder).batches(4))
    ds = ImageFolder(folder, skip_unreadable=True)
    assert sum(b.shape[0] for b in ds.batches(4)) == 9
    assert [p.name for p in ds.skipped] == ["broken.png"]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=re.escape("expected `folder` to be an existing directory")
    ):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match=re.escape("expected `folder` to contain image files")):
        ImageFolder(tmp_path)


def test_bad_arguments(folder):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `method` to be one of 'pytorch-fid', 'tf1', 'clean', 'antialias', "
            "got 'legacy'"
        ),
    ):
        ImageFolder(folder, method="legacy")
    with pytest.raises(
        ValueError, match=re.escape("expected `batch_size` to be a positive integer, got 0")
    ):
        list(ImageFolder(folder).batches(0))
    with pytest.raises(IndexError, match=re.escape("expected `start_idx` in [0, 8], got 9")):
        ImageFolder(folder).get_batch(2, 9)
