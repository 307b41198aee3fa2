"""Resize parity with the reference tools' own resize code, on real photos, up and down.

The references, installed by ``make venv`` with ``--no-deps`` (their declared torchvision does not
install beside the test venv's torch): pytorch-fid 0.3.0 resizes inside its InceptionV3 with
``torch.nn.functional.interpolate`` (checked in its source below, then run from torch),
torch-fidelity 0.4.0 (and torchmetrics, which uses its feature extractor) with its
``interpolate_bilinear_2d_like_tensorflow1x``, clean-fid 0.1.35 with its ``build_resizer("clean")``
/ ``make_resizer``. ``"antialias"`` is Pillow's bilinear filter on float images, so Pillow is its
reference.

Tolerance: 2e-4 in [0, 255] units, about ten float32 ulps at 255. The weights agree with the
references' to float32 rounding (the tests of the weights themselves are exact to 6e-8); what
remains is the order of the float32 sums (Pillow accumulates in float64, torch-fidelity lerps) and
our images being divided by 255 before the resize rather than after. Measured: at most 6.1e-5
(jax path) and 1.2e-4 (host path, float32 sums in another order).
"""

import functools
import importlib.util
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image

from calibrax.functional import RESIZE_MODES
from calibrax.functional import resize_images
from calibrax.functional import resize_images_numpy
from calibrax.io import ImageFolder

torch = pytest.importorskip("torch")
cleanfid_resize = pytest.importorskip(
    "cleanfid.resize", reason="clean-fid 0.1.35 is installed by `make venv` (pip --no-deps)"
)

ATOL = 2e-4  # [0, 255] units; see the module docstring

# (photo, crop (height, width) or None for the whole photo, output (height, width))
CASES = [
    ("astronaut", None, (299, 299)),  # 512x512 down to the InceptionV3 input
    ("chelsea", None, (299, 299)),  # 300x451: one axis barely down, the other down
    ("coffee", (64, 64), (299, 299)),  # a small image up to 299
    ("rocket", None, (224, 224)),  # 427x640 down to the EfficientNet input
    ("hubble_deep_field", None, (224, 224)),  # 872x1000, a ~4x downscale
    ("astronaut", (300, 200), (17, 450)),  # down on one axis, up on the other
]


# torch-fidelity is installed beside the venv (see the Makefile): installed in it, it would break
# `import torchmetrics`.
REFERENCE_SRC = Path(sys.prefix) / "reference-src"


def _package_file(package: str, name: str) -> Path:
    beside = REFERENCE_SRC / package / name
    if beside.exists():
        return beside
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is installed by `make venv` (pip --no-deps)")
    return Path(spec.submodule_search_locations[0]) / name


def _source(package: str, name: str) -> str:
    return " ".join(_package_file(package, name).read_text().split())


@pytest.fixture(scope="module")
def tf1_interpolate():
    # torch_fidelity/__init__.py imports its torchvision-based feature extractors; the resize
    # module needs only torch, so it is loaded from its file alone.
    path = _package_file("torch_fidelity", "interpolate_compat_tensorflow.py")
    spec = importlib.util.spec_from_file_location("_torch_fidelity_interpolate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.interpolate_bilinear_2d_like_tensorflow1x


def test_the_references_resize_as_these_tests_call_them():
    # pytorch-fid's InceptionV3.forward (resize_input=True): torch's bilinear on [0, 1] images.
    assert "x = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)" in _source(
        "pytorch_fid", "inception.py"
    )
    # torch-fidelity's InceptionV3 feature extractor, which torchmetrics' FID uses.
    assert re.search(
        r"x = interpolate_bilinear_2d_like_tensorflow1x\( x, size=\(self.INPUT_IMAGE_SIZE, "
        r"self.INPUT_IMAGE_SIZE\), align_corners=False, \)",
        _source("torch_fidelity", "feature_extractor_inceptionv3.py"),
    )


def _photo(name, crop):
    img = getattr(skimage.data, name)()
    return np.array(img if crop is None else img[: crop[0], : crop[1]])  # writable, for torch


def _reference(mode, u8, size, tf1_interpolate):
    """The reference's resize of a uint8 photo, in [0, 255] units."""
    nchw = torch.from_numpy(u8).permute(2, 0, 1)[None]
    if mode == "pytorch-fid":
        # pytorch-fid's ToTensor gives [0, 1] floats, which its InceptionV3 resizes.
        x = nchw.float().div(255)
        out = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return out[0].permute(1, 2, 0).numpy() * 255
    if mode == "tf1":
        # torch-fidelity casts the uint8 batch to float and resizes in [0, 255].
        out = tf1_interpolate(nchw.float(), size=size, align_corners=False)
        return out[0].permute(1, 2, 0).numpy()
    if mode == "clean":
        resizer = (
            cleanfid_resize.build_resizer("clean")
            if size == (299, 299)
            else cleanfid_resize.make_resizer("PIL", False, "bicubic", (size[1], size[0]))
        )
        return resizer(u8)
    channels = [
        Image.fromarray(u8[..., c].astype(np.float32), mode="F").resize(
            (size[1], size[0]), Image.BILINEAR
        )
        for c in range(3)
    ]
    return np.stack([np.asarray(c) for c in channels], axis=-1)


@functools.cache
def _ours(name, crop, size):
    """Every mode of one case, through the jitted API (one compile per case) and the host path."""
    x = _photo(name, crop).astype(np.float32) / np.float32(255)
    every_mode = jax.jit(lambda x: {m: resize_images(x, size, m) for m in RESIZE_MODES})
    on_device = every_mode(x[None])
    return {
        m: (np.asarray(on_device[m])[0] * 255, resize_images_numpy(x, size, m) * 255)
        for m in RESIZE_MODES
    }


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize(("name", "crop", "size"), CASES, ids=str)
def test_parity_with_the_reference(name, crop, size, mode, tf1_interpolate):
    want = _reference(mode, _photo(name, crop), size, tf1_interpolate)
    got_jax, got_host = _ours(name, crop, size)[mode]
    assert got_jax.shape == want.shape == (*size, 3)
    np.testing.assert_allclose(got_jax, want, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got_host, want, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    for i, (name, crop) in enumerate(
        [("chelsea", None), ("coffee", (64, 80)), ("astronaut", (512, 333))]
    ):
        Image.fromarray(_photo(name, crop)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize("mode", ["pytorch-fid", "clean"])
def test_folder_of_mixed_sizes_is_resized_per_image_as_the_reference(mixed_folder, mode):
    # What `calibrax fid --resize MODE` feeds the network: each file read as RGB and resized
    # from its own size, as pytorch-fid's ImagePathDataset + InceptionV3 and clean-fid's
    # ResizeDataset do.
    (batch,) = ImageFolder(mixed_folder, size=(299, 299), method=mode).batches(8)
    assert batch.dtype == np.float32 and batch.shape == (3, 299, 299, 3)
    for got, path in zip(batch, sorted(mixed_folder.iterdir()), strict=True):
        u8 = np.array(Image.open(path).convert("RGB"))
        want = _reference(mode, u8, (299, 299), None)
        np.testing.assert_allclose(got * 255, want, rtol=0, atol=ATOL)
