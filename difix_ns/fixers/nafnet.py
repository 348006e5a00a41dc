"""NAFNet: a nonlinear-activation-free U-Net image restorer.

Chen, Chu, Zhang, Sun. "Simple Baselines for Image Restoration", ECCV 2022 (arXiv:2204.04676).
Public reference: megvii-research/NAFNet, `basicsr/models/archs/NAFNet_arch.py` (read for the block layout and
hyperparameter names only: `width`, `enc_blk_nums`, `middle_blk_num`, `dec_blk_nums`, DW/FFN expansion 2,
LayerNorm2d eps 1e-6, skip-init scales `beta`/`gamma` initialised to zero, 2x2 stride-2 downsampling,
1x1 conv + PixelShuffle upsampling, global input residual).

Addition of this project (off by default): an optional reference input. Each reference view goes through its own
3x3 "intro" conv; the features are averaged over the R views and added to the target's intro features, so any
number of references (or none) works with the same weights.

Second addition (off by default, `warped_references=K > 0`): K reference views warped into the target camera by
depth (`difix_ns.geometry.warp_references`) and their validity masks enter as extra input channels of the intro
conv: [render (C), K x (warped view (C) + mask (1))]. The residual is still added to the render. A saved config
without the field (older checkpoints) loads with the default, 0: the original architecture.

The architecture only; training lives elsewhere. `NAFNetFixer` adapts it to the `Fixer` interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from jaxtyping import Float
from torch import Tensor, nn

from difix_ns.fixers.base import Fixer, WarpedViews

__all__ = ["LayerNorm2d", "SimpleGate", "NAFBlock", "NAFNet", "NAFNetFixer"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a [B,C,H,W] map, per pixel, with a learned per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H W"]:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) * torch.rsqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them (the activation that replaces GELU)."""

    def forward(self, x: Float[Tensor, "B C2 H W"]) -> Float[Tensor, "B C H W"]:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """The NAFNet block: LN -> 1x1 -> depthwise 3x3 -> SimpleGate -> simplified channel attention -> 1x1,
    then LN -> 1x1 -> SimpleGate -> 1x1; both branches added back through zero-initialised scales."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        # simplified channel attention
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        ffn = c * ffn_expand
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H W"]:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + self.dropout1(x) * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + self.dropout2(x) * self.gamma


class NAFNet(ModelMixin, ConfigMixin):
    """NAFNet U-Net. Input and output in the same range; the network predicts a residual added to the input.

    Args:
        img_channels: image channels in and out.
        width: channels at full resolution (doubled at each encoder level).
        enc_blk_nums: NAFBlocks per encoder level; its length is the number of 2x downsamplings.
        middle_blk_num: NAFBlocks at the lowest resolution.
        dec_blk_nums: NAFBlocks per decoder level; must have the same length as `enc_blk_nums`.
        use_reference: add a reference-view input (averaged over any number of views).
        dropout: dropout rate inside the blocks.
        warped_references: number K of depth-warped reference views (with their validity masks) taken as extra
            input channels; 0 (default) takes none.
    """

    @register_to_config
    def __init__(
        self,
        img_channels: int = 3,
        width: int = 16,
        enc_blk_nums: Sequence[int] = (1, 1, 1),
        middle_blk_num: int = 1,
        dec_blk_nums: Sequence[int] = (1, 1, 1),
        use_reference: bool = False,
        dropout: float = 0.0,
        warped_references: int = 0,
    ) -> None:
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(
                f"enc_blk_nums {list(enc_blk_nums)} and dec_blk_nums {list(dec_blk_nums)} must have the same length"
            )
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if warped_references < 0:
            raise ValueError(f"warped_references must be >= 0, got {warped_references}")
        self.intro = nn.Conv2d(img_channels + warped_references * (img_channels + 1), width, 3, padding=1)
        self.ref_intro = nn.Conv2d(img_channels, width, 3, padding=1) if use_reference else None
        self.ending = nn.Conv2d(width, img_channels, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.decoders, self.ups = nn.ModuleList(), nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan, dropout=dropout) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan, dropout=dropout) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan, dropout=dropout) for _ in range(num)]))
        self.size_multiple = 2 ** len(enc_blk_nums)

    def _with_warped(
        self, inp: Tensor, warped: Optional[Tensor], warped_mask: Optional[Tensor]
    ) -> Tensor:
        """The intro conv's input: `inp`, then each warped view followed by its mask, along the channels."""
        count = self.config.warped_references
        if count == 0:
            if warped is not None or warped_mask is not None:
                raise ValueError("this NAFNet takes no warped references (warped_references=0)")
            return inp
        b, c, h, w = inp.shape
        if warped is None or warped_mask is None or warped.shape != (b, count, c, h, w):
            raise ValueError(
                f"warped must be [B, K, C, H, W] = {(b, count, c, h, w)} with its warped_mask, got "
                f"{None if warped is None else tuple(warped.shape)}"
            )
        if warped_mask.shape != (b, count, 1, h, w):
            raise ValueError(
                f"warped_mask must be [B, K, 1, H, W] = {(b, count, 1, h, w)}, got {tuple(warped_mask.shape)}"
            )
        views = torch.cat([warped, warped_mask.to(warped.dtype)], dim=2).flatten(1, 2)
        return torch.cat([inp, views], dim=1)

    def forward(
        self,
        inp: Float[Tensor, "B C H W"],
        refs: Optional[Float[Tensor, "B R C H W"]] = None,
        warped: Optional[Float[Tensor, "B K C H W"]] = None,
        warped_mask: Optional[Float[Tensor, "B K 1 H W"]] = None,
    ) -> Float[Tensor, "B C H W"]:
        """H and W must be multiples of `size_multiple` (`NAFNetFixer` pads for you). `warped` and `warped_mask`
        (1 where valid) are required exactly when `config.warped_references` > 0."""
        h, w = inp.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"NAFNet needs H, W multiples of {self.size_multiple}, got {(h, w)}")
        x = self.intro(self._with_warped(inp, warped, warped_mask))
        if refs is not None and self.ref_intro is not None:
            feats = self.ref_intro(refs.flatten(0, 1)).unflatten(0, refs.shape[:2])
            x = x + feats.mean(dim=1)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)
        return self.ending(x) + inp


class NAFNetFixer(Fixer):
    """`Fixer` back-end around a `NAFNet` working on [0,1] images."""

    def __init__(self, net: Optional[NAFNet] = None) -> None:
        super().__init__()
        self.net = net if net is not None else NAFNet()
        self.size_multiple = self.net.size_multiple
        self.supports_refs = bool(self.net.config.use_reference)
        self.warped_references = int(self.net.config.warped_references)
        self._compiled: dict = {}

    def _run(self, images: Tensor, refs: Optional[Tensor], warped: Optional[WarpedViews] = None) -> Tensor:
        net = self._compiled.get("net", self.net)
        if self.runtime.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if warped is None:
            return net(images, refs)
        return net(images, refs, warped=warped.rgb, warped_mask=warped.mask)

    def _optimize(self, channels_last: bool, compile: bool) -> None:
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self._compiled["net"] = torch.compile(self.net)
        else:
            self._compiled.pop("net", None)

    def save_pretrained(self, folder: Union[str, Path]) -> None:
        """Save the network (`config.json` + `diffusion_pytorch_model.safetensors`) into `folder`."""
        self.net.save_pretrained(str(folder))

    @classmethod
    def from_pretrained(cls, folder: Union[str, Path]) -> "NAFNetFixer":
        """Load a folder written by `save_pretrained`; names the missing file if the folder is incomplete."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"NAFNet checkpoint folder not found: {folder}")
        missing = [n for n in ("config.json",) if not (folder / n).is_file()]
        weights = [p for p in folder.iterdir() if p.name.startswith("diffusion_pytorch_model")]
        if not weights:
            missing.append("diffusion_pytorch_model.safetensors")
        if missing:
            raise FileNotFoundError(f"NAFNet checkpoint folder {folder} is incomplete: missing {', '.join(missing)}")
        return cls(NAFNet.from_pretrained(str(folder)))
