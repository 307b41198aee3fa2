"""Every image format a user's folder may hold: 16-bit and float samples, the extensions
pytorch-fid reads, palette/alpha/CMYK modes, animated GIFs, symlinks (loops, broken links), and
the found/used/skipped counts of a folder."""

import os
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from calibrax.io import IMAGE_EXTENSIONS
from calibrax.io import ImageFolder
from calibrax.io import UnreadableImageError
from calibrax.io import list_images
from calibrax.io import load_image
from calibrax.io import scan_images


def write_png16(path, arr):
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA), written by hand: Pillow cannot write one."""
    arr = np.asarray(arr, np.uint16)
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + arr[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def photo():
    import skimage.data

    return skimage.data.camera()[::4, ::4]  # 128x128 uint8 gray photo


def test_16bit_gray_png_is_scaled_not_white(tmp_path, photo):
    # The same photo as 8 bits and as 16 bits (u * 257 is the exact 16-bit value of u / 255).
    Image.fromarray(photo).save(tmp_path / "p8.png")
    write_png16(tmp_path / "p16.png", photo.astype(np.uint16) * 257)
    assert Image.open(tmp_path / "p16.png").mode == "I;16"
    a8, a16 = load_image(tmp_path / "p8.png"), load_image(tmp_path / "p16.png")
    assert a16.dtype == np.uint8 and a16.shape == (128, 128, 3)
    np.testing.assert_array_equal(a16, a8)  # before: every pixel 255 (mean 254.999)
    # Resized, the 16-bit samples are used at full precision: u * 257 / 65535 == u / 255.
    r8, r16 = load_image(tmp_path / "p8.png", (50, 60)), load_image(tmp_path / "p16.png", (50, 60))
    np.testing.assert_allclose(r16, r8, rtol=0, atol=1e-6)


def test_16bit_precision_is_kept_through_a_resize(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    write_png16(tmp_path / "ramp.png", ramp)
    own = load_image(tmp_path / "ramp.png")
    # At its own size: the nearest of 256 levels (within 0.5/255).
    assert np.abs(own[..., 0] / 255.0 - ramp / 65535.0).max() <= 0.5 / 255 + 1e-12
    # A resize to the same size with "clean" (bicubic) is the identity on the 16-bit values.
    same = load_image(tmp_path / "ramp.png", (64, 64), "clean")
    np.testing.assert_allclose(same[..., 0], ramp / 65535.0, rtol=0, atol=1e-6)


def test_16bit_rgb_and_gray_alpha_pngs_read_by_pillow_at_8_bits(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    write_png16(tmp_path / "rgb48.png", rgb)
    # Pillow reads 48-bit PNG samples as their high byte: within 1/255 of the 16-bit value.
    got = load_image(tmp_path / "rgb48.png")
    np.testing.assert_array_equal(got, rgb >> 8)
    assert np.abs(got / 255.0 - rgb / 65535.0).max() < 1 / 255
    la = rng.integers(0, 65536, (8, 8, 2)).astype(np.uint16)
    write_png16(tmp_path / "la32.png", la)
    np.testing.assert_array_equal(load_image(tmp_path / "la32.png")[..., 1], la[..., 0] >> 8)


def test_16bit_and_float_tiff(tmp_path, photo):
    Image.fromarray(photo.astype(np.uint16) * 257).save(tmp_path / "p16.tif")
    Image.fromarray(photo.astype(np.float32) / 255.0).save(tmp_path / "pf.tif")
    assert Image.open(tmp_path / "p16.tif").mode.startswith("I;16")
    assert Image.open(tmp_path / "pf.tif").mode == "F"
    want = np.repeat(photo[..., None], 3, axis=-1)
    np.testing.assert_array_equal(load_image(tmp_path / "p16.tif"), want)
    np.testing.assert_array_equal(load_image(tmp_path / "pf.tif"), want)
    np.testing.assert_allclose(
        load_image(tmp_path / "pf.tif", (40, 40)),
        load_image(tmp_path / "p16.tif", (40, 40)),
        rtol=0,
        atol=1e-6,
    )


def test_float_tiff_outside_unit_range_or_nan_is_refused(tmp_path):
    path = tmp_path / "hdr.tif"
    Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(path)
    with pytest.raises(
        UnreadableImageError,
        match=re.escape(
            f"expected the float samples of {str(path)!r} to lie in [0, 1], got [3.5, 3.5] "
            "(the scale of a float image is not guessed; rescale it to [0, 1])"
        ),
    ):
        load_image(path)
    arr = np.zeros((8, 8), np.float32)
    arr[0, 0] = np.nan
    Image.fromarray(arr).save(path)
    with pytest.raises(UnreadableImageError, match=re.escape("got [0, 0] and NaN/Inf (the scale")):
        load_image(path)
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(path)
    assert Image.open(path).mode == "I"
    with pytest.raises(
        UnreadableImageError,
        match=re.escape(
            f"expected 8-bit, 16-bit or float samples in {str(path)!r}, got 32-bit integers "
            "(Pillow mode 'I'; their scale is not guessed: save it as 16-bit or as float in "
            "[0, 1])"
        ),
    ):
        load_image(path)


def test_palette_alpha_cmyk_and_bilevel_modes_as_convert_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    img = Image.fromarray(rgba, mode="RGBA")
    img.save(tmp_path / "rgba.png")
    # Alpha is dropped, not composited (pytorch-fid and clean-fid call convert("RGB")).
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgba[..., :3])
    for mode, ext in (("P", "png"), ("CMYK", "tif"), ("1", "bmp"), ("LA", "png")):
        conv = (img if mode == "LA" else img.convert("RGB")).convert(mode)
        conv.save(tmp_path / f"m.{ext}")
        want = np.asarray(Image.open(tmp_path / f"m.{ext}").convert("RGB"))
        np.testing.assert_array_equal(load_image(tmp_path / f"m.{ext}"), want)


def test_animated_gif_reads_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    got = load_image(tmp_path / "anim.gif")
    np.testing.assert_array_equal(got, np.broadcast_to([255, 0, 0], (8, 8, 3)))


def test_every_pytorch_fid_extension_is_read(tmp_path):
    # pytorch-fid's IMAGE_EXTENSIONS, and gif; before: only png, jpg, jpeg, webp.
    assert set(IMAGE_EXTENSIONS) >= {
        ".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp", ".gif"
    }  # fmt: skip
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for ext in IMAGE_EXTENSIONS:
        img = Image.fromarray(rgb).convert("L") if ext == ".pgm" else Image.fromarray(rgb)
        img.save(tmp_path / f"x{ext.upper() if ext == '.tif' else ext}")
    files = list_images(tmp_path)
    assert len(files) == len(IMAGE_EXTENSIONS) == 10
    assert all(load_image(f).shape == (8, 8, 3) for f in files)


@pytest.fixture
def linked(tmp_path):
    """A folder with a symlinked subfolder, a loop, a second link, a broken link and a .txt."""
    root, shared = tmp_path / "root", tmp_path / "shared"
    rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for d, names in ((root / "own", ("a", "b")), (shared, ("c", "d", "e"))):
        d.mkdir(parents=True)
        for n in names:
            Image.fromarray(rgb).save(d / f"{n}.png")
    os.symlink(shared, root / "linked")  # before: skipped silently (rglob does not follow)
    os.symlink(root, root / "own" / "loop")  # a cycle back to the root
    os.symlink(shared, root / "zz_again")  # a second link to a folder already read
    os.symlink(tmp_path / "gone.png", root / "broken.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_symlinked_folders_are_followed_once_and_skips_counted(linked):
    scan = scan_images(linked)
    assert [p.relative_to(linked).as_posix() for p in scan.files] == [
        "linked/c.png",
        "linked/d.png",
        "linked/e.png",
        "own/a.png",
        "own/b.png",
    ]
    assert {k: [p.name for p in v] for k, v in scan.skipped.items()} == {
        "broken symlink": ["broken.png"],
        "unsupported extension": ["notes.txt"],
    }
    assert sorted(p.name for p in scan.revisited) == ["loop", "zz_again"]
    assert scan.found == 7


def test_folder_counts_found_used_and_skipped_by_reason(linked):
    (linked / "own" / "bad.png").write_bytes(b"\x89PNG not really")
    ds = ImageFolder(linked, skip_unreadable=True)
    assert sum(b.shape[0] for b in ds.batches(4)) == 5
    assert ds.counts() == {
        "found": 8,
        "used": 5,
        "skipped": 3,
        "skipped_by_reason": {"broken symlink": 1, "unreadable": 1, "unsupported extension": 1},
        "folders_read_once": 2,
    }
    assert ds.summary() == (
        "found 8 files: used 5, skipped 3 (1 broken symlink, 1 unreadable, 1 unsupported "
        "extension); 2 symlinked folder(s) not re-entered (already read)"
    )


def test_a_folder_that_cannot_be_listed_is_counted(linked, monkeypatch):
    # Root ignores permissions, so the refusal is simulated where Path.iterdir meets it.
    listdir = type(linked).iterdir

    def iterdir(self):
        if self.name == "own":
            raise PermissionError(13, "Permission denied", str(self))
        return listdir(self)

    monkeypatch.setattr(type(linked), "iterdir", iterdir)
    scan = scan_images(linked)
    assert [p.name for p in scan.skipped["unlistable folder"]] == ["own"]
    assert [p.name for p in scan.files] == ["c.png", "d.png", "e.png"]


def test_8bit_and_16bit_folders_feed_the_same_batches(tmp_path, photo):
    # The FID path: each image resized from its own size to the backbone's input. The 16-bit
    # twin gives the same floats (1e-6: float32 rounding of u * 257 / 65535 against u / 255),
    # so the features are the same.
    for i in range(3):
        crop = photo[i * 8 : i * 8 + 64, :64]
        for d in ("a8", "a16"):
            (tmp_path / d).mkdir(exist_ok=True)
        Image.fromarray(crop).save(tmp_path / "a8" / f"{i}.png")
        write_png16(tmp_path / "a16" / f"{i}.png", crop.astype(np.uint16) * 257)
    (b8,) = ImageFolder(tmp_path / "a8", size=(40, 40), method="pytorch-fid").batches(8)
    (b16,) = ImageFolder(tmp_path / "a16", size=(40, 40), method="pytorch-fid").batches(8)
    assert b16.shape == (3, 40, 40, 3)
    np.testing.assert_allclose(b16, b8, rtol=0, atol=1e-6)
    (u8,) = ImageFolder(tmp_path / "a8").batches(8)
    (u16,) = ImageFolder(tmp_path / "a16").batches(8)
    np.testing.assert_array_equal(u16, u8)
