"""DINOv2 vision transformers (ViT-S/14, B/14, L/14, g/14), the FD-DINOv2 feature space.

The architecture and state-dict names follow the official release (facebookresearch/dinov2,
``dinov2/models/vision_transformer.py`` as built by its ``hubconf.py``: ``img_size=518``,
``patch_size=14``, ``init_values=1.0`` (LayerScale), ``block_chunks=0``, no registers,
``interpolate_offset=0.1``, no antialiasing), so the published ``dinov2_vit*14_pretrain.pth`` files
map onto it by name: ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``,
``norm.*``. ViT-g/14 uses the SwiGLU feed-forward of the release (``ffn_layer="swiglufused"``,
whose fallback without xFormers holds ``mlp.w12`` and ``mlp.w3``; hidden size
``(int(4 * 1536 * 2 / 3) + 7) // 8 * 8 = 4096``). The unused ``mask_token`` of those files is
dropped on import; a file in the Hugging Face ``transformers`` ``Dinov2Model`` layout
(``embeddings.*``, ``encoder.layer.N.*``, ``layernorm.*``) is renamed to the official one.

Block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``, LayerNorm ``eps=1e-6``, exact
(erf) GELU, ``head_dim ** -0.5`` attention scaling. The output is the CLS token after the final
norm (the hub model's ``forward``, ``x_norm_clstoken``); :meth:`DINOv2.forward` also gives the
normalised patch tokens.

Positional embeddings are learnt for a 37x37 grid (518 px). Another grid is interpolated exactly
as the official ``interpolate_pos_encoding``: bicubic (``A = -0.75``, ``align_corners=False``,
no antialiasing) in float32, with the *scale factor* ``(n + 0.1) / 37`` per axis (``n`` = patches
along that axis) rather than a target size, which moves the sample points slightly, and no
interpolation when the grid already has ``37 * 37`` patches and the image is square.
``transformers``' ``Dinov2Model`` (5.x) passes ``size=`` instead and so differs from the official
model by up to a few 1e-3 in the embeddings at 224 px; calibrax follows the official code.

Preprocessing (:attr:`DINOv2.input_size`, :attr:`DINOv2.resize_method`, ``mean``/``std``): as
dgm-eval's ``DINOv2Encoder`` (Stein et al., 2023), 224x224 with a bicubic resize and the ImageNet
normalisation ``mean (0.485, 0.456, 0.406)``, ``std (0.229, 0.224, 0.225)``, applied by the module
to ``[0, 1]`` inputs. dgm-eval resizes PIL images with torchvision's bicubic ``Resize`` (Pillow's
antialiased bicubic); tier-1 metrics use calibrax's ``"clean"`` mode, that same filter on float
images (not rounded to uint8). torch-fidelity's ``dinov2-vit-*`` extractors resize with TF1
bilinear instead: pass ``resize_method="tf1"`` to match it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.backbones._layers import Conv2d
from calibrax.backbones._layers import Linear
from calibrax.backbones._layers import frozen
from calibrax.backbones._transformer import LayerNorm
from calibrax.backbones._transformer import attention
from calibrax.backbones._transformer import channels_last
from calibrax.backbones._transformer import grid_side
from calibrax.backbones._transformer import parameter
from calibrax.backbones._transformer import resample_grid
from calibrax.backbones._zoo import register_backbone
from calibrax.core import checks
from calibrax.core.registry import register

__all__ = ["DINOV2_VARIANTS", "DINOv2", "DINOv2Output", "swiglu_hidden"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: name -> (embed_dim, depth, num_heads, ffn) of the released models (hubconf.py).
DINOV2_VARIANTS: dict[str, tuple[int, int, int, str]] = {
    "dinov2-vit-s14": (384, 12, 6, "mlp"),
    "dinov2-vit-b14": (768, 12, 12, "mlp"),
    "dinov2-vit-l14": (1024, 24, 16, "mlp"),
    "dinov2-vit-g14": (1536, 40, 24, "swiglu"),
}
_PATCH = 14
_POS_GRID = 37  # img_size 518 / patch 14
_OFFSET = 0.1  # the official interpolate_offset
_EPS = 1e-6


class DINOv2Output(NamedTuple):
    """Everything one forward pass computes.

    Attributes:
        features: ``(batch, dim)`` CLS token after the final norm: the embedding (also
            :attr:`cls_token`; named ``features`` as every backbone's ``forward`` output is).
        patch_tokens: ``(batch, h, w, dim)`` patch tokens after the final norm, ``h = height // 14``
            and ``w = width // 14``.
    """

    features: jax.Array
    patch_tokens: jax.Array

    @property
    def cls_token(self) -> jax.Array:
        """The CLS token after the final norm (the same array as :attr:`features`)."""
        return self.features


class _PatchEmbed(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs | None):
        self.proj = Conv2d(3, dim, _PATCH, stride=_PATCH, rngs=rngs)


class _Attention(nnx.Module):
    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs | None):
        self.num_heads = num_heads
        self.qkv = Linear(dim, 3 * dim, rngs=rngs)
        self.proj = Linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(attention(self.qkv(x), self.num_heads))


class _LayerScale(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs | None):
        self.gamma = parameter((dim,), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * channels_last(frozen(self.gamma, x.dtype), x.ndim)


class _Mlp(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs | None):
        self.fc1 = Linear(dim, 4 * dim, rngs=rngs)
        self.fc2 = Linear(4 * dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


def swiglu_hidden(dim: int) -> int:
    """Hidden size of the official ``SwiGLUFFNFused`` for ``mlp_ratio=4``."""
    return (int(4 * dim * 2 / 3) + 7) // 8 * 8


class _SwiGLU(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs | None):
        hidden = swiglu_hidden(dim)
        self.w12 = Linear(dim, 2 * hidden, rngs=rngs)
        self.w3 = Linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x1, x2 = jnp.split(self.w12(x), 2, axis=-1)
        return self.w3(jax.nn.silu(x1) * x2)


class _Block(nnx.Module):
    def __init__(self, dim: int, num_heads: int, ffn: str, *, rngs: nnx.Rngs | None):
        self.norm1 = LayerNorm(dim, eps=_EPS, rngs=rngs)
        self.attn = _Attention(dim, num_heads, rngs=rngs)
        self.ls1 = _LayerScale(dim, rngs=rngs)
        self.norm2 = LayerNorm(dim, eps=_EPS, rngs=rngs)
        self.mlp = _SwiGLU(dim, rngs=rngs) if ffn == "swiglu" else _Mlp(dim, rngs=rngs)
        self.ls2 = _LayerScale(dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def _official_keys(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The official key layout from an official or a ``transformers`` DINOv2 state dict."""
    keys = set(state_dict)
    prefix = "dinov2." if "dinov2.embeddings.cls_token" in keys else ""
    if prefix + "embeddings.cls_token" not in keys:
        return {k: v for k, v in state_dict.items() if k != "mask_token"}
    out: dict[str, np.ndarray] = {}
    renames = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    layer_renames = {
        "norm1": "norm1",
        "norm2": "norm2",
        "attention.output.dense": "attn.proj",  # transformers 4.x
        "attention.o_proj": "attn.proj",  # transformers 5.x
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "mlp.weights_out": "mlp.w3",  # transformers 4.x
        "mlp.down_proj": "mlp.w3",  # transformers 5.x
    }
    # (module, which part of the concatenation); 4.x and 5.x names.
    packed = {
        "attention.attention.query": ("attn.qkv", 0),
        "attention.attention.key": ("attn.qkv", 1),
        "attention.attention.value": ("attn.qkv", 2),
        "attention.q_proj": ("attn.qkv", 0),
        "attention.k_proj": ("attn.qkv", 1),
        "attention.v_proj": ("attn.qkv", 2),
        "mlp.gate_proj": ("mlp.w12", 0),
        "mlp.up_proj": ("mlp.w12", 1),
    }
    parts_of: dict[str, dict[int, np.ndarray]] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            out[key] = value  # e.g. a classifier head: refused by name later
            continue
        name = key[len(prefix) :]
        if name == "embeddings.mask_token":
            continue
        if name in renames:
            out[renames[name]] = value
            continue
        parts = name.split(".")
        if name.startswith("encoder.layer.") and len(parts) > 4:
            block, rest = f"blocks.{parts[2]}", ".".join(parts[3:])
            module, leaf = rest.rsplit(".", 1)
            if module in packed:
                target, index = packed[module]
                parts_of.setdefault(f"{block}.{target}.{leaf}", {})[index] = value
                continue
            if module in ("layer_scale1", "layer_scale2") and leaf == "lambda1":
                out[f"{block}.ls{module[-1]}.gamma"] = value
                continue
            if module in layer_renames:
                out[f"{block}.{layer_renames[module]}.{leaf}"] = value
                continue
        out[key] = value  # unknown: refused by name later
    for key, parts in parts_of.items():
        # A missing part leaves the key out: it is then reported as missing.
        if set(parts) == set(range(3 if ".attn.qkv." in key else 2)):
            out[key] = np.concatenate([parts[i] for i in sorted(parts)], axis=0)
    return out


def _example():
    graphdef, weights = nnx.split(
        DINOv2(embed_dim=32, depth=2, num_heads=2, pos_grid=2, rngs=nnx.Rngs(0))
    )
    images = jax.random.uniform(jax.random.key(1), (2, 42, 42, 3), jnp.float32)
    return (lambda x, w: nnx.merge(graphdef, w)(x)), (images, weights)


@register(
    "dinov2",
    kind="backbone",
    tier=1,
    domain="vision",
    jit_compatible=True,
    differentiable=True,
    example=lambda: _example(),
)
class DINOv2(nnx.Module):
    """A DINOv2 vision transformer (Oquab et al., 2023), frozen, on NHWC images in ``[0, 1]``.

    Build the released models with ``calibrax.backbones.load("dinov2-vit-l14")`` (``-s14``,
    ``-b14``, ``-g14``) after importing their weights once (``calibrax weights import
    dinov2-vit-l14 dinov2_vitl14_pretrain.pth``); the constructor alone gives zero weights (or
    random ones with ``rngs``), at any size for tests.

    Tier-1 backbone interface: :attr:`input_size` ``(224, 224)``, :attr:`num_features` the width,
    :attr:`resize_method` ``"clean"``; ``__call__`` returns the CLS embedding and :meth:`forward`
    the CLS and patch tokens. Any image of at least 14x14 pixels is accepted (the positional
    embeddings are interpolated; pixels beyond a multiple of 14 are ignored, as the official
    patch convolution does).

    Args:
        embed_dim: Token width (384, 768, 1024, 1536 for S, B, L, g).
        depth: Number of blocks.
        num_heads: Attention heads.
        ffn: ``"mlp"`` (GELU MLP) or ``"swiglu"`` (ViT-g/14).
        pos_grid: Side of the learnt positional-embedding grid (37 for the released models).
        rngs: Random keys for random weights; ``None`` leaves zeros.

    References:
        Oquab et al., 2023, "DINOv2: Learning Robust Visual Features without Supervision",
        arXiv:2304.07193; Stein et al., 2023, "Exposing flaws of generative model evaluation
        metrics and their unfair treatment of diffusion models", arXiv:2306.04675.
    """

    input_size = (224, 224)
    min_size = _PATCH
    resize_method = "clean"
    patch_size = _PATCH
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        ffn: str = "mlp",
        pos_grid: int = _POS_GRID,
        rngs: nnx.Rngs | None = None,
    ):
        checks.check_choice(ffn, ("mlp", "swiglu"), "ffn")
        if embed_dim % num_heads:
            raise ValueError(
                f"expected `num_heads` to divide `embed_dim` ({embed_dim}), got {num_heads}"
            )
        self.num_features = embed_dim
        self.num_heads = num_heads
        self.patch_embed = _PatchEmbed(embed_dim, rngs=rngs)
        self.cls_token = parameter((1, 1, embed_dim), rngs)
        self.pos_embed = parameter((1, 1 + pos_grid * pos_grid, embed_dim), rngs)
        self.blocks = nnx.List([_Block(embed_dim, num_heads, ffn, rngs=rngs) for _ in range(depth)])
        self.norm = LayerNorm(embed_dim, eps=_EPS, rngs=rngs)

    def _check(self, images: jax.Array) -> None:
        checks.check_rank(images, 4, "images", "batch, height, width, channels")
        checks.check_dim(images, 3, 3, "images", "channels")
        checks.check_floating(images, "images")
        checks.check_nonempty(images, "images")
        height, width = images.shape[1], images.shape[2]
        if height < self.min_size or width < self.min_size:
            raise ValueError(
                f"expected `images` to be at least {self.min_size}x{self.min_size} pixels "
                f"(one {_PATCH}x{_PATCH} patch), got shape {tuple(images.shape)}"
            )
        checks.check_finite(images, "images")
        checks.check_range(images, 0.0, 1.0, "images", hint="RGB scaled to [0, 1]")

    def _position(self, h0: int, w0: int, height: int, width: int, dtype: jnp.dtype) -> jax.Array:
        """The ``(1 + h0 * w0, dim)`` positional embeddings for an ``h0 x w0`` patch grid."""
        pos = frozen(self.pos_embed, jnp.float32)[0]
        side = grid_side(pos.shape[0] - 1, "`pos_embed`")
        if h0 * w0 == side * side and height == width:
            return pos.astype(dtype)
        grid = pos[1:].reshape(side, side, -1)
        factors = ((h0 + _OFFSET) / side, (w0 + _OFFSET) / side)
        patches = resample_grid(grid, (h0, w0), factors).reshape(h0 * w0, -1)
        return jnp.concatenate([pos[:1], patches], axis=0).astype(dtype)

    def _forward(self, images: jax.Array) -> DINOv2Output:
        dtype = images.dtype
        mean = jnp.asarray(np.reshape(self.mean, (1, 1, 1, 3)), dtype)
        std = jnp.asarray(np.reshape(self.std, (1, 1, 1, 3)), dtype)
        x = self.patch_embed.proj((images - mean) / std)
        batch, h0, w0, dim = x.shape
        cls = jnp.broadcast_to(frozen(self.cls_token, dtype), (batch, 1, dim))
        x = jnp.concatenate([cls, x.reshape(batch, h0 * w0, dim)], axis=1)
        x = x + self._position(h0, w0, images.shape[1], images.shape[2], dtype)[None]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return DINOv2Output(features=x[:, 0], patch_tokens=x[:, 1:].reshape(batch, h0, w0, dim))

    @checks.nan_if_invalid
    def forward(self, images: Float[Array, "batch h w 3"]) -> DINOv2Output:
        """CLS embedding and patch tokens of ``images``.

        Args:
            images: ``(batch, height, width, 3)`` float RGB in ``[0, 1]``, at least 14x14 (224x224
                for FD-DINOv2). Work is done in the input's dtype (the positional-embedding
                interpolation in float32, as the official code).

        Returns:
            A :class:`DINOv2Output`.

        Raises:
            ValueError: If ``images`` is not 4-D with 3 channels, is empty or smaller than 14x14,
                or (when concrete) holds NaN/Inf or values outside ``[0, 1]``.
            TypeError: If ``images`` is not floating point.
        """
        self._check(images)
        graphdef, state = nnx.split(self)
        return _jitted_forward(graphdef, state, images)

    def __call__(self, images: Float[Array, "batch h w 3"]) -> Float[Array, "batch dim"]:
        """The CLS embedding of ``images`` (see :meth:`forward`)."""
        return self.forward(images).features


@functools.partial(jax.jit, static_argnums=0)
def _jitted_forward(graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array) -> DINOv2Output:
    return nnx.merge(graphdef, state)._forward(images)


def _builder(name: str):
    dim, depth, heads, ffn = DINOV2_VARIANTS[name]

    def build(*, rngs: nnx.Rngs | None = None) -> DINOv2:
        return DINOv2(embed_dim=dim, depth=depth, num_heads=heads, ffn=ffn, rngs=rngs)

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = f"The released {name} architecture (zero weights; see :class:`DINOv2`)."
    return build


for _name in DINOV2_VARIANTS:
    register_backbone(_name, _builder(_name), convert=_official_keys)
