"""Layers the generative models share: equalised learning rate, style modulation, noise, mbstd.

Equalised learning rate (Karras et al. 2018): weights are stored as N(0, 1) and scaled by
``1 / sqrt(fan_in)`` at run time, so Adam moves every layer at the same pace. Modulated
convolution (StyleGAN2): a style vector scales the weights per input channel, and
demodulation rescales them back to unit output variance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GAIN = math.sqrt(2.0)  # leaky ReLU gain, keeps activations at unit variance


def lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2) * GAIN


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate (and an optional learning-rate multiplier)."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)) / lr_mul)
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu(x) if self.act else x


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate and 'same' padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)
        return lrelu(x) if self.act else x


class MappingNetwork(nn.Module):
    """z -> w: pixel-normalised latent through fully connected layers at 1/100 learning rate."""

    def __init__(self, z_dim: int, w_dim: int, layers: int, lr_mul: float = 0.01):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(
            *(EqualLinear(a, b, lr_mul=lr_mul, act=True) for a, b in zip(dims, dims[1:], strict=False))
        )

    def forward(self, z: Tensor) -> Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        return self.net(z)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (optionally demodulated, optionally 2x upsampling first).

    The batch is folded into the channel dimension so each sample gets its own weights in one
    grouped convolution.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True, up: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate, self.up = demodulate, up

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        n, c, h, wd = x.shape
        style = self.affine(w)  # (N, in)
        weight = self.weight[None] * self.scale * style[:, None, :, None, None]  # (N, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            h, wd = h * 2, wd * 2
        k = weight.shape[-1]
        out = F.conv2d(
            x.reshape(1, n * c, h, wd), weight.reshape(-1, c, k, k).to(x.dtype), padding=k // 2, groups=n
        )
        return out.reshape(n, -1, h, wd)


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise (from the global torch RNG) with a learned strength."""

    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + noise * self.strength


class StyledConv(nn.Module):
    """Modulated 3x3 convolution, noise, bias and leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, up=up)
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return lrelu(self.noise(self.conv(x, w)) + self.bias)


class ToBands(nn.Module):
    """Features -> image of ``bands`` channels: modulated 1x1 convolution without demodulation."""

    def __init__(self, in_ch: int, bands: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, bands, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, bands, 1, 1))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias


class MinibatchStdDev(nn.Module):
    """Appends the mean standard deviation over groups of samples as one more feature map."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = math.gcd(min(self.group_size, n), n)
        y = x.reshape(g, -1, c, h, w).float()
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # (N/g, C, H, W)
        y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # (N/g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)
