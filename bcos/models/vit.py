"""Simple vision transformers (Beyer et al., 2022), optionally with a convolutional stem (Xiao et al., 2021).

One architecture serves both the B-cos and the standard models; the layer classes are injected:
``linear_layer``, ``norm_layer`` (LayerNorm-like, over the last dimension), ``act_layer``,
``norm2d_layer`` and ``conv2d_layer`` (the last two only for the conv stem). The defaults are the
B-cos layers of the released models; :func:`standard_vit_kwargs` gives the standard ones.

Layout (the state-dict keys equal the reference's, so released weights load with ``strict=True``)::

    to_patch_embedding  [conv_stem: (conv2d, norm2d, act) per width] -> patchify -> linear
    + 2-D sin-cos positional embedding (computed for the actual patch grid)
    transformer.encoder_<i>: x + attn(x), then x + ff(x)        (pre-norm in both)
    mean over tokens -> to_latent (identity) -> linear_head (norm -> linear)

The builders (``simple_vit_ti_patch16_224``, ``vitc_ti_patch1_14``, ...) return the bare
:class:`SimpleViT`, exactly like the reference's, because the experiment configs add the
``LogitLayer`` themselves. A complete B-cos ViT as released is
``BcosSequential(SimpleViT, LogitLayer(logit_bias))`` (state-dict prefix ``0.``); build it with
:func:`make_bcos_vit`.

Note: a B-cos ViT is not exactly dynamic linear: the positional embedding is added independently of
the input, so its contributions do not sum to the logit (CNNs' do).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bcos.errors import ConfigError, InputError, unknown_name
from bcos.models.base import BcosSequential
from bcos.models.registry import Family, Published, register_architecture
from bcos.modules import BcosConv2d, BcosLinear, LogitLayer
from bcos.modules.explanation_mode import DetachableModule
from bcos.modules.norms import DetachableGNLayerNorm2d, DetachableLayerNorm, NoBias

__all__ = [
    "SimpleViT",
    "PosEmbSinCos2d",
    "Patchify",
    "Attention",
    "FeedForward",
    "Encoder",
    "Transformer",
    "make_conv_stem",
    "bcos_vit_kwargs",
    "standard_vit_kwargs",
    "make_bcos_vit",
    "make_standard_vit",
    "VIT_ARCHITECTURES",
    "VIT",
    "vit_final_logit_bias",
    "simple_vit_ti_patch16_224",
    "simple_vit_s_patch16_224",
    "simple_vit_b_patch16_224",
    "simple_vit_l_patch16_224",
    "vitc_ti_patch1_14",
    "vitc_s_patch1_14",
    "vitc_b_patch1_14",
    "vitc_l_patch1_14",
]

LayerFactory = Callable[..., nn.Module]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


class PosEmbSinCos2d(nn.Module):
    """2-D sine-cosine positional embedding for a [N, h, w, D] patch grid -> [h*w, D].

    With ω_i = 1 / T^(i / (D/4 - 1)) for i < D/4, the embedding of patch (y, x) is
    ``[sin(x·ω), cos(x·ω), sin(y·ω), cos(y·ω)]``. It is computed for the grid it is given, so
    other input sizes work.
    """

    def __init__(self, temperature: float = 10_000) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, patches: Tensor) -> Tensor:
        h, w, dim = patches.shape[-3:]
        device = patches.device
        quarter = dim // 4
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        omega = torch.arange(quarter, device=device) / (quarter - 1)
        omega = 1.0 / (self.temperature**omega)
        ys = ys.flatten()[:, None] * omega[None, :]
        xs = xs.flatten()[:, None] * omega[None, :]
        embedding = torch.cat((xs.sin(), xs.cos(), ys.sin(), ys.cos()), dim=1)
        return embedding.to(patches.dtype)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class Patchify(nn.Module):
    """[N, C, h·p1, w·p2] -> [N, h, w, p1·p2·C] (patch pixels row-major, channels fastest)."""

    def __init__(self, patch_height: int, patch_width: int) -> None:
        super().__init__()
        self.patch_height = patch_height
        self.patch_width = patch_width

    def forward(self, x: Tensor) -> Tensor:
        n, c, height, width = x.shape
        p1, p2 = self.patch_height, self.patch_width
        if height % p1 or width % p2:
            raise InputError(
                f"input size {height}x{width} is not divisible by the patch size {p1}x{p2}; resize or crop the images"
            )
        h, w = height // p1, width // p2
        x = x.reshape(n, c, h, p1, w, p2).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(n, h, w, p1 * p2 * c)

    def extra_repr(self) -> str:
        return f"patch_size=({self.patch_height}, {self.patch_width})"


class FeedForward(nn.Module):
    """Pre-norm MLP: norm -> linear1 (dim -> hidden) -> act -> linear2 (hidden -> dim)."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        linear_layer: LayerFactory,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            OrderedDict(
                norm=norm_layer(dim),
                linear1=linear_layer(dim, hidden_dim),
                act=act_layer(),
                linear2=linear_layer(hidden_dim, dim),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Attention(DetachableModule):
    """Pre-norm multi-head self-attention.

    ``to_qkv`` is a plain bias-free ``nn.Linear`` (as in the released models); ``to_out`` is the
    injected linear layer. In explanation mode q and k are detached, so the attention matrix acts
    as a constant (dynamic) weight on the values.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, linear_layer: LayerFactory, norm_layer: LayerFactory) -> None:
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.norm = norm_layer(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = linear_layer(inner_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n, tokens, _ = x.shape
        x = self.norm(x)
        qkv = self.to_qkv(x).reshape(n, tokens, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [N, heads, tokens, dim_head]
        if self.detach:
            q = q.detach()
            k = k.detach()
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(n, tokens, self.heads * self.dim_head)
        return self.to_out(out)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, dim_head={self.dim_head}"


class Encoder(nn.Module):
    """One transformer block: ``x + attn(x)`` followed by ``x + ff(x)``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        linear_layer: LayerFactory,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
    ) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, linear_layer=linear_layer, norm_layer=norm_layer)
        self.ff = FeedForward(dim, mlp_dim, linear_layer=linear_layer, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(x) + x
        return self.ff(x) + x


class Transformer(nn.Sequential):
    """``depth`` encoders named ``encoder_0`` ... ``encoder_<depth-1>``."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        linear_layer: LayerFactory,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
    ) -> None:
        super().__init__(
            OrderedDict(
                (f"encoder_{i}", Encoder(dim, heads, dim_head, mlp_dim, linear_layer, norm_layer, act_layer))
                for i in range(depth)
            )
        )


def make_conv_stem(
    in_channels: int,
    widths: Sequence[int],
    conv2d_layer: LayerFactory,
    norm2d_layer: LayerFactory,
    act_layer: LayerFactory,
) -> nn.Sequential:
    """Conv stem: per width a 3x3 conv (stride 2 when the width grows, else 1) -> norm2d -> act."""
    layers: list[nn.Module] = []
    for width in widths:
        stride = 2 if width > in_channels else 1
        layers += [
            conv2d_layer(in_channels, width, kernel_size=3, stride=stride, padding=1),
            norm2d_layer(width),
            act_layer(),
        ]
        in_channels = width
    return nn.Sequential(*layers)


def bcos_vit_kwargs(b: float = 2, max_out: int = 1) -> dict[str, Any]:
    """Layer arguments of the released B-cos ViTs (6-channel ``[x, 1-x]`` input)."""
    return dict(
        linear_layer=partial(BcosLinear, b=b, max_out=max_out),
        conv2d_layer=partial(BcosConv2d, b=b, max_out=max_out),
        norm_layer=NoBias(DetachableLayerNorm),
        norm2d_layer=NoBias(DetachableGNLayerNorm2d),
        act_layer=nn.Identity,
        channels=6,
    )


def standard_vit_kwargs() -> dict[str, Any]:
    """Layer arguments of the standard (non-B-cos) ViTs of the reference (3-channel input)."""
    return dict(
        linear_layer=nn.Linear,
        conv2d_layer=nn.Conv2d,
        norm_layer=nn.LayerNorm,
        norm2d_layer=DetachableGNLayerNorm2d,
        act_layer=nn.GELU,
        channels=3,
    )


def _token_map(embedding: nn.Module, positions: nn.Module, transformer: nn.Module, images: Tensor) -> Tensor:
    """Images -> encoded tokens laid out on their patch grid, [N, D, h, w]."""
    patches = embedding(images)  # [N, h, w, D]
    n, h, w, dim = patches.shape
    tokens = transformer(patches.reshape(n, h * w, dim) + positions(patches))
    return tokens.transpose(1, 2).reshape(n, dim, h, w)


def _classify_token_map(to_latent: nn.Module, head: nn.Module, features: Tensor) -> Tensor:
    """[N, D, h, w] token map -> logits: mean over tokens, to_latent, head."""
    return head(to_latent(features.flatten(2).mean(dim=2)))


class _TokenFeatures(nn.Module):
    """Feature extractor of a SimpleViT (shares its embedding, positions and transformer)."""

    def __init__(self, vit: SimpleViT) -> None:
        super().__init__()
        self.to_patch_embedding = vit.to_patch_embedding
        self.positional_embedding = vit.positional_embedding
        self.transformer = vit.transformer

    def forward(self, images: Tensor) -> Tensor:
        return _token_map(self.to_patch_embedding, self.positional_embedding, self.transformer, images)


class _TokenHead(nn.Module):
    """Classifier of a SimpleViT (shares its to_latent and linear_head)."""

    def __init__(self, vit: SimpleViT) -> None:
        super().__init__()
        self.to_latent = vit.to_latent
        self.linear_head = vit.linear_head

    def forward(self, features: Tensor) -> Tensor:
        return _classify_token_map(self.to_latent, self.linear_head, features)


class SimpleViT(nn.Module):
    """Simple ViT: patch embedding, sin-cos positions, pre-norm encoders, mean pooling, linear head.

    Args:
        image_size, patch_size: nominal input and patch size (an int or (height, width)); the image
            size must be divisible by the patch size. Other input sizes work as long as they are
            divisible too (the positional embedding follows the grid).
        num_classes, dim, depth, heads, mlp_dim: width and depth; ``dim`` must be divisible by
            ``heads`` and by 4; each head has ``dim // heads`` features.
        channels: input channels (6 for B-cos ``[x, 1-x]`` images, 3 for standard ones).
        linear_layer, norm_layer, act_layer, norm2d_layer, conv2d_layer: injected layer classes;
            None means the B-cos layer (see :func:`bcos_vit_kwargs`).
        conv_stem: output widths of the conv stem, or None for no stem.
    """

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        channels: int = 6,
        linear_layer: LayerFactory | None = None,
        norm_layer: LayerFactory | None = None,
        act_layer: LayerFactory | None = None,
        norm2d_layer: LayerFactory | None = None,
        conv2d_layer: LayerFactory | None = None,
        conv_stem: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        defaults = bcos_vit_kwargs()
        linear_layer = linear_layer or defaults["linear_layer"]
        norm_layer = norm_layer or defaults["norm_layer"]
        act_layer = act_layer or defaults["act_layer"]
        norm2d_layer = norm2d_layer or defaults["norm2d_layer"]
        conv2d_layer = conv2d_layer or defaults["conv2d_layer"]

        image_height, image_width = _pair(image_size)
        patch_height, patch_width = _pair(patch_size)
        if image_height % patch_height or image_width % patch_width:
            raise ConfigError(
                f"image_size {image_size} must be divisible by patch_size {patch_size}; change one of them"
            )
        if dim % heads:
            raise ConfigError(f"dim ({dim}) must be divisible by heads ({heads})")
        if dim % 4 or dim < 8:
            raise ConfigError(f"dim ({dim}) must be a multiple of 4 and at least 8 for the sin-cos position embedding")
        if min(num_classes, depth, heads, mlp_dim, channels) < 1:
            raise ConfigError("num_classes, depth, heads, mlp_dim and channels must be positive")

        self.image_size = (image_height, image_width)
        self.patch_size = (patch_height, patch_width)
        self.in_channels = channels
        self.num_classes = num_classes
        self.num_patches = (image_height // patch_height) * (image_width // patch_width)
        stem_channels = channels if not conv_stem else conv_stem[-1]
        self.patch_dim = stem_channels * patch_height * patch_width

        embedding: OrderedDict[str, nn.Module] = OrderedDict()
        if conv_stem:
            embedding["conv_stem"] = make_conv_stem(channels, conv_stem, conv2d_layer, norm2d_layer, act_layer)
        embedding["rearrange"] = Patchify(patch_height, patch_width)
        embedding["linear"] = linear_layer(self.patch_dim, dim)
        self.to_patch_embedding = nn.Sequential(embedding)
        self.positional_embedding = PosEmbSinCos2d()
        self.transformer = Transformer(dim, depth, heads, dim // heads, mlp_dim, linear_layer, norm_layer, act_layer)
        self.to_latent = nn.Identity()
        self.linear_head = nn.Sequential(OrderedDict(norm=norm_layer(dim), linear=linear_layer(dim, num_classes)))

    def forward_features(self, images: Tensor) -> Tensor:
        """Token features after the last encoder, as a [N, D, h, w] map over the patch grid."""
        return _token_map(self.to_patch_embedding, self.positional_embedding, self.transformer, images)

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits from a [N, D, h, w] token map: mean over tokens, then the linear head."""
        return _classify_token_map(self.to_latent, self.linear_head, features)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    def get_feature_extractor(self) -> nn.Module:
        """Module mapping images to the token features before the head, shaped [N, D, h, w].

        The tokens are laid out on their patch grid so that map-based methods (GradCAM) can use
        them like a CNN's last feature map. ``get_classifier()(get_feature_extractor()(x))``
        equals ``self(x)``; both share this model's parameters.
        """
        return _TokenFeatures(self)

    def get_classifier(self) -> nn.Module:
        """Module mapping the [N, D, h, w] token map to logits (mean pooling and ``linear_head``)."""
        return _TokenHead(self)


# --------------------------------------------------------------------------------------------
# How the vit_final collection builds ViTs, and the published models
# --------------------------------------------------------------------------------------------
def vit_final_logit_bias(num_classes: int) -> float:
    """The B-cos ViTs' logit bias as vit_final writes it, ``log(1 / (C - 1))`` (verbatim, for
    bit-identical logits; 0 for a single class)."""
    return math.log(1 / (num_classes - 1)) if num_classes > 1 else 0.0


def _vit_layers(is_bcos: bool, bcos_args: Mapping[str, Any]) -> dict[str, Any]:
    if not is_bcos:
        return standard_vit_kwargs()
    return {
        **bcos_vit_kwargs(),
        "linear_layer": partial(BcosLinear, **bcos_args),
        "conv2d_layer": partial(BcosConv2d, **bcos_args),
    }


def _vit_recipe(is_bcos: bool, num_classes: int, bcos_args: Mapping[str, Any]) -> dict[str, Any]:
    recipe = {"num_classes": num_classes, **_vit_layers(is_bcos, bcos_args)}
    if is_bcos:
        recipe["logit_bias"] = vit_final_logit_bias(num_classes)
    return recipe


def _assemble_vit(builder: Callable[..., SimpleViT], is_bcos: bool, bcos_args: Mapping[str, Any], args: dict[str, Any]) -> nn.Module:
    args = dict(args)
    logit_bias = args.pop("logit_bias", None) if is_bcos else None
    if "linear_layer" not in args or "conv2d_layer" not in args:  # a caller may inject its own
        layers = _vit_layers(is_bcos, bcos_args)
        args.update(linear_layer=layers["linear_layer"], conv2d_layer=layers["conv2d_layer"])
    vit = builder(**args)
    if not is_bcos:
        return vit
    if logit_bias is None:
        raise ConfigError("a B-cos ViT needs a logit_bias (vit_final configs: model.logit_bias = log(1 / (num_classes - 1)))")
    return BcosSequential(vit, LogitLayer(logit_bias=logit_bias))


#: The simple ViTs: linear/conv layers from ``bcos_args`` (or the standard ones); a B-cos ViT is
#: wrapped as ``BcosSequential(vit, LogitLayer(logit_bias))``.
VIT = Family("ViT", recipe=_vit_recipe, assemble=_assemble_vit)


def _published(arch: str, description: str, bcos: tuple, standard: tuple) -> tuple[Published, Published]:
    """The B-cos and the standard model of ``arch`` in vit_final, each as (sha256 prefix, top-1, top-5, parameters)."""
    bcos_hash, *bcos_numbers = bcos
    standard_hash, *standard_numbers = standard
    return (
        Published(arch, f"vit_final/bcos_{arch}", f"bcos_{arch}-{bcos_hash}.pth", *bcos_numbers, f"B-cos {description}"),
        Published(
            f"standard_{arch}", f"vit_final/{arch}", f"standard_{arch}-{standard_hash}.pth", *standard_numbers,
            f"standard (non-B-cos) {description}", is_bcos=False,
        ),
    )  # fmt: skip


def _builder(name: str, doc: str, published: tuple[Published, ...], **architecture: Any) -> Callable[..., SimpleViT]:
    def build(**kwargs: Any) -> SimpleViT:
        kwargs.setdefault("num_classes", 1000)
        clashes = sorted(set(kwargs) & set(architecture))
        if clashes:
            raise TypeError(f"{name}() fixes {', '.join(clashes)}; build SimpleViT directly to change them")
        return SimpleViT(**architecture, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"{doc}\n\nReturns a bare :class:`SimpleViT` (B-cos layers unless ``standard_vit_kwargs()`` "
        "are passed); keyword arguments go to SimpleViT (num_classes defaults to 1000)."
    )
    return register_architecture(*published, family=VIT)(build)


# depth is one lower for the conv-stem models, to account for the stem (Xiao et al.)
simple_vit_ti_patch16_224 = _builder(
    "simple_vit_ti_patch16_224", "ViT-Ti/16 at 224px.", image_size=224, patch_size=16, depth=12, dim=192, heads=3, mlp_dim=768,
    published=_published("simple_vit_ti_patch16_224", "Simple ViT-Ti/16",
                         ("4b0824b1c1", 59.960, 81.838, 5_800_128), ("2ae8c65a39", 70.230, 89.380, 5_670_184)),
)
simple_vit_s_patch16_224 = _builder(
    "simple_vit_s_patch16_224", "ViT-S/16 at 224px.", image_size=224, patch_size=16, depth=12, dim=384, heads=6, mlp_dim=1536,
    published=_published("simple_vit_s_patch16_224", "Simple ViT-S/16",
                         ("75e99d1f73", 69.246, 88.096, 22_217_088), ("f2934fcdcf", 74.470, 91.226, 21_956_200)),
)
simple_vit_b_patch16_224 = _builder(
    "simple_vit_b_patch16_224", "ViT-B/16 at 224px.", image_size=224, patch_size=16, depth=12, dim=768, heads=12, mlp_dim=3072,
    published=_published("simple_vit_b_patch16_224", "Simple ViT-B/16",
                         ("1fc4750806", 74.408, 91.156, 86_901_504), ("87074200ed", 75.300, 91.026, 86_378_728)),
)
simple_vit_l_patch16_224 = _builder(
    "simple_vit_l_patch16_224", "ViT-L/16 at 224px (depth 14).", image_size=224, patch_size=16, depth=14, dim=1024, heads=16, mlp_dim=4096,
    published=_published("simple_vit_l_patch16_224", "Simple ViT-L/16",
                         ("9613b2ad0a", 75.060, 91.378, 178_787_328), ("62dc536e03", 75.710, 90.050, 178_104_296)),
)
vitc_ti_patch1_14 = _builder(
    "vitc_ti_patch1_14", "ViT-Ti with a conv stem (224px -> 14x14 tokens).",
    image_size=14, patch_size=1, depth=11, dim=192, heads=3, mlp_dim=768, conv_stem=[24, 48, 96, 192],
    published=_published("vitc_ti_patch1_14", "Simple ViT-Ti with a conv stem",
                         ("ddd6193a77", 67.260, 86.774, 5_318_712), ("a5d6bded37", 72.590, 90.788, 5_334_952)),
)
vitc_s_patch1_14 = _builder(
    "vitc_s_patch1_14", "ViT-S with a conv stem (224px -> 14x14 tokens).",
    image_size=14, patch_size=1, depth=11, dim=384, heads=6, mlp_dim=1536, conv_stem=[48, 96, 192, 384],
    published=_published("vitc_s_patch1_14", "Simple ViT-S with a conv stem",
                         ("cf55c88f0c", 74.504, 91.288, 20_878_704), ("34ecd7288e", 75.756, 91.994, 20_910_184)),
)
vitc_b_patch1_14 = _builder(
    "vitc_b_patch1_14", "ViT-B with a conv stem (224px -> 14x14 tokens).",
    image_size=14, patch_size=1, depth=11, dim=768, heads=12, mlp_dim=3072, conv_stem=[64, 128, 128, 256, 256, 512],
    published=_published("vitc_b_patch1_14", "Simple ViT-B with a conv stem",
                         ("a13c46397b", 77.152, 92.926, 81_326_016), ("4d374b0220", 76.790, 92.024, 81_388_648)),
)
vitc_l_patch1_14 = _builder(
    "vitc_l_patch1_14", "ViT-L with a conv stem (224px -> 14x14 tokens).",
    image_size=14, patch_size=1, depth=13, dim=1024, heads=16, mlp_dim=4096, conv_stem=[64, 128, 128, 256, 256, 512],
    published=_published("vitc_l_patch1_14", "Simple ViT-L with a conv stem",
                         ("8739e18b8d", 77.782, 92.966, 167_444_160), ("560e48f246", 77.866, 92.298, 167_541_352)),
)

#: architecture name -> builder
VIT_ARCHITECTURES: dict[str, Callable[..., SimpleViT]] = {
    builder.__name__: builder
    for builder in (
        simple_vit_ti_patch16_224,
        simple_vit_s_patch16_224,
        simple_vit_b_patch16_224,
        simple_vit_l_patch16_224,
        vitc_ti_patch1_14,
        vitc_s_patch1_14,
        vitc_b_patch1_14,
        vitc_l_patch1_14,
    )
}


def _get_builder(arch: str) -> Callable[..., SimpleViT]:
    if arch not in VIT_ARCHITECTURES:
        raise unknown_name("ViT architecture", arch, VIT_ARCHITECTURES)
    return VIT_ARCHITECTURES[arch]


def make_bcos_vit(
    arch: str,
    *,
    logit_bias: float | None = None,
    logit_temperature: float | None = None,
    b: float = 2,
    max_out: int = 1,
    **kwargs: Any,
) -> BcosSequential:
    """A complete B-cos ViT as released: ``BcosSequential(SimpleViT, LogitLayer)``.

    ``logit_bias`` defaults to ``-log(num_classes - 1)`` (a sigmoid prior of 1/num_classes); pass
    0.0 for no bias. Other keyword arguments go to the architecture builder.
    """
    layers = bcos_vit_kwargs(b=b, max_out=max_out)
    layers.update(kwargs)
    vit = _get_builder(arch)(**layers)
    if logit_bias is None:
        logit_bias = -math.log(vit.num_classes - 1) if vit.num_classes > 1 else 0.0
    return BcosSequential(vit, LogitLayer(logit_bias=logit_bias, logit_temperature=logit_temperature))


def make_standard_vit(arch: str, **kwargs: Any) -> SimpleViT:
    """A standard (non-B-cos) ViT of the reference: nn.Linear/nn.Conv2d, LayerNorm, GELU, 3 channels."""
    layers = standard_vit_kwargs()
    layers.update(kwargs)
    return _get_builder(arch)(**layers)
