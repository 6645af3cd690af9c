"""Stage II of the dual GAN: SPADE turns a land-cover mask into a 13-band Sentinel-2 image.

The generator (Park et al. 2019, "Semantic Image Synthesis with Spatially-Adaptive
Normalization") is a stack of SPADE residual blocks: every normalisation layer takes its scale
and shift, pixel by pixel, from the one-hot label map, so the image is pixel-aligned with the mask
it was given. Styles come from a noise vector broadcast over the map and concatenated to the
one-hot labels (the 3D noise of OASIS), which keeps the generator fully convolutional: any mask
whose sides are multiples of ``2**num_up`` works, whatever its size. An optional image encoder
(a VAE) maps a real image to that noise vector, for multi-modal styles taken from examples.

Two discriminators are offered:

- ``patchgan``: multi-scale PatchGAN on (image, one-hot mask) with the hinge loss and
  discriminator feature matching (pix2pixHD / SPADE); no VGG loss, since no pretrained network
  can be downloaded here.
- ``oasis``: the segmentation discriminator of OASIS (Schoenfeld et al. 2021, "You Only Need
  Adversarial Supervision for Semantic Image Synthesis"): a U-Net that labels every pixel with one
  of the K classes or "fake" (class 0 of its K+1 outputs), trained with class-balanced cross
  entropy, with optional LabelMix regularisation. An analyst's polygons leave most of a scene
  unlabelled: with ``unknown: learn`` (the default) those pixels are one more class to it, so the
  generator is judged there too (ignored, they gave it no gradient at all).

Masks are ``LongTensor (B, H, W)`` of class indices 0..K-1, with -1 for nodata or unlabelled (an
all-zero one-hot vector). Images are ``(B, bands, H, W)`` in [-1, 1].

:class:`SpadeTask` is the ``spade`` task of :func:`geogan.training.train` (``geogan train
spade``): image + mask batches of a tile folder's ``s2`` and ``lc`` (or ``mask``) chips, Adam
with the two time-scale learning rates, optional DiffAugment applied alike to image and mask.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from geogan.models.augment import augment
from geogan.models.options import SpadeOptions
from geogan.training import DataInfo, TrainTask, fitted


def one_hot(mask: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) class indices -> (B, K, H, W) float one-hot; -1 (nodata) gives all zeros."""
    if mask.dim() != 3:
        raise ValueError(f"a mask is (B, H, W) class indices, got shape {tuple(mask.shape)}")
    if int(mask.max()) >= num_classes or int(mask.min()) < -1:
        raise ValueError(
            f"mask values must be class indices 0..{num_classes - 1} or -1 (nodata); "
            f"got {int(mask.min())}..{int(mask.max())}"
        )
    out = F.one_hot(mask.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()
    return out * (mask >= 0).unsqueeze(1)


def _sn(module: nn.Module) -> nn.Module:
    return spectral_norm(module)


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 'same' convolution of the generator, padded by replicating the border.

    Zero padding tells every layer where the map ends: on the generator's small first maps (4 x 4
    for 64 px chips and num_up 4: every pixel touches a border) that signal, renormalised layer
    after layer, became a pattern fixed in the image frame, the same whatever the mask. With
    replicated borders a constant input stays constant, so all spatial structure comes from the mask.
    """
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate")


class SPADE(nn.Module):
    """Parameter-free normalisation, then a per-pixel scale and shift predicted from the condition.

    The normalisation is over each sample's channels and pixels together (a one-group GroupNorm),
    not per channel (instance norm): instance norm removes every channel's mean, which on a
    single-class region is all its content, and rescales what is left (border effects) to unit
    variance; it also fails on 1 x 1 maps. Unlike the batch norm of SPADE and OASIS it needs no
    running statistics, so a sample does not depend on the rest of its batch nor the EMA generator
    on the live one's statistics.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, affine=False)
        self.shared = nn.Sequential(_conv3(cond_channels, hidden), nn.ReLU())
        self.gamma = _conv3(hidden, channels)
        self.beta = _conv3(hidden, channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        a = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(a)) + self.beta(a)


class Noise(nn.Module):
    """Per-pixel Gaussian noise, scaled per channel by a learned weight (StyleGAN's noise inputs).

    Where a mask is one class, or unknown, over a large area, the condition is constant there and
    a convolutional generator can only paint it flat; the noise gives it the spatial variation to
    shape into texture (fields, stands of trees, ripples). The weights start at zero, so an
    untrained generator is the noise-free one. Drawn from torch's global generator: a seeded run
    (``geogan generate --seed``) draws the same noise.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class SPADEResBlock(nn.Module):
    """SPADE -> LeakyReLU -> conv (+ noise), twice, with a learned (SPADE + 1x1 conv) shortcut when needed."""

    def __init__(self, fin: int, fout: int, cond_channels: int, hidden: int = 64) -> None:
        super().__init__()
        fmid = min(fin, fout)
        self.conv_0 = _sn(_conv3(fin, fmid))
        self.conv_1 = _sn(_conv3(fmid, fout))
        self.noise_0, self.noise_1 = Noise(fmid), Noise(fout)
        self.norm_0 = SPADE(fin, cond_channels, hidden)
        self.norm_1 = SPADE(fmid, cond_channels, hidden)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, 1, bias=False))
            self.norm_s = SPADE(fin, cond_channels, hidden)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        shortcut = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.noise_0(self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2)))
        dx = self.noise_1(self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2)))
        return shortcut + dx


class SpadeGenerator(nn.Module):
    """Mask (+ style vector) -> image in [-1, 1], pixel-aligned with the mask.

    The first feature map comes from the mask and noise downsampled by ``2**num_up``; each of the
    ``num_up`` levels doubles the resolution (bilinear: nearest upsampling left axis-aligned streaks
    in the images of short runs) with a SPADE residual block.

    The network draws *around each class's mean spectrum*: the generator keeps the running mean of
    every band under every class of the real training chips (and under unknown pixels), buffers
    that travel with the EMA and the checkpoints, and the last layer adds its output to that mean
    (before the tanh). An untrained generator paints each class in its mean spectrum; training
    adds the texture, the variation and the edges. On small data, where a short run has not yet
    separated dark classes (forest, wetland, water) from one another, this keeps each class's
    colour where the real chips have it. Training keeps it there: the adversarial loss alone moved
    the class means (on Havelland, 500 steps: forest's B12 24 % too dark), so SPADE's class-mean loss
    (``lambda_class_mean``, :meth:`mean_error`) holds each class's mean of every band in a fake batch
    to the real chips' (there: within 4 % for every class and band), leaving the texture to the rest.
    """

    class_mean: Tensor  # buffers: each class's running mean of every band, and its pixels seen
    class_pixels: Tensor

    def __init__(
        self,
        num_classes: int,
        bands: int = 13,
        channels: int = 64,
        z_dim: int = 64,
        num_up: int = 4,
        spade_hidden: int = 64,
    ) -> None:
        super().__init__()
        self.num_classes, self.bands, self.z_dim, self.num_up = num_classes, bands, z_dim, num_up
        cond = num_classes + z_dim
        widths = [channels * min(2 ** (num_up - i), 8) for i in range(num_up + 1)]
        self.head = _conv3(cond, widths[0])
        self.blocks = nn.ModuleList(
            [SPADEResBlock(widths[0], widths[0], cond, spade_hidden)]
            + [SPADEResBlock(widths[i], widths[i + 1], cond, spade_hidden) for i in range(num_up)]
        )
        self.out = _conv3(widths[-1], bands)
        # Running mean of each band under each class (row K: unknown), in [-1, 1], and pixels seen.
        self.register_buffer("class_mean", torch.zeros(num_classes + 1, bands))
        self.register_buffer("class_pixels", torch.zeros(num_classes + 1))

    def _class_sums(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(K + 1, bands) sums of ``image`` under each class (row K: unknown) and (K + 1,) pixel counts."""
        k = self.num_classes
        index = torch.where(mask >= 0, mask, torch.full_like(mask, k)).reshape(-1)
        pixels = image.float().permute(0, 2, 3, 1).reshape(-1, image.shape[1])
        sums = torch.zeros_like(self.class_mean).index_add(0, index, pixels)
        return sums, torch.bincount(index, minlength=k + 1).to(sums.dtype)

    @torch.no_grad()
    def remember(self, image: Tensor, mask: Tensor) -> None:
        """Add a real batch (image (B, bands, H, W) in [-1, 1], mask (B, H, W), -1 unknown) to the means."""
        sums, counts = self._class_sums(image.detach(), mask)
        total = self.class_pixels + counts
        seen = counts > 0
        self.class_mean[seen] += (sums[seen] - counts[seen, None] * self.class_mean[seen]) / total[seen, None]
        self.class_pixels.copy_(total)

    def mean_error(self, image: Tensor, mask: Tensor) -> Tensor:
        """Mean absolute difference, over the classes in ``mask`` and the bands, between each class's
        mean of ``image`` in the batch and its running mean of the real chips (unknown: one more class)."""
        sums, counts = self._class_sums(image, mask)
        seen = counts > 0
        means = sums[seen] / counts[seen, None]
        return (means - self.class_mean[seen]).abs().mean()

    def base(self, mask: Tensor) -> Tensor:
        """(B, bands, H, W): each pixel's class mean, as the tanh's input that gives it."""
        index = torch.where(mask >= 0, mask, torch.full_like(mask, self.num_classes))
        return torch.atanh(self.class_mean.clamp(-0.95, 0.95))[index].permute(0, 3, 1, 2)

    def check_size(self, height: int, width: int) -> None:
        step = 2**self.num_up
        if height % step or width % step:
            raise ValueError(
                f"mask size {height}x{width} is not a multiple of {step} (2**num_up, num_up={self.num_up})"
            )

    def forward(self, mask: Tensor, z: Tensor) -> Tensor:
        """``mask``: (B, H, W) class indices; ``z``: (B, z_dim) styles. Returns (B, bands, H, W)."""
        b, h, w = mask.shape
        self.check_size(h, w)
        if z.shape != (b, self.z_dim):
            raise ValueError(f"style vectors must be ({b}, {self.z_dim}), got {tuple(z.shape)}")
        cond = torch.cat([one_hot(mask, self.num_classes), z[:, :, None, None].expand(-1, -1, h, w)], 1)
        step = 2**self.num_up
        x = self.head(F.interpolate(cond, size=(h // step, w // step), mode="nearest"))
        # The condition at each level's size, resized once (nearest: labels stay labels).
        levels = [
            F.interpolate(cond, size=(h // 2**i, w // 2**i), mode="nearest")
            for i in range(self.num_up, 0, -1)
        ]
        levels.append(cond)
        x = self.blocks[0](x, levels[0])
        for block, level in zip(self.blocks[1:], levels[1:], strict=True):
            x = block(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), level)
        return torch.tanh(self.out(F.leaky_relu(x, 0.2)) + self.base(mask).to(x.dtype))


class ImageEncoder(nn.Module):
    """Image -> (mu, logvar) of a style vector: strided convs, global pooling, two linear heads."""

    def __init__(self, bands: int, z_dim: int, channels: int = 32, layers: int = 4) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        c_in = bands
        for i in range(layers):
            c_out = channels * min(2**i, 8)
            mods += [_sn(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)), nn.InstanceNorm2d(c_out)]
            mods.append(nn.LeakyReLU(0.2))
            c_in = c_out
        self.body = nn.Sequential(*mods)
        self.mu = nn.Linear(c_in, z_dim)
        self.logvar = nn.Linear(c_in, z_dim)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(image).mean((2, 3))
        return self.mu(h), self.logvar(h)


class PatchDiscriminator(nn.Module):
    """PatchGAN on (image, one-hot mask); returns every layer's output (the last is the score map)."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, channels, 4, 2, 2), nn.LeakyReLU(0.2))]
        c = channels
        for i in range(1, layers):
            c_out = min(c * 2, 512)
            stride = 1 if i == layers - 1 else 2
            seq.append(
                nn.Sequential(
                    _sn(nn.Conv2d(c, c_out, 4, stride, 2)), nn.InstanceNorm2d(c_out), nn.LeakyReLU(0.2)
                )
            )
            c = c_out
        seq.append(nn.Conv2d(c, 1, 4, 1, 2))
        self.layers = nn.ModuleList(seq)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiscalePatchDiscriminator(nn.Module):
    """``num_d`` PatchGANs, each on the input downsampled by 2 more than the last."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 3, num_d: int = 2) -> None:
        super().__init__()
        self.discs = nn.ModuleList(PatchDiscriminator(in_channels, channels, layers) for _ in range(num_d))

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        out = []
        for i, d in enumerate(self.discs):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


class OasisDiscriminator(nn.Module):
    """U-Net segmenter with K+1 outputs a pixel: 0 = fake, 1..K = the real classes."""

    def __init__(self, bands: int, num_classes: int, channels: int = 64, depth: int = 3) -> None:
        super().__init__()
        widths = [channels * min(2**i, 8) for i in range(depth + 1)]
        self.stem = nn.Sequential(_sn(nn.Conv2d(bands, widths[0], 3, padding=1)), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(
            nn.Sequential(_sn(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1)), nn.LeakyReLU(0.2))
            for i in range(depth)
        )
        self.up = nn.ModuleList(
            nn.Sequential(
                _sn(nn.Conv2d(widths[i + 1] + widths[i], widths[i], 3, padding=1)), nn.LeakyReLU(0.2)
            )
            for i in reversed(range(depth))
        )
        self.out = nn.Conv2d(widths[0], num_classes + 1, 1)

    def forward(self, image: Tensor) -> Tensor:
        x = self.stem(image)
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(F.avg_pool2d(x, 2))
        for up, skip in zip(self.up, reversed(skips), strict=True):
            x = up(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return self.out(x)


def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's hinge loss on real and fake score maps."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def class_balanced_ce(logits: Tensor, mask: Tensor) -> Tensor:
    """OASIS loss: cross entropy to classes 1..K, each class weighted by its inverse frequency.

    ``mask`` holds 0..K-1 (targets 1..K of the K+1 outputs) or -1, ignored.
    """
    k = logits.shape[1] - 1
    valid = mask >= 0
    counts = torch.bincount(mask[valid], minlength=k).float()
    present = (counts > 0).sum().clamp(min=1)
    weights = torch.where(counts > 0, valid.sum() / (counts * present), torch.zeros_like(counts))
    target = torch.where(valid, mask + 1, torch.full_like(mask, -100))
    ce = F.cross_entropy(logits.float(), target, ignore_index=-100, reduction="none")
    return (ce * weights[mask.clamp(min=0)] * valid).sum() / valid.sum().clamp(min=1)


def from_one_hot(onehot: Tensor) -> Tensor:
    """(B, K, H, W) one-hot (all zero = nodata) -> (B, H, W) class indices with -1 for nodata."""
    return torch.where(onehot.sum(1) > 0.5, onehot.argmax(1), torch.full_like(onehot[:, 0], -1).long())


class SpadeTask(TrainTask):
    """Stage II of the dual GAN, trained by :func:`geogan.training.train` as ``spade``.

    Batches hold real ``image`` (B, C, H, W) in [-1, 1] and ``mask`` (B, H, W) class indices of the
    run's scheme (-1 nodata). :meth:`sample` takes ``batch["mask"]`` (and optional
    ``batch["style"]`` (B, z_dim)) and returns ``{"image", "mask"}``, the image pixel-aligned with
    the mask it was given.
    """

    name = "spade"
    options: SpadeOptions
    conditional: ClassVar[bool] = True  # sample() needs batch["mask"]
    outputs: ClassVar[tuple[str, ...]] = ("image", "mask")

    def __init__(self, options: SpadeOptions, data: DataInfo) -> None:
        super().__init__(options, data)
        if data.num_classes < 1:
            raise ValueError("SPADE turns masks into images: the run needs a class scheme with classes")
        self.num_up = fitted(options.num_up, "num_up")
        step = 2**self.num_up
        if data.resolution % step:
            raise ValueError(
                f"the tiles are {data.resolution} px, not a multiple of 2**num_up = {step}; lower num_up"
            )

    @property
    def d_classes(self) -> int:
        """The OASIS discriminator's real classes: the scheme's, and unknown with ``unknown: learn``."""
        return self.data.num_classes + (self.options.unknown == "learn")

    def _d_labels(self, onehot: Tensor) -> Tensor:
        """The OASIS discriminator's targets of a (possibly augmented) one-hot mask: class indices,
        unlabelled pixels as class K (``unknown: learn``) or -1, left out of its losses."""
        m = from_one_hot(onehot)
        if self.options.unknown == "learn":
            m = torch.where(m >= 0, m, torch.full_like(m, self.data.num_classes))
        return m

    def build(self) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
        o, k, c = self.options, self.data.num_classes, self.data.channels
        g = SpadeGenerator(k, c, o.channels, o.z_dim, self.num_up, o.spade_hidden)
        if o.discriminator == "patchgan":
            d: nn.Module = MultiscalePatchDiscriminator(c + k, o.d_channels, o.d_layers, o.num_d)
        else:
            d = OasisDiscriminator(c, self.d_classes, o.d_channels, o.d_layers)
        modules = {"generator": g, "discriminator": d}
        g_params = list(g.parameters())
        if o.encoder:
            modules["encoder"] = ImageEncoder(c, o.z_dim, max(o.d_channels // 2, 8))
            g_params += list(modules["encoder"].parameters())
        opt_g = torch.optim.Adam(g_params, lr=o.lr_g, betas=o.betas)
        opt_d = torch.optim.Adam(d.parameters(), lr=o.lr_d, betas=o.betas)
        return modules, {"generator": opt_g, "discriminator": opt_d}

    def _styles(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Style vectors for the batch: encoded from the real images (with the KL term) or N(0, 1)."""
        encoder = self.nets.get("encoder")
        if encoder is None:
            return torch.randn(image.shape[0], self.options.z_dim, device=image.device), image.new_zeros(())
        mu, logvar = encoder(image)
        mu, logvar = mu.float(), logvar.float()
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        return z, kl

    def _augment(self, real: Tensor, fake: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The same geometric augmentation of a tile's real image, fake image and mask."""
        if not self.options.augment or self.options.augment_p <= 0:
            return real, fake, onehot
        c = real.shape[1]
        (joined,) = augment(
            [torch.cat([real, fake, onehot], 1)], self.options.augment, self.options.augment_p
        )
        return joined[:, :c], joined[:, c : 2 * c], joined[:, 2 * c :]

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        if "mask" not in batch:
            raise ValueError(
                f"SPADE trains on image + mask pairs, but the tiles have no {self.options.mask_role!r} "
                "mask chips (set mask_role, or rasterise polygons with `geogan labels rasterize`)"
            )
        o = self.options
        g, d = self.nets["generator"], self.nets["discriminator"]
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        real, mask = batch["image"], batch["mask"].long()
        onehot = one_hot(mask, self.data.num_classes)
        generator = cast(SpadeGenerator, getattr(g, "module", g))
        generator.remember(real, mask)

        # Discriminator.
        d.requires_grad_(True)
        with torch.no_grad():
            fake = g(mask, self._styles(real)[0])
        r, f, oh = self._augment(real, fake, onehot)
        logs: dict[str, float] = {}
        if o.discriminator == "patchgan":
            real_out, fake_out = d(torch.cat([r, oh], 1)), d(torch.cat([f, oh], 1))
            pairs = zip(real_out, fake_out, strict=True)
            loss_d = cast(Tensor, sum(hinge_d(ro[-1].float(), fo[-1].float()) for ro, fo in pairs)) / len(
                real_out
            )
            logs["d_real"] = sum(ro[-1].float().mean().item() for ro in real_out) / len(real_out)
            logs["d_fake"] = sum(fo[-1].float().mean().item() for fo in fake_out) / len(fake_out)
        else:
            m = self._d_labels(oh)
            real_logits, fake_logits = d(r), d(f)
            loss_d = class_balanced_ce(real_logits, m) + F.cross_entropy(
                fake_logits.float(), torch.zeros_like(m)
            )
            if o.labelmix:
                pick = torch.randint(0, 2, (m.shape[0], self.d_classes + 1), device=m.device)
                mix = torch.gather(pick, 1, (m + 1).flatten(1)).view_as(m).unsqueeze(1).to(r.dtype)
                mixed_logits = d(mix * r + (1 - mix) * f)
                target = mix * real_logits + (1 - mix) * fake_logits
                labelmix = F.mse_loss(mixed_logits.float(), target.float())
                loss_d = loss_d + o.lambda_labelmix * labelmix
                logs["d_labelmix"] = labelmix.item()
        opt_d.zero_grad(set_to_none=True)
        self.fabric.backward(loss_d)
        opt_d.step()
        logs["d_loss"] = loss_d.item()

        # Generator (and encoder) through the frozen discriminator.
        d.requires_grad_(False)
        z, kl = self._styles(real)
        fake = g(mask, z)
        r, f, oh = self._augment(real, fake, onehot)
        if o.discriminator == "patchgan":
            fake_out = d(torch.cat([f, oh], 1))
            with torch.no_grad():
                real_out = d(torch.cat([r, oh], 1))
            adv = -cast(Tensor, sum(fo[-1].float().mean() for fo in fake_out)) / len(fake_out)
            fm = cast(
                Tensor,
                sum(
                    F.l1_loss(ff.float(), rf.float())
                    for fo, ro in zip(fake_out, real_out, strict=True)
                    for ff, rf in zip(fo[:-1], ro[:-1], strict=True)
                ),
            ) / len(fake_out)
            loss_g = adv + o.lambda_fm * fm
            logs["g_fm"] = fm.item()
        else:
            adv = class_balanced_ce(d(f), self._d_labels(oh))
            loss_g = adv
        if o.lambda_class_mean:
            class_mean = generator.mean_error(fake, mask)
            loss_g = loss_g + o.lambda_class_mean * class_mean
            logs["g_class_mean"] = class_mean.item()
        if "encoder" in self.nets:
            loss_g = loss_g + o.lambda_kl * kl
            logs["g_kl"] = kl.item()
        opt_g.zero_grad(set_to_none=True)
        self.fabric.backward(loss_g)
        opt_g.step()
        d.requires_grad_(True)
        logs["g_adv"] = adv.item()
        logs["g_loss"] = loss_g.item()
        return logs

    def sample(self, generator: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Images for ``batch["mask"]`` (B, H, W) class indices; styles ``batch["style"]`` or random."""
        if "mask" not in batch:
            raise ValueError("SPADE makes images from masks: the batch needs 'mask', (B, H, W) class indices")
        device = next(generator.parameters()).device
        mask = torch.as_tensor(batch["mask"]).to(device).long()
        z = batch.get("style")
        if z is None:
            z = torch.randn(mask.shape[0], self.options.z_dim, device=device)
        image = generator(mask, z.to(device))
        return {"image": image.float().clamp(-1, 1), "mask": mask}
