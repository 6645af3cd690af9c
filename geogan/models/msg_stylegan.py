"""MSG-StyleGAN: unconditional multi-band tiles, after "Generating synthetic multispectral satellite
imagery from Sentinel-2" (MSG-StyleGAN trained on SEN12MS) and MSG-GAN (Karnewar & Wang 2020).

The generator is StyleGAN2-like: a mapping network turns ``z`` into a style ``w`` that modulates
every convolution, with per-pixel noise, from a learned 4 x 4 constant up to the tile size. Each
block also emits an image of every band (multi-scale gradients, MSG); the discriminator reads the
image of each scale at the depth of the matching resolution, joined to its features by a
selectable combine function, so gradients reach every generator block directly.

Each block's image is the previous block's image upsampled plus the block's own output (the
"skip" generator of StyleGAN2, which took its multi-scale outputs from MSG-GAN): the coarse
blocks set a tile's overall spectrum, the fine ones add detail, and every scale's image is a
coarser view of the final one, as the real tiles' average-pooled pyramid is. Measured on the
tiny test configuration (16 px, 128 chips, 200 steps, seeds 0-3), it ends nearer the tiles'
per-band spread than separate per-block images did (std error 0.08-0.19 against 0.19-0.27),
whose samples grew smoother with training.
"""

from __future__ import annotations

import contextlib
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geogan.models.augment import AdaptiveProbability, augment
from geogan.models.blocks import (
    EqualConv2d,
    EqualLinear,
    MappingNetwork,
    MinibatchStdDev,
    StyledConv,
    ToBands,
)
from geogan.models.options import MSGStyleGANOptions
from geogan.training import DataInfo, TrainTask, fitted


def channels(resolution: int, base: int, cap: int) -> int:
    """Feature maps at ``resolution``: ``base / resolution``, at most ``cap`` and at least 1."""
    return max(1, min(base // resolution, cap))


def resolutions(top: int) -> list[int]:
    """4, 8, ..., top."""
    return [2**k for k in range(2, int(math.log2(top)) + 1)]


def pyramid(image: Tensor, levels: int) -> list[Tensor]:
    """The image at ``levels`` scales by 2 x 2 averaging, smallest first (matching the generator)."""
    out = [image]
    for _ in range(levels - 1):
        out.append(F.avg_pool2d(out[-1], 2))
    return out[::-1]


class MSGGenerator(nn.Module):
    """z -> images of ``bands`` channels at 4, 8, ..., ``resolution`` px (smallest first)."""

    def __init__(
        self,
        bands: int,
        resolution: int,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 16_384,
        channel_max: int = 512,
    ):
        super().__init__()
        self.z_dim, self.bands, self.resolution = z_dim, bands, resolution
        ch = [channels(r, channel_base, channel_max) for r in resolutions(resolution)]
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))
        self.blocks = nn.ModuleList([nn.ModuleList([StyledConv(ch[0], ch[0], w_dim)])])
        for a, b in zip(ch, ch[1:], strict=False):
            self.blocks.append(nn.ModuleList([StyledConv(a, b, w_dim, up=True), StyledConv(b, b, w_dim)]))
        self.outputs = nn.ModuleList([ToBands(c, bands, w_dim) for c in ch])

    def forward(self, z: Tensor) -> list[Tensor]:
        w = self.mapping(z)
        x = self.const.expand(z.shape[0], -1, -1, -1)
        images: list[Tensor] = []
        for block, to_bands in zip(self.blocks, self.outputs, strict=True):
            for layer in cast(nn.ModuleList, block):
                x = layer(x, w)
            image = to_bands(x, w)
            if images:
                coarser = F.interpolate(images[-1], scale_factor=2, mode="bilinear", align_corners=False)
                image = image + coarser
            images.append(image)
        return images


class Combine(nn.Module):
    """Joins a scale's image to the discriminator features of the same resolution (MSG-GAN).

    ``simple``: concatenate; ``lin_cat``: a 1 x 1 convolution of the image, then concatenate;
    ``cat_lin``: concatenate, then a 1 x 1 convolution back to the feature width.
    """

    def __init__(self, kind: str, features: int, bands: int):
        super().__init__()
        self.kind = kind
        if kind == "simple":
            self.out_channels = features + bands
        elif kind == "lin_cat":
            self.image_conv = EqualConv2d(bands, features, 1, act=True)
            self.out_channels = 2 * features
        elif kind == "cat_lin":
            self.joint_conv = EqualConv2d(features + bands, features, 1, act=True)
            self.out_channels = features
        else:
            raise ValueError(f"unknown combine function {kind!r}; choose simple, lin_cat or cat_lin")

    def forward(self, features: Tensor, image: Tensor) -> Tensor:
        if self.kind == "lin_cat":
            return torch.cat([features, self.image_conv(image)], dim=1)
        joined = torch.cat([features, image], dim=1)
        return self.joint_conv(joined) if self.kind == "cat_lin" else joined


class MSGDiscriminator(nn.Module):
    """Images at 4, 8, ..., ``resolution`` px (smallest first) -> one logit per tile."""

    def __init__(
        self,
        bands: int,
        resolution: int,
        channel_base: int = 16_384,
        channel_max: int = 512,
        combine: str = "cat_lin",
        mbstd_group: int = 4,
    ):
        super().__init__()
        res = resolutions(resolution)[::-1]  # top, ..., 4
        ch = [channels(r, channel_base, channel_max) for r in res]
        self.from_bands = EqualConv2d(bands, ch[0], 1, act=True)
        self.blocks = nn.ModuleList()
        self.combines = nn.ModuleList()
        width = ch[0]
        for i in range(len(res) - 1):
            self.blocks.append(
                nn.Sequential(
                    EqualConv2d(width, ch[i], 3, act=True), EqualConv2d(ch[i], ch[i + 1], 3, act=True)
                )
            )
            combine_layer = Combine(combine, ch[i + 1], bands)
            self.combines.append(combine_layer)
            width = combine_layer.out_channels
        self.mbstd = MinibatchStdDev(mbstd_group)
        self.final_conv = EqualConv2d(width + 1, ch[-1], 3, act=True)
        self.final_fc = EqualLinear(ch[-1] * 16, ch[-1], act=True)
        self.out = EqualLinear(ch[-1], 1)

    def forward(self, images: list[Tensor]) -> Tensor:
        scales = images[::-1]  # top first
        if len(scales) != len(self.blocks) + 1:
            raise ValueError(f"expected images at {len(self.blocks) + 1} scales, got {len(scales)}")
        x = self.from_bands(scales[0])
        for block, combine, image in zip(self.blocks, self.combines, scales[1:], strict=True):
            x = F.avg_pool2d(block(x), 2)
            x = combine(x, image)
        x = self.final_conv(self.mbstd(x))
        return self.out(self.final_fc(x.flatten(1))).squeeze(1)


@contextlib.contextmanager
def _inner_gradient():
    """Let R1's ``torch.autograd.grad`` through Lightning Fabric's guard. Under bf16-mixed precision
    Fabric hooks every module output to insist that gradients come from ``fabric.backward``, which
    bf16 (no loss scaler) only needs for the loss itself; a gradient inside the step is fine. Without
    this, MSG-StyleGAN failed at its first R1 step in bf16 (on a CPU with ``--precision bf16``, and
    on CUDA where bf16 is the default)."""
    from lightning.fabric import wrappers

    inside = getattr(wrappers, "_in_fabric_backward", None)
    if inside is None:  # a Lightning without the guard
        yield
        return
    wrappers._in_fabric_backward = True
    try:
        yield
    finally:
        wrappers._in_fabric_backward = inside


class MSGStyleGANTask(TrainTask):
    """Non-saturating logistic loss, lazy R1 on real tiles, DiffAugment (optionally ADA's p)."""

    name = "msg-stylegan"
    options: MSGStyleGANOptions

    def __init__(self, options: MSGStyleGANOptions, data: DataInfo) -> None:
        super().__init__(options, data)
        if data.resolution != options.resolution:
            raise ValueError(
                f"the tiles are {data.resolution} px but the model is set to {options.resolution} px; "
                f"set resolution: {data.resolution} (or re-tile)"
            )
        self.resolution = fitted(options.resolution, "resolution")
        self.levels = len(resolutions(self.resolution))
        self.ada = (
            AdaptiveProbability(options.augment_p, options.ada_target, options.ada_images)
            if options.ada_target is not None
            else None
        )
        self.last_r1 = 0.0

    @property
    def augment_p(self) -> float:
        return self.ada.p if self.ada is not None else self.options.augment_p

    def build(self) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
        o = self.options
        g = MSGGenerator(
            self.data.channels,
            self.resolution,
            o.z_dim,
            o.w_dim,
            o.mapping_layers,
            o.channel_base,
            o.channel_max,
        )
        d = MSGDiscriminator(
            self.data.channels, self.resolution, o.channel_base, o.channel_max, o.combine, o.mbstd_group
        )
        # Lazy regularisation (StyleGAN2): scale the discriminator's Adam to its effective step count.
        ratio = o.r1_every / (o.r1_every + 1) if o.r1_gamma > 0 else 1.0
        opt_g = torch.optim.Adam(g.parameters(), lr=o.lr_g, betas=o.betas, eps=1e-8)
        opt_d = torch.optim.Adam(
            d.parameters(), lr=o.lr_d * ratio, betas=(o.betas[0] ** ratio, o.betas[1] ** ratio), eps=1e-8
        )
        return {"generator": g, "discriminator": d}, {"generator": opt_g, "discriminator": opt_d}

    def _augment(self, images: list[Tensor]) -> list[Tensor]:
        return augment(images, self.options.augment, self.augment_p)

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        o = self.options
        g, d = self.nets["generator"], self.nets["discriminator"]
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        real = batch["image"]
        n = real.shape[0]

        # Discriminator: real tiles up, generated tiles down.
        d.requires_grad_(True)
        with torch.no_grad():
            fakes = g(torch.randn(n, o.z_dim, device=real.device))
        fake_logits = d(self._augment(fakes))
        real_logits = d(self._augment(pyramid(real, self.levels)))
        loss_d = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        opt_d.zero_grad(set_to_none=True)
        self.fabric.backward(loss_d)
        opt_d.step()
        if self.ada is not None:
            self.ada.observe(real_logits)

        # Lazy R1: the squared gradient of D at real tiles, every r1_every steps, scaled up to match.
        if o.r1_gamma > 0 and step % o.r1_every == 0:
            real_r1 = real.detach().requires_grad_(True)
            logits = d(self._augment(pyramid(real_r1, self.levels)))
            with _inner_gradient():
                (grad,) = torch.autograd.grad(logits.sum(), real_r1, create_graph=True)
            penalty = grad.float().square().sum(dim=(1, 2, 3)).mean()
            opt_d.zero_grad(set_to_none=True)
            self.fabric.backward(penalty * (o.r1_gamma / 2) * o.r1_every + 0 * logits.sum())
            opt_d.step()
            self.last_r1 = penalty.item()

        # Generator: non-saturating logistic loss through the (frozen) discriminator.
        d.requires_grad_(False)
        gen_logits = d(self._augment(g(torch.randn(n, o.z_dim, device=real.device))))
        loss_g = F.softplus(-gen_logits).mean()
        opt_g.zero_grad(set_to_none=True)
        self.fabric.backward(loss_g)
        opt_g.step()
        d.requires_grad_(True)

        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "r1": self.last_r1,
            "d_real": real_logits.mean().item(),
            "d_fake": fake_logits.mean().item(),
            "augment_p": self.augment_p,
        }

    def sample(self, generator: nn.Module, batch: dict) -> dict[str, Tensor]:
        n = len(batch["image"])
        device = next(generator.parameters()).device
        z = torch.randn(n, self.options.z_dim, device=device)
        return {"image": generator(z)[-1].float().clamp(-1, 1)}

    def extra_state(self) -> dict:
        return (
            {"ada": self.ada.state_dict(), "last_r1": self.last_r1} if self.ada else {"last_r1": self.last_r1}
        )

    def load_extra_state(self, state: dict) -> None:
        self.last_r1 = float(state.get("last_r1", 0.0))
        if self.ada is not None:
            self.ada.load_state_dict(state["ada"])
