"""OpenAI CLIP image towers (ViT-B/32, ViT-L/14): the CLIP-FID and CMMD feature space.

The architecture and state-dict names follow OpenAI's ``clip/model.py`` ``VisionTransformer``
(as in the released ``ViT-B-32.pt`` / ``ViT-L-14.pt``, whose keys are prefixed ``visual.``):
``visual.conv1.weight`` (patch convolution, no bias), ``visual.class_embedding``,
``visual.positional_embedding``, ``visual.ln_pre``, ``visual.transformer.resblocks.N.{ln_1,
attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``,
``visual.ln_post`` and ``visual.proj`` (``(width, embed_dim)``, applied as ``x @ proj``). The text
tower's keys in a full checkpoint are dropped on import; a file in the Hugging Face
``transformers`` ``CLIPVisionModelWithProjection``/``CLIPModel`` layout (``vision_model.*``,
``visual_projection.weight``) is renamed to OpenAI's (the projection transposed).

Forward: patches, class token prepended, positional embeddings added, ``ln_pre``, pre-LN blocks
``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))`` with QuickGELU (``x * sigmoid(1.702 x)``, what the
OpenAI weights were trained with), LayerNorm ``eps=1e-5``, then ``ln_post`` on the class token and
the projection. The output is that projected image embedding (``model.encode_image``), not
normalised to unit length.

Preprocessing: 224x224, bicubic, CLIP's normalisation ``mean (0.48145466, 0.4578275,
0.40821073)``, ``std (0.26862954, 0.26130258, 0.27577711)``, applied by the module to ``[0, 1]``
inputs. OpenAI's ``preprocess`` resizes the shorter side with Pillow's bicubic and center-crops;
clean-fid's CLIP-FID resizes the whole image with its ``"clean"`` (Pillow bicubic on float) resize,
which is calibrax's ``"clean"`` mode and this backbone's :attr:`CLIPVision.resize_method`. The
positional embeddings are not interpolated: the input must be exactly 224x224 (336x336 for
``clip-vit-l14-336``, OpenAI's ViT-L/14@336px, the feature space of the CMMD paper).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array
from jaxtyping import Float

from calibrax.backbones._layers import Conv2d
from calibrax.backbones._layers import Linear
from calibrax.backbones._layers import _init
from calibrax.backbones._layers import frozen
from calibrax.backbones._transformer import LayerNorm
from calibrax.backbones._transformer import attention
from calibrax.backbones._transformer import channels_last
from calibrax.backbones._transformer import parameter
from calibrax.backbones._transformer import quick_gelu
from calibrax.backbones._zoo import register_backbone
from calibrax.core import checks
from calibrax.core.registry import register

__all__ = ["CLIP_MEAN", "CLIP_RESOLUTION", "CLIP_STD", "CLIP_VARIANTS", "CLIPVision"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: name -> (patch, width, layers, heads, embed_dim) of the released image towers.
CLIP_VARIANTS: dict[str, tuple[int, int, int, int, int]] = {
    "clip-vit-b32": (32, 768, 12, 12, 512),
    "clip-vit-l14": (14, 1024, 24, 16, 768),
    "clip-vit-l14-336": (14, 1024, 24, 16, 768),
}
#: Input resolution of each released tower (224 px unless listed).
CLIP_RESOLUTION: dict[str, int] = {"clip-vit-l14-336": 336}
_EPS = 1e-5


class _Attention(nnx.Module):
    """``nn.MultiheadAttention`` (self-attention, packed ``in_proj``), eval mode."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs | None):
        self.num_heads = heads
        self.in_proj_weight = _init((3 * width, width), width, rngs)
        self.in_proj_bias = _init((3 * width,), width, rngs)
        self.out_proj = Linear(width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = frozen(self.in_proj_weight, x.dtype)
        qkv = jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))
        qkv = qkv + channels_last(frozen(self.in_proj_bias, x.dtype), qkv.ndim)
        return self.out_proj(attention(qkv, self.num_heads))


class _Mlp(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs | None):
        self.c_fc = Linear(width, 4 * width, rngs=rngs)
        self.c_proj = Linear(4 * width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class _ResidualAttentionBlock(nnx.Module):
    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs | None):
        self.ln_1 = LayerNorm(width, eps=_EPS, rngs=rngs)
        self.attn = _Attention(width, heads, rngs=rngs)
        self.ln_2 = LayerNorm(width, eps=_EPS, rngs=rngs)
        self.mlp = _Mlp(width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Transformer(nnx.Module):
    def __init__(self, width: int, layers: int, heads: int, *, rngs: nnx.Rngs | None):
        self.resblocks = nnx.List(
            [_ResidualAttentionBlock(width, heads, rngs=rngs) for _ in range(layers)]
        )


class _VisionTransformer(nnx.Module):
    def __init__(
        self,
        *,
        patch: int,
        grid: int,
        width: int,
        layers: int,
        heads: int,
        embed_dim: int,
        rngs: nnx.Rngs | None,
    ):
        self.conv1 = Conv2d(3, width, patch, stride=patch, bias=False, rngs=rngs)
        self.class_embedding = parameter((width,), rngs)
        self.positional_embedding = parameter((grid * grid + 1, width), rngs)
        self.ln_pre = LayerNorm(width, eps=_EPS, rngs=rngs)
        self.transformer = _Transformer(width, layers, heads, rngs=rngs)
        self.ln_post = LayerNorm(width, eps=_EPS, rngs=rngs)
        self.proj = parameter((width, embed_dim), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        x = self.conv1(x)
        batch, gh, gw, width = x.shape
        cls = jnp.broadcast_to(frozen(self.class_embedding, dtype), (batch, 1, width))
        x = jnp.concatenate([cls, x.reshape(batch, gh * gw, width)], axis=1)
        x = self.ln_pre(x + frozen(self.positional_embedding, dtype)[None])
        for block in self.transformer.resblocks:
            x = block(x)
        return self.ln_post(x[:, 0]) @ frozen(self.proj, dtype)


def _openai_keys(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The image tower in OpenAI's key layout, from an OpenAI or a ``transformers`` state dict."""
    if any(k.startswith("vision_model.") for k in state_dict):
        return _from_transformers(state_dict)
    if any(k.startswith("visual.") for k in state_dict):
        return {k: v for k, v in state_dict.items() if k.startswith("visual.")}
    return {f"visual.{k}": v for k, v in state_dict.items()}  # a bare image tower


def _from_transformers(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    renames = {
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    }
    layer_renames = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "self_attn.out_proj": "attn.out_proj",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    qkv: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        if key in renames:
            out[renames[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = np.ascontiguousarray(np.asarray(value).T)
        elif key.startswith("vision_model.encoder.layers."):
            parts = key.split(".")
            block = f"visual.transformer.resblocks.{parts[3]}"
            module, leaf = ".".join(parts[4:-1]), parts[-1]
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                name = "in_proj_weight" if leaf == "weight" else "in_proj_bias"
                qkv.setdefault(f"{block}.attn.{name}", {})[module[-6]] = value
            elif module in layer_renames:
                out[f"{block}.{layer_renames[module]}.{leaf}"] = value
            else:
                out[key] = value  # unknown: refused by name later
        elif key == "vision_model.embeddings.position_ids" or not key.startswith("vision_model."):
            continue  # an index buffer, or the text tower of a CLIPModel
        else:
            out[key] = value
    for key, parts in qkv.items():
        if set(parts) == {"q", "k", "v"}:
            out[key] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


def _example():
    model = CLIPVision(patch=8, grid=2, width=32, layers=2, heads=2, embed_dim=16, rngs=nnx.Rngs(0))
    graphdef, weights = nnx.split(model)
    images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), jnp.float32)
    return (lambda x, w: nnx.merge(graphdef, w)(x)), (images, weights)


@register(
    "clip-vision",
    kind="backbone",
    tier=1,
    domain="vision",
    jit_compatible=True,
    differentiable=True,
    example=lambda: _example(),
)
class CLIPVision(nnx.Module):
    """The image tower of OpenAI CLIP (Radford et al., 2021), frozen, on NHWC images in ``[0, 1]``.

    Build the released towers with ``calibrax.backbones.load("clip-vit-b32")`` (or
    ``"clip-vit-l14"``) after importing OpenAI's file once (``calibrax weights import clip-vit-b32
    ViT-B-32.pt``); the constructor alone gives zero weights (or random ones with ``rngs``).

    Tier-1 backbone interface: :attr:`input_size` ``(grid * patch, grid * patch)`` (224x224 for
    the released towers), :attr:`num_features` the embedding size (512 for B/32, 768 for L/14),
    :attr:`resize_method` ``"clean"``; ``__call__`` returns the projected image embedding.

    Args:
        patch: Patch size (32 or 14).
        grid: Patches per side (7 or 16 at 224 px).
        width: Token width.
        layers: Number of blocks.
        heads: Attention heads (``width // 64`` in the releases).
        embed_dim: Size of the projected embedding.
        rngs: Random keys for random weights; ``None`` leaves zeros.

    References:
        Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
        Supervision", arXiv:2103.00020; Kynkäänniemi et al., 2023, "The Role of ImageNet Classes
        in Fréchet Inception Distance", arXiv:2203.06026 (FID on CLIP features).
    """

    resize_method = "clean"
    mean = CLIP_MEAN
    std = CLIP_STD

    def __init__(
        self,
        *,
        patch: int,
        grid: int,
        width: int,
        layers: int,
        heads: int,
        embed_dim: int,
        rngs: nnx.Rngs | None = None,
    ):
        if width % heads:
            raise ValueError(f"expected `heads` to divide `width` ({width}), got {heads}")
        self.input_size = (grid * patch, grid * patch)
        self.num_features = embed_dim
        self.visual = _VisionTransformer(
            patch=patch,
            grid=grid,
            width=width,
            layers=layers,
            heads=heads,
            embed_dim=embed_dim,
            rngs=rngs,
        )

    def _check(self, images: jax.Array) -> None:
        checks.check_rank(images, 4, "images", "batch, height, width, channels")
        checks.check_dim(images, 3, 3, "images", "channels")
        checks.check_floating(images, "images")
        checks.check_nonempty(images, "images")
        if tuple(images.shape[1:3]) != self.input_size:
            h, w = self.input_size
            raise ValueError(
                f"expected `images` to be {h}x{w} pixels (CLIP's positional embeddings are not "
                f"interpolated; resize first), got shape {tuple(images.shape)}"
            )
        checks.check_finite(images, "images")
        checks.check_range(images, 0.0, 1.0, "images", hint="RGB scaled to [0, 1]")

    def _forward(self, images: jax.Array) -> jax.Array:
        dtype = images.dtype
        mean = jnp.asarray(np.reshape(self.mean, (1, 1, 1, 3)), dtype)
        std = jnp.asarray(np.reshape(self.std, (1, 1, 1, 3)), dtype)
        return self.visual((images - mean) / std)

    @checks.nan_if_invalid
    def __call__(self, images: Float[Array, "batch h w 3"]) -> Float[Array, "batch embed"]:
        """The projected image embedding of ``images``.

        Args:
            images: ``(batch, height, width, 3)`` float RGB in ``[0, 1]`` at :attr:`input_size`.
                Work is done in the input's dtype.

        Returns:
            ``(batch, embed_dim)`` embeddings (OpenAI's ``encode_image``; not unit-normalised).

        Raises:
            ValueError: If ``images`` is not 4-D with 3 channels, is empty, is not
                :attr:`input_size`, or (when concrete) holds NaN/Inf or values outside ``[0, 1]``.
            TypeError: If ``images`` is not floating point.
        """
        self._check(images)
        graphdef, state = nnx.split(self)
        return _jitted_forward(graphdef, state, images)


@functools.partial(jax.jit, static_argnums=0)
def _jitted_forward(graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)._forward(images)


def _builder(name: str):
    patch, width, layers, heads, embed_dim = CLIP_VARIANTS[name]

    def build(*, rngs: nnx.Rngs | None = None) -> CLIPVision:
        return CLIPVision(
            patch=patch,
            grid=CLIP_RESOLUTION.get(name, 224) // patch,
            width=width,
            layers=layers,
            heads=heads,
            embed_dim=embed_dim,
            rngs=rngs,
        )

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = f"The released {name} image tower (zero weights; see :class:`CLIPVision`)."
    return build


for _name in CLIP_VARIANTS:
    register_backbone(_name, _builder(_name), convert=_openai_keys)
