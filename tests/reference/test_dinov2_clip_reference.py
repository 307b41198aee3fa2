"""DINOv2 and CLIP image towers against Hugging Face ``transformers``, through the public import path.

No real weights can be downloaded here, so each reference is built with seeded random weights:
``transformers`` ``Dinov2Model`` and ``CLIPVisionModelWithProjection`` (their parameters perturbed
with a fixed torch seed so that no LayerScale/LayerNorm stays at its identity init). Their state
dicts are exported in the OFFICIAL key layouts (DINOv2 hub ``.pth``: ``cls_token``, ``pos_embed``,
``blocks.N.attn.qkv``, ...; OpenAI CLIP ``visual.*``) by a conversion written here, independently
of calibrax's, saved with ``torch.save`` and with ``safetensors``, imported with
``calibrax.io.import_weights`` (with ``alias=`` where the file's hash is not the published one),
loaded with ``calibrax.backbones.load`` and compared on real photos (``skimage.data``).

Small architectures are registered for the duration of the module (2 blocks, width 64, the real
patch sizes and 224 px input; DINOv2 with the released 37x37 positional grid, so the
interpolation to 16x16 is exercised); one test runs the released ViT-S/14 shape end to end.

Tolerance: 1e-4 relative (``max |ours - ref| <= 1e-4 * max |ref|``), both sides float32; the
differences are float32 summation order (measured ~1e-6).

The official DINOv2 interpolates positional embeddings with ``scale_factor=(n + 0.1) / 37``
(``interpolate_offset``), transformers 5.x with ``size=n``; the reference at 224 px therefore
runs ``Dinov2Model`` with its ``interpolate_pos_encoding`` replaced by the official formula
(torch's own bicubic ``F.interpolate``); at the native 518 px grid no interpolation happens and
the unmodified ``Dinov2Model`` is the reference.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
import types

import numpy as np
import pytest

from calibrax.backbones import BackboneSpec
from calibrax.backbones import CLIPVision
from calibrax.backbones import DINOv2
from calibrax.backbones import StateDictMismatchError
from calibrax.backbones import _zoo
from calibrax.backbones import load
from calibrax.backbones.clip import _openai_keys
from calibrax.backbones.dinov2 import _official_keys
from calibrax.functional import resize_images_numpy
from calibrax.io import KNOWN_WEIGHTS
from calibrax.io import HashMismatchError
from calibrax.io import import_weights
from calibrax.io import weights as weights_mod
from calibrax.io.weights import WeightFile

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
skimage_data = pytest.importorskip("skimage.data")

RTOL = 1e-4
DINO_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
DINO_STD = np.array([0.229, 0.224, 0.225], np.float32)
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
CLIP_TINY_SHA = "0" * 64  # a "published" hash no test file has: forces --as


def _dino_tiny(*, rngs=None):
    return DINOv2(embed_dim=64, depth=2, num_heads=4, pos_grid=37, rngs=rngs)


def _dino_tiny_swiglu(*, rngs=None):
    return DINOv2(embed_dim=64, depth=2, num_heads=4, ffn="swiglu", pos_grid=37, rngs=rngs)


def _clip_tiny(*, rngs=None):
    return CLIPVision(patch=32, grid=7, width=64, layers=2, heads=4, embed_dim=32, rngs=rngs)


TINY = {
    "dinov2-tiny": (_dino_tiny, _official_keys, None),
    "dinov2-tiny-swiglu": (_dino_tiny_swiglu, _official_keys, None),
    "clip-tiny": (_clip_tiny, _openai_keys, CLIP_TINY_SHA),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A cache root, with the tiny architectures registered as backbones for this module."""
    with pytest.MonkeyPatch.context() as mp:
        for name, (build, convert, sha) in TINY.items():
            mp.setitem(_zoo._ZOO, name, BackboneSpec(name=name, build=build, convert=convert))
            mp.setitem(
                KNOWN_WEIGHTS,
                name,
                WeightFile(
                    name=name, filename=f"{name}.pth", sha256=sha, licence="test", source="test"
                ),
            )
        yield tmp_path_factory.mktemp("calibrax_home")


@pytest.fixture(scope="module")
def photos():
    """Four real photos, resized to 224x224 (float32 NHWC in [0, 1])."""
    names = ("astronaut", "chelsea", "coffee", "rocket")
    images = [getattr(skimage_data, n)().astype(np.float32) / 255.0 for n in names]
    return np.stack([resize_images_numpy(im, (224, 224), "clean") for im in images])


def _perturb(model, seed):
    """Move every parameter of a (seeded) model off its init, with a fixed seed."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _nchw(images, mean, std):
    return torch.from_numpy(np.ascontiguousarray(((images - mean) / std).transpose(0, 3, 1, 2)))


def _relative(ours, ref):
    return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


# ---- DINOv2 ---------------------------------------------------------------------------------


def _hf_dino(swiglu):
    config = transformers.Dinov2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=518,
        patch_size=14,
        use_swiglu_ffn=swiglu,
    )
    torch.manual_seed(0)
    return _perturb(transformers.Dinov2Model(config), seed=1 + swiglu)


def _dino_official_state_dict(model) -> dict[str, np.ndarray]:
    """A transformers Dinov2Model state dict in the official hub layout (written independently)."""
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    out = {
        "cls_token": sd.pop("embeddings.cls_token"),
        "mask_token": sd.pop("embeddings.mask_token"),
        "pos_embed": sd.pop("embeddings.position_embeddings"),
        "patch_embed.proj.weight": sd.pop("embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": sd.pop("embeddings.patch_embeddings.projection.bias"),
        "norm.weight": sd.pop("layernorm.weight"),
        "norm.bias": sd.pop("layernorm.bias"),
    }
    for i in range(model.config.num_hidden_layers):
        hf, ours = f"encoder.layer.{i}.", f"blocks.{i}."
        for t in ("weight", "bias"):
            out[ours + f"norm1.{t}"] = sd.pop(hf + f"norm1.{t}")
            out[ours + f"norm2.{t}"] = sd.pop(hf + f"norm2.{t}")
            out[ours + f"attn.qkv.{t}"] = np.concatenate(
                [sd.pop(hf + f"attention.{x}_proj.{t}") for x in "qkv"]
            )
            out[ours + f"attn.proj.{t}"] = sd.pop(hf + f"attention.o_proj.{t}")
            if model.config.use_swiglu_ffn:
                out[ours + f"mlp.w12.{t}"] = np.concatenate(
                    [sd.pop(hf + f"mlp.gate_proj.{t}"), sd.pop(hf + f"mlp.up_proj.{t}")]
                )
                out[ours + f"mlp.w3.{t}"] = sd.pop(hf + f"mlp.down_proj.{t}")
            else:
                out[ours + f"mlp.fc1.{t}"] = sd.pop(hf + f"mlp.fc1.{t}")
                out[ours + f"mlp.fc2.{t}"] = sd.pop(hf + f"mlp.fc2.{t}")
        out[ours + "ls1.gamma"] = sd.pop(hf + "layer_scale1.lambda1")
        out[ours + "ls2.gamma"] = sd.pop(hf + "layer_scale2.lambda1")
    assert not sd, sorted(sd)
    return out


def _official_interpolation(embeddings, pixel_embeddings, height, width):
    """facebookresearch/dinov2's interpolate_pos_encoding (offset 0.1, scale_factor, bicubic)."""
    pos = embeddings.position_embeddings.float()
    n = pos.shape[1] - 1
    npatch = pixel_embeddings.shape[1] - 1
    if npatch == n and height == width:
        return embeddings.position_embeddings
    side = int(math.sqrt(n))
    dim = pos.shape[-1]
    h0, w0 = height // 14 + 0.1, width // 14 + 0.1
    grid = torch.nn.functional.interpolate(
        pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=(h0 / side, w0 / side),
        mode="bicubic",
    )
    assert tuple(grid.shape[-2:]) == (int(h0), int(w0))
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([pos[:, :1], grid], dim=1)


def _dino_reference(model, images, official_interpolation=True):
    if official_interpolation:
        model.embeddings.interpolate_pos_encoding = types.MethodType(
            _official_interpolation, model.embeddings
        )
    else:
        vars(model.embeddings).pop("interpolate_pos_encoding", None)  # transformers' own
    with torch.no_grad():
        out = model(pixel_values=_nchw(images, DINO_MEAN, DINO_STD))
    hidden = out.last_hidden_state.numpy()
    return hidden[:, 0], hidden[:, 1:]


@pytest.fixture(scope="module")
def dino_files(tmp_path_factory):
    """name -> (official .pth path, .safetensors path, reference model) for the tiny DINOv2s."""
    folder = tmp_path_factory.mktemp("dino_files")
    files = {}
    for name, swiglu in (("dinov2-tiny", False), ("dinov2-tiny-swiglu", True)):
        model = _hf_dino(swiglu)
        sd = _dino_official_state_dict(model)
        pth = folder / f"{name}.pth"
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, pth)
        st = folder / f"{name}.safetensors"
        safetensors_numpy.save_file(sd, str(st))
        files[name] = (pth, st, model)
    return files


@pytest.mark.parametrize("name", ["dinov2-tiny", "dinov2-tiny-swiglu"])
def test_dinov2_pth_through_import_matches_official_forward(home, dino_files, photos, name):
    pth, _, model = dino_files[name]
    import_weights(name, pth, home=home)  # no published hash: accepted, hash recorded
    backbone = load(name, home=home)
    cls_ref, patches_ref = _dino_reference(model, photos)
    out = backbone.forward(photos)
    assert out.cls_token.shape == (4, 64) and out.patch_tokens.shape == (4, 16, 16, 64)
    assert _relative(out.cls_token, cls_ref) <= RTOL
    assert _relative(np.asarray(out.patch_tokens).reshape(4, 256, 64), patches_ref) <= RTOL
    assert _relative(backbone(photos), cls_ref) <= RTOL
    rows = {r["name"]: r for r in weights_mod.weights_status(home)}
    assert rows[name]["sha256"] == weights_mod.sha256_file(pth)


def test_dinov2_safetensors_alias_matches(home, dino_files, photos):
    _, st, model = dino_files["dinov2-tiny"]
    import_weights("dinov2-tiny", st, alias="my-dino", home=home)
    cls_ref, _ = _dino_reference(model, photos)
    assert _relative(load("my-dino", home=home)(photos), cls_ref) <= RTOL


def test_dinov2_native_grid_matches_unmodified_transformers(home, dino_files, photos):
    """At 518x518 (the learnt 37x37 grid) nothing is interpolated in either implementation."""
    _, st, model = dino_files["dinov2-tiny"]
    import_weights("dinov2-tiny", st, home=home)
    images = resize_images_numpy(photos[:2], (518, 518), "clean").clip(0, 1)
    cls_ref, _ = _dino_reference(model, images, official_interpolation=False)
    assert _relative(load("dinov2-tiny", home=home)(images), cls_ref) <= RTOL


def test_dinov2_transformers_layout_is_converted(home, dino_files, photos, tmp_path):
    """A file saved straight from transformers (its own key names) imports as the same network."""
    _, _, model = dino_files["dinov2-tiny-swiglu"]
    path = tmp_path / "hf.safetensors"
    safetensors_numpy.save_file(
        {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, str(path)
    )
    import_weights("dinov2-tiny-swiglu", path, alias="hf-dino", home=home)
    cls_ref, _ = _dino_reference(model, photos)
    assert _relative(load("hf-dino", home=home)(photos), cls_ref) <= RTOL


def test_dinov2_non_square_input(home, dino_files, photos):
    """A 224x168 input: 16x12 patches, each axis with its own official scale factor."""
    pth, _, model = dino_files["dinov2-tiny"]
    import_weights("dinov2-tiny", pth, home=home)
    images = photos[:, :, :168]
    cls_ref, patches_ref = _dino_reference(model, images)
    out = load("dinov2-tiny", home=home).forward(images)
    assert out.patch_tokens.shape == (4, 16, 12, 64)
    assert _relative(out.cls_token, cls_ref) <= RTOL
    assert _relative(np.asarray(out.patch_tokens).reshape(4, 192, 64), patches_ref) <= RTOL


@pytest.mark.slow
def test_dinov2_vits14_released_shape(tmp_path, photos):
    """The released ViT-S/14 shape end to end, under its official name (hash recorded)."""
    config = transformers.Dinov2Config(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518, patch_size=14
    )
    torch.manual_seed(0)
    model = _perturb(transformers.Dinov2Model(config), seed=3)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({k: torch.from_numpy(v) for k, v in _dino_official_state_dict(model).items()}, path)
    import_weights("dinov2-vit-s14", path, home=tmp_path)
    cls_ref, _ = _dino_reference(model, photos[:2])
    backbone = load("dinov2-vit-s14", home=tmp_path)
    assert backbone.num_features == 384
    assert _relative(backbone(photos[:2]), cls_ref) <= RTOL


# ---- CLIP -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_model():
    config = transformers.CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=224,
        patch_size=32,
        projection_dim=32,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    return _perturb(transformers.CLIPVisionModelWithProjection(config), seed=4)


def _clip_openai_state_dict(model) -> dict[str, np.ndarray]:
    """A transformers CLIP image tower in OpenAI's ``visual.*`` layout (written independently)."""
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    sd.pop("vision_model.embeddings.position_ids", None)
    v = "vision_model."
    out = {
        "visual.class_embedding": sd.pop(v + "embeddings.class_embedding"),
        "visual.conv1.weight": sd.pop(v + "embeddings.patch_embedding.weight"),
        "visual.positional_embedding": sd.pop(v + "embeddings.position_embedding.weight"),
        "visual.ln_pre.weight": sd.pop(v + "pre_layrnorm.weight"),
        "visual.ln_pre.bias": sd.pop(v + "pre_layrnorm.bias"),
        "visual.ln_post.weight": sd.pop(v + "post_layernorm.weight"),
        "visual.ln_post.bias": sd.pop(v + "post_layernorm.bias"),
        "visual.proj": np.ascontiguousarray(sd.pop("visual_projection.weight").T),
    }
    for i in range(model.config.num_hidden_layers):
        hf, ours = f"{v}encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        out[ours + "attn.in_proj_weight"] = np.concatenate(
            [sd.pop(hf + f"self_attn.{x}_proj.weight") for x in "qkv"]
        )
        out[ours + "attn.in_proj_bias"] = np.concatenate(
            [sd.pop(hf + f"self_attn.{x}_proj.bias") for x in "qkv"]
        )
        for t in ("weight", "bias"):
            out[ours + f"attn.out_proj.{t}"] = sd.pop(hf + f"self_attn.out_proj.{t}")
            out[ours + f"ln_1.{t}"] = sd.pop(hf + f"layer_norm1.{t}")
            out[ours + f"ln_2.{t}"] = sd.pop(hf + f"layer_norm2.{t}")
            out[ours + f"mlp.c_fc.{t}"] = sd.pop(hf + f"mlp.fc1.{t}")
            out[ours + f"mlp.c_proj.{t}"] = sd.pop(hf + f"mlp.fc2.{t}")
    assert not sd, sorted(sd)
    # A full OpenAI checkpoint also holds the text tower; a few of its keys must be ignored.
    out["text_projection"] = np.zeros((16, 32), np.float32)
    out["transformer.resblocks.0.ln_1.weight"] = np.ones(16, np.float32)
    out["logit_scale"] = np.array(4.6, np.float32)
    return out


def _clip_reference(model, images):
    with torch.no_grad():
        return model(pixel_values=_nchw(images, CLIP_MEAN, CLIP_STD)).image_embeds.numpy()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_clip_import_with_alias_matches(home, clip_model, photos, tmp_path, suffix):
    sd = _clip_openai_state_dict(clip_model)
    path = tmp_path / f"ViT-tiny{suffix}"
    if suffix == ".pt":
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    else:
        safetensors_numpy.save_file(sd, str(path))
    digest = weights_mod.sha256_file(path)
    with pytest.raises(
        HashMismatchError,
        match=re.escape(
            f"expected `{path}` to have sha256 {CLIP_TINY_SHA} (clip-tiny.pth), got {digest}; "
            "to use weights of your own with the clip-tiny architecture, import them under a "
            f"name of your choice: calibrax weights import clip-tiny {path} --as ALIAS (Python: "
            "calibrax.io.import_weights('clip-tiny', path, alias='ALIAS'))"
        ),
    ):
        import_weights("clip-tiny", path, home=home)
    alias = f"my-clip{suffix.replace('.', '-')}"
    import_weights("clip-tiny", path, alias=alias, home=home)
    ours = load(alias, home=home)(photos)
    ref = _clip_reference(clip_model, photos)
    assert ours.shape == (4, 32)
    assert _relative(ours, ref) <= RTOL
    rows = {r["name"]: r for r in weights_mod.weights_status(home)}
    assert rows[alias]["sha256"] == digest and rows[alias]["licence"] == "user"


class _QuickGELU(torch.nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _OpenAIBlock(torch.nn.Module):
    """OpenAI CLIP's residual block (torch modules under OpenAI's names), sequence-first."""

    def __init__(self, width, heads):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(width, heads)
        self.ln_1 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(
            collections.OrderedDict(
                c_fc=torch.nn.Linear(width, 4 * width),
                gelu=_QuickGELU(),
                c_proj=torch.nn.Linear(4 * width, width),
            )
        )
        self.ln_2 = torch.nn.LayerNorm(width)

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _OpenAIVisual(torch.nn.Module):
    def __init__(self, width=64, layers=2, heads=4, patch=32, grid=7, embed=32):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = torch.nn.Parameter(torch.zeros(width))
        self.positional_embedding = torch.nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = torch.nn.LayerNorm(width)
        self.transformer = torch.nn.Module()
        self.transformer.resblocks = torch.nn.Sequential(
            *[_OpenAIBlock(width, heads) for _ in range(layers)]
        )
        self.ln_post = torch.nn.LayerNorm(width)
        self.proj = torch.nn.Parameter(torch.zeros(width, embed))

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.transformer.resblocks(x.transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj


class _OpenAICLIP(torch.nn.Module):
    """An image tower plus a stand-in for the text tower's tensors, as in OpenAI's files."""

    def __init__(self):
        super().__init__()
        self.visual = _OpenAIVisual()
        self.token_embedding = torch.nn.Embedding(10, 16)
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6))

    def forward(self, x):
        return self.visual(x)


def test_clip_torchscript_archive_like_openai(home, clip_model, photos, tmp_path):
    """A ``torch.jit.save`` archive (OpenAI's release format) of an OpenAI-layout model."""
    model = _OpenAICLIP().eval()
    sd = {k: torch.from_numpy(v) for k, v in _clip_openai_state_dict(clip_model).items()}
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in sd.items() if k.startswith("visual.")}, strict=False
    )
    assert set(missing) == {"token_embedding.weight", "logit_scale"} and not unexpected
    x = _nchw(photos, CLIP_MEAN, CLIP_STD)
    traced = torch.jit.trace(model, x[:1])
    path = tmp_path / "ViT-tiny-jit.pt"
    torch.jit.save(traced, str(path))
    with torch.no_grad():
        openai_ref = traced(x).numpy()
    hf_ref = _clip_reference(clip_model, photos)
    assert _relative(openai_ref, hf_ref) <= RTOL  # the two torch references agree
    import_weights("clip-tiny", path, alias="jit-clip", home=home)
    assert _relative(load("jit-clip", home=home)(photos), openai_ref) <= RTOL


def test_clip_transformers_layout_is_converted(home, clip_model, photos, tmp_path):
    path = tmp_path / "hf_clip.safetensors"
    sd = {k: v.detach().numpy().copy() for k, v in clip_model.state_dict().items()}
    safetensors_numpy.save_file(sd, str(path))
    import_weights("clip-tiny", path, alias="hf-clip", home=home)
    assert (
        _relative(load("hf-clip", home=home)(photos), _clip_reference(clip_model, photos)) <= RTOL
    )


# ---- what does not fit ------------------------------------------------------------------------


def test_mismatching_tensor_names_the_key_and_shapes(home, dino_files, tmp_path):
    _, st, _ = dino_files["dinov2-tiny"]
    sd = dict(safetensors_numpy.load_file(str(st)))
    sd["blocks.1.attn.qkv.weight"] = np.zeros((96, 64), np.float32)
    path = tmp_path / "wrong.safetensors"
    safetensors_numpy.save_file(sd, str(path))
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected `blocks.1.attn.qkv.weight` to have shape (192, 64) for DINOv2, "
            "got shape (96, 64)"
        ),
    ):
        import_weights("dinov2-tiny", path, alias="wrong", home=home)
    assert not (home / "weights" / "wrong").exists()


def test_file_of_another_architecture_is_refused(home, dino_files):
    """A DINOv2 file imported as CLIP: the first key CLIP needs is missing, by name."""
    pth, _, _ = dino_files["dinov2-tiny"]
    with pytest.raises(
        StateDictMismatchError,
        match=re.escape(
            "expected the state dict to have key 'visual.class_embedding' needed by CLIPVision "
            "(shape (64,)), got no such key"
        ),
    ):
        import_weights("clip-tiny", pth, alias="not-clip", home=home)


def test_missing_alias_and_bad_alias(home, dino_files):
    pth, _, _ = dino_files["dinov2-tiny"]
    with pytest.raises(ValueError, match=re.escape("expected `name` to be one of ")):
        load("no-such-alias", home=home)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `alias` to differ from every backbone name, got 'dinov2-vit-l14', which is "
            "one; pick another name for your weights"
        ),
    ):
        import_weights("dinov2-tiny", pth, alias="dinov2-vit-l14", home=home)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected `alias` to be a name of letters, digits, '.', '_' or '-' (starting with a "
            "letter or digit, at most 100 characters), got '../evil'"
        ),
    ):
        import_weights("dinov2-tiny", pth, alias="../evil", home=home)


def test_official_name_without_published_hash_records_it(home):
    assert KNOWN_WEIGHTS["dinov2-vit-l14"].sha256 is None
    entry = dataclasses.asdict(KNOWN_WEIGHTS["clip-vit-l14"])
    assert entry["sha256"].startswith("b8cca3fd") and entry["licence"] == "MIT"
