"""DINOv2 / CLIP modules: interpolation weights, bad input, frozen weights, jit, metrics, aliases.

Parity of whole networks against ``transformers`` is in
``tests/reference/test_dinov2_clip_reference.py``; this file checks the pieces and the wiring.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from calibrax.backbones import BackboneSpec
from calibrax.backbones import CLIPVision
from calibrax.backbones import DINOv2
from calibrax.backbones import _zoo
from calibrax.backbones import load
from calibrax.backbones import module_state_dict
from calibrax.backbones._transformer import bicubic_matrix
from calibrax.backbones.clip import CLIP_VARIANTS
from calibrax.backbones.dinov2 import DINOV2_VARIANTS
from calibrax.backbones.dinov2 import _official_keys
from calibrax.backbones.dinov2 import swiglu_hidden
from calibrax.io import KNOWN_WEIGHTS
from calibrax.io import HashMismatchError
from calibrax.io import WeightsNotFoundError
from calibrax.io import import_weights
from calibrax.io import weights as weights_mod
from calibrax.io.weights import WeightFile
from calibrax.metrics import FrechetDistance
from calibrax.metrics import GenerativeMetrics

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _tiny(*, rngs=None):
    return DINOv2(embed_dim=32, depth=1, num_heads=2, pos_grid=4, rngs=rngs)


@pytest.fixture(scope="module")
def dino():
    return _tiny(rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def clip():
    return CLIPVision(patch=8, grid=2, width=32, layers=1, heads=2, embed_dim=16, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def home(tmp_path_factory, dino):
    """A cache with the tiny DINOv2 registered as ``dinov2-tiny`` and imported as ``tiny-dino``."""
    root = tmp_path_factory.mktemp("home")
    path = root / "tiny.safetensors"
    safetensors_numpy.save_file(module_state_dict(dino), str(path))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(_zoo._ZOO, "dinov2-tiny", BackboneSpec("dinov2-tiny", _tiny, _official_keys))
        mp.setitem(
            KNOWN_WEIGHTS,
            "dinov2-tiny",
            WeightFile("dinov2-tiny", "tiny.pth", None, "test", "test"),
        )
        mp.setenv("CALIBRAX_HOME", str(root))
        import_weights("dinov2-tiny", path, alias="tiny-dino")
        yield root


# ---- interpolation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_in", "size_out", "factor"),
    [(37, 16, 16.1 / 37), (37, 12, 12.1 / 37), (7, 16, None), (5, 9, 9.1 / 5), (4, 4, None)],
)
def test_bicubic_matrix_is_torch_interpolate(size_in, size_out, factor):
    """The weights equal torch's bicubic ``F.interpolate`` (align_corners=False) on one axis."""
    x = torch.from_numpy(np.eye(size_in)[None, None])  # (1, 1, in, in): column j is e_j
    kwargs = {"scale_factor": (factor, 1.0)} if factor else {"size": (size_out, size_in)}
    ref = torch.nn.functional.interpolate(x, mode="bicubic", align_corners=False, **kwargs)
    assert ref.shape[-2] == size_out
    np.testing.assert_allclose(bicubic_matrix(size_in, size_out, factor), ref[0, 0], atol=1e-12)


# ---- bad input ----------------------------------------------------------------------------------


def test_dinov2_bad_input(dino):
    good = np.full((1, 28, 28, 3), 0.5, np.float32)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to have 4 dims (batch, height, width, channels), got shape (28, 28, 3)"
        ),
    ):
        dino(good[0])
    with pytest.raises(
        ValueError,
        match=re.escape("expected `images` to have channels 3 on axis 3, got shape (1, 28, 28, 4)"),
    ):
        dino(np.zeros((1, 28, 28, 4), np.float32))
    with pytest.raises(
        TypeError, match=re.escape("expected `images` to have a floating dtype, got uint8")
    ):
        dino(good.astype(np.uint8))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to be at least 14x14 pixels (one 14x14 patch), got shape "
            "(1, 13, 28, 3)"
        ),
    ):
        dino(good[:, :13])
    with pytest.raises(
        ValueError, match=re.escape("expected `images` to be non-empty, got shape (0, 28, 28, 3)")
    ):
        dino(good[:0])
    with pytest.raises(
        ValueError, match=re.escape("expected `images` to be finite, got 84 NaN and 0 Inf values")
    ):
        dino(np.where(np.arange(28)[None, :, None, None] == 3, np.nan, good))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to be in [0, 1] (RGB scaled to [0, 1]), got values in [1.5, 1.5]"
        ),
    ):
        dino(good * 3)
    with pytest.raises(
        ValueError, match=re.escape("expected `ffn` to be one of 'mlp', 'swiglu', got 'geglu'")
    ):
        DINOv2(embed_dim=32, depth=1, num_heads=2, ffn="geglu")
    with pytest.raises(
        ValueError, match=re.escape("expected `num_heads` to divide `embed_dim` (32), got 3")
    ):
        DINOv2(embed_dim=32, depth=1, num_heads=3)


def test_clip_bad_input(clip):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to be 16x16 pixels (CLIP's positional embeddings are not "
            "interpolated; resize first), got shape (2, 24, 16, 3)"
        ),
    ):
        clip(np.zeros((2, 24, 16, 3), np.float32))
    with pytest.raises(
        ValueError,
        match=re.escape("expected `images` to have channels 3 on axis 3, got shape (2, 16, 16, 1)"),
    ):
        clip(np.zeros((2, 16, 16, 1), np.float32))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `images` to be in [0, 1] (RGB scaled to [0, 1]), got values in [-0.5, -0.5]"
        ),
    ):
        clip(np.full((2, 16, 16, 3), -0.5, np.float32))


def test_nan_under_jit_is_not_a_plausible_number(dino, clip):
    """Under jit, where values cannot be checked, NaN pixels give NaN embeddings."""
    bad = jnp.full((1, 28, 28, 3), jnp.nan, jnp.float32)
    assert np.isnan(np.asarray(jax.jit(lambda x: dino(x))(bad))).all()
    assert np.isnan(np.asarray(jax.jit(lambda x: clip(x))(bad[:, :16, :16]))).all()


def test_out_of_range_rows_under_jit_are_nan(dino, clip):
    """Pixels in [0, 255] where [0, 1] is expected: under jit the eager range check cannot run,
    so that row's embedding is NaN (calibrax.core.checks), the others are untouched."""
    good = np.random.default_rng(0).random((2, 28, 28, 3)).astype(np.float32)
    bad = good.copy()
    bad[0] *= 255.0
    for model, x, y in ((dino, good, bad), (clip, good[:, :16, :16], bad[:, :16, :16])):
        want = np.asarray(jax.jit(lambda v, m=model: m(v))(jnp.asarray(x)))
        got = np.asarray(jax.jit(lambda v, m=model: m(v))(jnp.asarray(y)))
        assert np.isnan(got[0]).all()
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


# ---- frozen, jit ----------------------------------------------------------------------------------


def test_frozen_and_jit(dino, clip):
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), jnp.float32)
    for model in (dino, clip):
        assert not nnx.state(model, nnx.Param)  # nothing an optimizer could train
    eager = np.asarray(dino(x))
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, y: m(y))(dino, x)), eager, atol=1e-5)
    eager = np.asarray(clip(x))
    np.testing.assert_allclose(np.asarray(jax.jit(lambda m, y: m(y))(clip, x)), eager, atol=1e-5)
    # Gradients reach the input, not the weights.
    grad = jax.grad(lambda y: jnp.sum(dino(y) ** 2))(x)
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0


def test_patch_tokens_and_sizes(dino):
    out = dino.forward(jnp.full((3, 30, 44, 3), 0.5, jnp.float32))
    # 30 // 14 = 2 rows, 44 // 14 = 3 columns; pixels beyond are ignored as by the patch conv.
    assert out.cls_token.shape == (3, 32) and out.patch_tokens.shape == (3, 2, 3, 32)


def test_released_architectures_declare_their_preprocessing():
    assert DINOV2_VARIANTS == {
        "dinov2-vit-s14": (384, 12, 6, "mlp"),
        "dinov2-vit-b14": (768, 12, 12, "mlp"),
        "dinov2-vit-l14": (1024, 24, 16, "mlp"),
        "dinov2-vit-g14": (1536, 40, 24, "swiglu"),
    }
    assert swiglu_hidden(1536) == 4096  # the released ViT-g/14's mlp.w3 input size
    assert CLIP_VARIANTS == {
        "clip-vit-b32": (32, 768, 12, 12, 512),
        "clip-vit-l14": (14, 1024, 24, 16, 768),
        "clip-vit-l14-336": (14, 1024, 24, 16, 768),
    }
    # ViT-L/14@336px (CMMD's feature space): a 24 x 24 grid, so 577 positional embeddings; the
    # structure only (nnx.eval_shape: no 1.2 GB of zeros).
    big = nnx.eval_shape(lambda: _zoo.build("clip-vit-l14-336"))
    assert big.input_size == (336, 336) and big.num_features == 768
    # The two smallest released shapes, built (the others only differ by the table above).
    for name, dim in (("dinov2-vit-s14", 384), ("clip-vit-b32", 512)):
        model = _zoo.build(name)
        assert model.num_features == dim and model.input_size == (224, 224), name
        assert model.resize_method == "clean", name
    assert DINOv2.mean == (0.485, 0.456, 0.406) and DINOv2.std == (0.229, 0.224, 0.225)
    assert CLIPVision.mean == (0.48145466, 0.4578275, 0.40821073)
    assert CLIPVision.std == (0.26862954, 0.26130258, 0.27577711)


# ---- metrics through the FrozenBackboneMetric machinery ------------------------------------------


def test_fd_dinov2_without_weights_says_how_to_import(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIBRAX_HOME", str(tmp_path))
    path = tmp_path / "weights" / "dinov2-vit-l14"
    with pytest.raises(
        WeightsNotFoundError,
        match=re.escape(
            f"expected the weights 'dinov2-vit-l14' in the calibrax cache at '{path}', got none. "
            "Import the file dinov2_vitl14_pretrain.pth (no published sha256; from DINOv2 "
            "release (torch.hub facebookresearch/dinov2), https://dl.fbaipublicfiles.com/dinov2/"
            "dinov2_vitl14/dinov2_vitl14_pretrain.pth; licence Apache-2.0) once with: calibrax "
            "weights import dinov2-vit-l14 /path/to/dinov2_vitl14_pretrain.pth"
        ),
    ):
        FrechetDistance(backbone="dinov2-vit-l14")


def test_alias_as_metric_backbone(home):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    fd = FrechetDistance(backbone="tiny-dino")
    assert fd.num_features == 32 and fd.input_size == (224, 224) and fd.resize_method == "clean"
    assert fd.backbone_name == "tiny-dino"
    fd.update(images=real, real=True)
    fd.update(images=fake, real=False)
    value = float(fd.compute()["frechet_distance"])
    assert np.isfinite(value) and value > 0
    both = GenerativeMetrics(backbone="tiny-dino", metrics=("fid",), max_samples=16)
    both.update(images=real, real=True)
    both.update(images=fake, real=False)
    np.testing.assert_allclose(float(both.compute()["frechet_distance"]), value, rtol=1e-5)


def test_cli_import_as_and_backbone_alias(home, tmp_path, capsys, dino):
    from PIL import Image

    import calibrax.cli.main as cli

    path = tmp_path / "re-saved.pth"
    torch.save({k: torch.from_numpy(v.copy()) for k, v in module_state_dict(dino).items()}, path)
    assert cli.main(["weights", "import", "dinov2-tiny", str(path), "--as", "cli-dino"]) == 0
    assert "cli-dino" in capsys.readouterr().out
    rng = np.random.default_rng(1)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / folder / f"{i}.png")
    argv = ["fid", str(tmp_path / "a"), str(tmp_path / "b"), "--backbone", "cli-dino"]
    assert cli.main([*argv, "--json", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert '"backbone": "cli-dino"' in out and "frechet_distance" in out


# ---- your own weights for today's backbones --------------------------------------------------------


def test_alias_for_a_torchvision_trunk_drops_the_classifier(tmp_path):
    """A fine-tuned AlexNet (full torchvision state dict): refused by hash, imported with --as."""
    from calibrax.backbones import AlexNet

    sd = {k: torch.from_numpy(v + 0.01) for k, v in module_state_dict(AlexNet()).items()}
    sd["classifier.6.weight"] = torch.zeros(10, 4096)  # a new head: dropped for the user
    sd["classifier.6.bias"] = torch.zeros(10)
    path = tmp_path / "alexnet-finetuned.pth"
    torch.save(sd, path)
    digest = weights_mod.sha256_file(path)
    with pytest.raises(
        HashMismatchError,
        match=re.escape(
            f"got {digest}; to use weights of your own with the alexnet architecture, import them "
            f"under a name of your choice: calibrax weights import alexnet {path} --as ALIAS"
        ),
    ):
        import_weights("alexnet", path, home=tmp_path)
    import_weights("alexnet", path, alias="my-alexnet", home=tmp_path)
    model = load("my-alexnet", home=tmp_path)
    assert isinstance(model, AlexNet)
    np.testing.assert_allclose(
        module_state_dict(model)["features.0.bias"], sd["features.0.bias"].numpy()
    )
    rows = {r["name"]: r for r in weights_mod.weights_status(tmp_path)}
    assert rows["my-alexnet"]["source"] == "your file alexnet-finetuned.pth (alexnet architecture)"
    assert rows["my-alexnet"]["sha256"] == digest


def test_clip_module_as_metric_backbone(clip):
    """CLIP's embedding size and input size reach the metric from the module (CLIP-FID)."""
    rng = np.random.default_rng(2)
    fd = FrechetDistance(backbone=clip)
    assert fd.num_features == 16 and fd.input_size == (16, 16) and fd.resize_method == "clean"
    fd.update(images=rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8), real=True)
    fd.update(images=rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8), real=False)
    assert np.isfinite(float(fd.compute()["frechet_distance"]))
