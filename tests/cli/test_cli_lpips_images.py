"""`calibrax lpips` through the real entry point: sizes that differ, --resize, tiles; 16-bit files.

Runs that need a model use AlexNet's architecture randomly initialised (``pnet_rand``, seed 0),
swapped in before ``main()`` in the subprocess (and the check that the trunk's weight file is
in the cache, which runs before any image is read, is skipped there): the test environment has no
AlexNet weight file, and what is tested is how the command reads, checks and tiles the images,
not the weights (`test_cli_refusals.py` tests the missing-weights message).
"""

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

RANDOM_ALEX = (
    "import sys\n"
    "from flax import nnx\n"
    "import calibrax.learned as learned\n"
    "import calibrax.cli.main as cli\n"
    "cli._check_lpips_net = lambda args: None\n"
    "real = learned.LPIPS\n"
    "learned.LPIPS = lambda **kw: real(net='alex', pretrained=False, pnet_rand=True, "
    "normalize=True, rngs=nnx.Rngs(0))\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def run(*args, random_alex=False):
    cmd = (
        [sys.executable, "-c", RANDOM_ALEX]
        if random_alex
        else [sys.executable, "-m", "calibrax.cli.main"]
    )
    return subprocess.run(
        [*cmd, "lpips", *args], capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )


def write_png16(path, gray16):
    """A 16-bit gray PNG (Pillow saves I;16 arrays, but this keeps the bit depth explicit)."""
    h, w = gray16.shape
    raw = b"".join(b"\x00" + gray16[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import skimage.data

    root = tmp_path_factory.mktemp("lpips")
    photo = skimage.data.astronaut()
    big = photo[:320, :400]
    Image.fromarray(big).save(root / "big.png")
    Image.fromarray(photo[::4, ::4]).save(root / "small.png")  # 128x128
    gray = skimage.data.camera()[::4, ::4]
    Image.fromarray(gray).save(root / "gray8.png")
    write_png16(root / "gray16.png", gray.astype(np.uint16) * 257)
    return root


@pytest.fixture(scope="module")
def model():
    from flax import nnx

    from calibrax.learned import LPIPS

    alex = LPIPS(net="alex", pretrained=False, pnet_rand=True, normalize=True, rngs=nnx.Rngs(0))
    distance = nnx.jit(lambda m, a, b: m(a, b))
    return lambda a, b: distance(alex, a, b)


def test_images_of_different_sizes_are_an_error(images):
    # Before: IMG2 was silently resized to IMG1's size.
    proc = run(str(images / "big.png"), str(images / "small.png"), random_alex=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"calibrax: error: expected IMG1 and IMG2 to have the same size, got 320x400 "
        f"({images / 'big.png'}) and 128x128 ({images / 'small.png'}); pass --resize to resize "
        "IMG2 to 320x400"
    )


def test_resize_is_explicit_and_large_images_run_in_tiles(images, model):
    import jax.numpy as jnp

    from calibrax.io import load_image

    proc = run(
        str(images / "big.png"),
        str(images / "small.png"),
        "--resize",
        "--tile",
        "320",
        "--json",
        random_alex=True,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    # IMG2 resized to 320x400 (clean-fid's clean resize), then 2 windows of 320x304.
    assert got["resized"] is True and got["size"] == "320x400" and got["tiles"] == 2
    x = load_image(images / "big.png").astype(np.float32)[None] / 255.0
    y = load_image(images / "small.png", (320, 400), "clean")[None]
    want = float(model(jnp.asarray(x), jnp.asarray(y))[0])  # the whole image at once
    assert got["lpips"] == pytest.approx(want, rel=1e-6)
    small = run(
        str(images / "big.png"),
        str(images / "small.png"),
        "--resize",
        "--tile",
        "200",
        random_alex=True,
    )
    assert small.returncode == 1
    assert small.stderr.strip() == (
        "calibrax: error: expected --tile >= 256 for --net alex (twice its margin 96 plus 64), got 200"
    )


def test_16bit_file_against_its_8bit_twin_is_zero(images, model):
    import jax.numpy as jnp

    from calibrax.io import load_image

    # Before: the 16-bit PNG read as white (mean 254.999), an LPIPS far from 0.
    x, y = (
        load_image(images / n).astype(np.float32)[None] / 255.0 for n in ("gray8.png", "gray16.png")
    )
    assert float(model(jnp.asarray(x), jnp.asarray(y))[0]) == pytest.approx(0.0, abs=1e-7)
    resized = [load_image(images / n, (100, 90))[None] for n in ("gray8.png", "gray16.png")]
    np.testing.assert_allclose(resized[1], resized[0], rtol=0, atol=1e-6)  # within 1/255
