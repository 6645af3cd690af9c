"""Stage I of the dual GAN: categorical land-cover maps, with control of their class frequencies.

The generator turns a spatial noise map (``z_dim`` channels at ``1 / 2**num_up`` of the tile
size, so any multiple of ``2**num_up`` works) into per-pixel logits over the K classes of the
run's scheme. The discriminator (hinge loss, spectral norm) sees one-hot maps: real mask chips,
and generated ones as straight-through Gumbel-softmax samples (one-hot forward, soft gradients;
``output: softmax`` shows it the softmax instead).

Class-frequency control is by conditioning, checked by rejection. Generator and discriminator
both take a target vector ``c`` of K class fractions (broadcast as K constant channels); in
training ``c`` is each real tile's own class histogram, and besides the adversarial loss the
generator is pulled (``lambda_freq``) to make maps whose class fractions equal ``c``: the KL
divergence of ``c`` from the map's expected fractions (:func:`fraction_divergence`), which keeps
pulling a rare class back in where an L1 distance of sampled fractions had lost its gradient (on
Havelland the mask GAN had stopped drawing water and grass altogether). The
generator keeps a bank of real tiles' histograms (a buffer, so it travels with the EMA and the
checkpoints). To sample, a histogram is drawn from the bank; with ``class_min = {k: f}`` its
class ``k`` is raised to ``f`` plus a margin and the other classes scaled down to make room.
Every returned mask is then checked: masks short of a minimum are drawn again, up to
``max_tries`` rounds, and if some are still short a :class:`ClassFrequencyError` says which
class, how many masks reached it and the acceptance rate. Masks that are returned always meet
their minimum fractions. The condition alone is a request, not a guarantee: in the tests'
tiny run, asking for half water (about a tenth of the real pixels) gave masks of 64 % water on average
(the argmax sharpens what the condition raises), and raises the acceptance rate of a 50 % minimum
elevenfold (8 % -> 89 %) over rejection alone.

Unlabelled pixels (-1) in real masks, as an analyst's sparse polygons leave most of a scene, are
handled by ``unknown``:

- ``learn`` (the default): unknown is one more class to the GAN (generator output K, a column of
  the condition), so generated masks have unlabelled areas where real ones do, and labelled
  polygons of the real masks' shapes and class mix; sampled masks return it as -1. Class
  fractions (the condition, ``class_min``) are of the whole mask, unknown included.
- ``fill``: the fake maps paired with a real batch get the same nodata pixels (all-zero one-hot)
  before the discriminator sees them, so it judges only the labelled pixels; generated masks have
  a class everywhere. On sparse labels this goes wrong: a chip's labelled pixels are mostly one
  polygon of one class, so the condition is one class and the masks are that class throughout
  (Havelland at 64 px: 15 of 16 samples one class from edge to edge).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from geogan import labels
from geogan.errors import InputError
from geogan.models.augment import augment
from geogan.models.options import MaskGANOptions
from geogan.models.spade import _conv3, hinge_d, one_hot
from geogan.training import DataInfo, TrainTask, fitted

MARGIN = 0.05  # how far above a requested minimum the condition asks for
MAX_TRIES = 50  # rounds of rejection sampling before giving up


class ClassFrequencyError(InputError):
    """The model rarely makes masks with the requested class fractions."""


def class_fractions(mask: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) class indices (-1 nodata) -> (B, K) fractions of the valid pixels."""
    onehot = one_hot(mask, num_classes)
    return onehot.sum((2, 3)) / onehot.sum((1, 2, 3)).clamp(min=1)[:, None]


def targets_with_minimum(base: Tensor, class_min: Mapping[int, float], margin: float = MARGIN) -> Tensor:
    """Class-fraction vectors ``base`` (B, K) with each ``class_min`` class raised to its minimum.

    A raised class asks for ``min + margin`` (at most 1); the other classes keep their
    proportions and share what is left.
    """
    out = base.clone()
    fixed = torch.zeros(base.shape[1], dtype=torch.bool, device=base.device)
    for k, f in class_min.items():
        out[:, k] = torch.maximum(out[:, k], torch.full_like(out[:, k], min(f + margin, 1.0)))
        fixed[k] = True
    room = (1 - out[:, fixed].sum(1, keepdim=True)).clamp(min=0)
    rest = out[:, ~fixed]
    total = rest.sum(1, keepdim=True)
    even = torch.full_like(rest, 1 / max(rest.shape[1], 1))
    out[:, ~fixed] = room * torch.where(total > 0, rest / total.clamp(min=1e-12), even)
    return out / out.sum(1, keepdim=True)


def check_class_min(class_min: Mapping[int, float], num_classes: int) -> dict[int, float]:
    """``{class index: minimum fraction}``, checked: known classes, fractions in (0, 1], sum <= 1."""
    out = {}
    for k, f in class_min.items():
        if not isinstance(k, int) or not 0 <= k < num_classes:
            raise ValueError(f"class_min: {k!r} is not a class index 0..{num_classes - 1}")
        if not 0 < float(f) <= 1:
            raise ValueError(f"class_min: the fraction of class {k} must be in (0, 1], got {f}")
        out[k] = float(f)
    if sum(out.values()) > 1 + 1e-9:
        raise ValueError(f"class_min: the minimum fractions add up to {sum(out.values()):.2f} > 1")
    return out


def fraction_divergence(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """KL(target || expected): each map's asked class fractions against the mean of its softmax.

    Unlike an L1 distance of sampled fractions, whose gradient vanishes with the softmax of a class
    the generator has stopped drawing, the gradient of the log here stays about the fraction asked,
    so a rare class (water, wetland) that a map should hold is drawn back into it.
    """
    weight = valid.unsqueeze(1).to(logits.dtype)
    expected = (logits.softmax(1) * weight).sum((2, 3)) / weight.sum((2, 3)).clamp(min=1)
    return (target * (torch.log(target.clamp(min=1e-6)) - torch.log(expected.clamp(min=1e-6)))).sum(1).mean()


class MaskGenerator(nn.Module):
    """Spatial noise + class-fraction condition -> per-pixel class logits (B, K, H, W).

    Its 3x3 convolutions replicate the border, as SPADE's do (:func:`geogan.models.spade._conv3`):
    with zero padding the map's edge was the only positional signal on the 4 px noise map, and
    trained on Havelland the generator put one blob of the same shape at the centre of every mask.
    It upsamples bilinearly: nearest upsampling left steps of the first map's pixels along every
    class edge.
    """

    bank: Tensor  # buffers: real tiles' class fractions, and how many were banked
    banked: Tensor

    def __init__(
        self,
        num_classes: int,
        z_dim: int = 32,
        channels: int = 64,
        num_up: int = 4,
        bank: int = 1024,
        unknown: bool = False,
    ):
        super().__init__()
        self.num_classes, self.z_dim, self.num_up = num_classes, z_dim, num_up
        # ``unknown``: one more output (index num_classes) for unlabelled pixels, learned like a class.
        self.outputs = num_classes + int(unknown)
        widths = [channels * min(2 ** (num_up - i), 8) for i in range(num_up + 1)]
        k = self.outputs
        self.head = nn.Sequential(_conv3(z_dim + k, widths[0]), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                _conv3(widths[i] + k, widths[i + 1]),
                nn.GroupNorm(min(8, widths[i + 1]), widths[i + 1]),
                nn.LeakyReLU(0.2),
                _conv3(widths[i + 1], widths[i + 1]),
                nn.LeakyReLU(0.2),
            )
            for i in range(num_up)
        )
        self.out = nn.Conv2d(widths[-1] + k, k, 1)
        # Class fractions of real tiles seen in training (a ring), drawn from when sampling.
        self.register_buffer("bank", torch.zeros(bank, k))
        self.register_buffer("banked", torch.zeros((), dtype=torch.long))

    def check_size(self, height: int, width: int) -> None:
        step = 2**self.num_up
        if height % step or width % step or height < step:
            raise ValueError(f"mask size {height}x{width} is not a multiple of {step} (2**num_up)")

    def noise(self, n: int, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        self.check_size(height, width)
        step = 2**self.num_up
        return torch.randn(n, self.z_dim, height // step, width // step, device=device)

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        def with_c(x: Tensor) -> Tensor:
            return torch.cat([x, c[:, :, None, None].to(x.dtype).expand(-1, -1, *x.shape[-2:])], 1)

        x = self.head(with_c(z))
        for block in self.blocks:
            x = block(with_c(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))
        return self.out(with_c(x))

    @torch.no_grad()
    def remember(self, fractions: Tensor) -> None:
        """Add real tiles' class fractions to the bank."""
        n, size = fractions.shape[0], self.bank.shape[0]
        rows = (self.banked + torch.arange(n, device=self.bank.device)) % size
        self.bank[rows] = fractions.to(self.bank.dtype)
        self.banked += n

    def draw_targets(self, n: int, device: torch.device | str) -> Tensor:
        """``n`` class-fraction vectors of real tiles from the bank (uniform ones before training)."""
        filled = int(min(int(self.banked), self.bank.shape[0]))
        if filled == 0:
            return torch.full((n, self.outputs), 1 / self.outputs, device=device)
        return self.bank[torch.randint(0, filled, (n,), device=self.bank.device)].to(device)


class MaskDiscriminator(nn.Module):
    """(one-hot mask, class-fraction condition) -> a map of hinge scores (PatchGAN-like)."""

    def __init__(self, num_classes: int, channels: int = 64, layers: int = 4) -> None:
        super().__init__()
        seq: list[nn.Module] = []
        c_in = 2 * num_classes
        for i in range(layers):
            c_out = channels * min(2**i, 8)
            seq += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        seq.append(spectral_norm(nn.Conv2d(c_in, 1, 3, padding=1)))
        self.body = nn.Sequential(*seq)

    def forward(self, onehot: Tensor, c: Tensor) -> Tensor:
        cond = c[:, :, None, None].to(onehot.dtype).expand(-1, -1, *onehot.shape[-2:])
        return self.body(torch.cat([onehot, cond], 1))


@torch.no_grad()
def sample_masks(
    generator: MaskGenerator,
    n: int,
    height: int,
    width: int,
    class_min: Mapping[int, float] | None = None,
    *,
    condition: bool = True,
    max_tries: int = MAX_TRIES,
    device: torch.device | str | None = None,
    names: Sequence[str] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``n`` masks (LongTensor (n, H, W)) with at least ``class_min`` fractions; and statistics.

    ``condition=False`` asks the generator for ordinary tiles and relies on rejection alone (to
    compare). The statistics: ``tries`` (rounds), ``drawn`` (masks made), ``acceptance``.
    Raises :class:`ClassFrequencyError` when masks are still short after ``max_tries`` rounds,
    naming the classes by ``names`` (the scheme's class names) where given.
    """
    device = device or next(generator.parameters()).device
    k = generator.num_classes
    class_min = check_class_min(class_min or {}, k)
    out = torch.empty(n, height, width, dtype=torch.long, device=device)
    todo = torch.arange(n, device=device)
    drawn = tries = 0
    while len(todo):
        if tries == max_tries:
            need = ", ".join(
                f"{repr(names[c]) if names else f'class {c}'} >= {f:.0%}" for c, f in class_min.items()
            )
            raise ClassFrequencyError(
                f"only {n - len(todo)} of {n} masks reached {need} after {tries} rounds "
                f"({drawn} masks drawn, acceptance rate {(n - len(todo)) / max(drawn, 1):.2%}); this "
                "model rarely makes such masks: ask for a lower fraction, or train on tiles with more "
                "of the class"
            )
        m = len(todo)
        c = generator.draw_targets(m, device)
        if class_min and condition:
            c = targets_with_minimum(c, class_min)
        logits = generator(generator.noise(m, height, width, device), c)
        masks = logits.float().argmax(1)
        if generator.outputs > k:  # the learned unknown class is nodata (-1) in the masks returned
            masks = torch.where(masks == k, torch.full_like(masks, -1), masks)
        ok = torch.ones(m, dtype=torch.bool, device=device)
        if class_min:
            got = one_hot(masks, k).mean((2, 3))  # fractions of the whole mask, unknown included
            for cls, f in class_min.items():
                ok &= got[:, cls] >= f - 1e-9
        out[todo[ok]] = masks[ok]
        todo = todo[~ok]
        drawn += m
        tries += 1
    return out, {"tries": float(tries), "drawn": float(drawn), "acceptance": n / max(drawn, 1)}


class MaskGANTask(TrainTask):
    """Stage I of the dual GAN, trained by :func:`geogan.training.train` as ``mask-gan``.

    Trains on the real mask chips of the tile folder (``batch["mask"]``, class indices of the
    run's scheme). :meth:`sample` takes ``batch["image"]`` only for its size (B, C, H, W) and an
    optional ``batch["class_min"] = {class index: minimum fraction}``; it returns
    ``{"mask": LongTensor (B, H, W)}``.
    """

    name = "mask-gan"
    options: MaskGANOptions
    conditional: ClassVar[bool] = False  # needs no input but the size (and optional class_min)
    outputs: ClassVar[tuple[str, ...]] = ("mask",)

    def __init__(self, options: MaskGANOptions, data: DataInfo) -> None:
        super().__init__(options, data)
        if data.num_classes < 2:
            raise ValueError("the mask GAN needs a class scheme with at least two classes")
        if data.resolution != options.resolution:
            raise ValueError(
                f"the tiles are {data.resolution} px but the model is set to {options.resolution} px; "
                f"set resolution: {data.resolution} (or re-tile)"
            )
        self.num_up = fitted(options.num_up, "num_up")
        step = 2**self.num_up
        if data.resolution % step:
            raise ValueError(f"resolution {options.resolution} is not a multiple of 2**num_up = {step}")

    def build(self) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
        o, k = self.options, self.data.num_classes
        g = MaskGenerator(k, o.z_dim, o.channels, self.num_up, o.bank_size, unknown=o.unknown == "learn")
        d = MaskDiscriminator(g.outputs, o.d_channels, o.d_layers)
        opt_g = torch.optim.Adam(g.parameters(), lr=o.lr_g, betas=o.betas)
        opt_d = torch.optim.Adam(d.parameters(), lr=o.lr_d, betas=o.betas)
        return {"generator": g, "discriminator": d}, {"generator": opt_g, "discriminator": opt_d}

    def _fake(self, g: nn.Module, c: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """A generated one-hot map for conditions ``c`` (nodata where ``valid`` is false) and its logits."""
        o = self.options
        b, h, w = valid.shape
        z = torch.randn(b, o.z_dim, h // 2**self.num_up, w // 2**self.num_up, device=c.device)
        logits = g(z, c).float()
        if o.output == "gumbel":
            fake = F.gumbel_softmax(logits, tau=o.tau, hard=True, dim=1)
        else:
            fake = logits.softmax(1)
        return fake * valid.unsqueeze(1), logits

    def _augment(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        o = self.options
        if not o.augment or o.augment_p <= 0:
            return real, fake
        return tuple(augment([x], o.augment, o.augment_p)[0] for x in (real, fake))  # type: ignore[return-value]

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        if "mask" not in batch:
            raise ValueError(
                f"the mask GAN trains on mask chips, but the tiles have no {self.options.mask_role!r} chips "
                "(set mask_role, or rasterise polygons with `geogan labels rasterize`)"
            )
        o, k = self.options, self._generator_module().outputs
        g, d = self.nets["generator"], self.nets["discriminator"]
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        mask = batch["mask"].long()
        if k > self.data.num_classes:  # unknown learned as class K: every pixel counts
            mask = torch.where(mask >= 0, mask, torch.full_like(mask, k - 1))
        valid = mask >= 0
        real = one_hot(mask, k)
        c = class_fractions(mask, k)
        self._generator_module().remember(c)

        d.requires_grad_(True)
        with torch.no_grad():
            fake, _ = self._fake(g, c, valid)
        r, f = self._augment(real, fake)
        real_score, fake_score = d(r, c).float(), d(f, c).float()
        loss_d = hinge_d(real_score, fake_score)
        opt_d.zero_grad(set_to_none=True)
        self.fabric.backward(loss_d)
        opt_d.step()

        d.requires_grad_(False)
        fake, logits = self._fake(g, c, valid)
        adv = -d(self._augment(real, fake)[1], c).float().mean()
        # The condition loss is on the expected fractions; the sampled ones' L1 is only logged.
        got = fake.sum((2, 3)) / valid.sum((1, 2)).clamp(min=1)[:, None]
        freq = (got - c).abs().sum(1).mean()
        loss_g = adv + o.lambda_freq * fraction_divergence(logits, c, valid)
        opt_g.zero_grad(set_to_none=True)
        self.fabric.backward(loss_g)
        opt_g.step()
        d.requires_grad_(True)
        return {
            "d_loss": loss_d.item(),
            "g_adv": adv.item(),
            "g_freq_l1": freq.item(),
            "d_real": real_score.mean().item(),
            "d_fake": fake_score.mean().item(),
        }

    def _generator_module(self) -> MaskGenerator:
        g = self.nets["generator"]
        return cast(MaskGenerator, getattr(g, "module", g))

    def sample(self, generator: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Masks the size of ``batch["image"]``; ``batch["class_min"]`` sets minimum class fractions."""
        b, _, h, w = batch["image"].shape
        generator = cast(MaskGenerator, getattr(generator, "module", generator))
        names = labels.scheme(self.options.scheme).names
        masks, _ = sample_masks(generator, b, h, w, batch.get("class_min"), names=names)
        return {"mask": masks}
