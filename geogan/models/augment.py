"""Differentiable augmentation for small multispectral data sets (DiffAugment, with ADA's adaptive p).

A discriminator trained on a few hundred tiles memorises them; showing it augmented real *and*
generated tiles, through operations gradients pass through (Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training"), keeps it honest without leaking augmentations
into the generator. Only geometric operations are used, applied alike to every band: colour
operations (brightness, saturation, contrast) assume RGB and would break the physical relation
between Sentinel bands.

Multi-scale models pass the image at every scale; each tile gets one draw of the parameters,
applied consistently at every scale (shifts and cut-outs are fractions of the tile size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

OPS = ("translation", "cutout", "flip", "rot90")
TRANSLATION = 1 / 8  # largest shift, as a fraction of the tile size
CUTOUT = 1 / 2  # side of the cut-out square, as a fraction of the tile size


def _translate(x: Tensor, fx: Tensor, fy: Tensor) -> Tensor:
    """Shift each tile by fractions ``fx``, ``fy`` of its size; uncovered pixels become 0."""
    n, _, h, w = x.shape
    tx = torch.round(fx * w).long()
    ty = torch.round(fy * h).long()
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy[None] + ty[:, None, None] + 1).clamp(0, h + 1)
    gx = (gx[None] + tx[:, None, None] + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[torch.arange(n, device=x.device)[:, None, None], gy, gx].permute(0, 3, 1, 2)


def _cutout(x: Tensor, cx: Tensor, cy: Tensor) -> Tensor:
    """Zero a square of side CUTOUT (fraction of the tile) centred at ``cx``, ``cy`` (fractions)."""
    _, _, h, w = x.shape
    u = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
    v = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
    inside_x = (u[None, :] - cx[:, None]).abs() < CUTOUT / 2
    inside_y = (v[None, :] - cy[:, None]).abs() < CUTOUT / 2
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return x * keep[:, None].to(x.dtype)


def _pick(flag: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(flag[:, None, None, None], a, b)


def augment(images: Sequence[Tensor], ops: Sequence[str], p: float) -> list[Tensor]:
    """Augment a batch given at one or more scales; each op hits each tile with probability ``p``.

    Random draws come from the global torch RNG; the result is differentiable in ``images``.
    """
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}; choose from {', '.join(OPS)}")
    out = list(images)
    if p <= 0 or not ops:
        return out
    n, device = out[0].shape[0], out[0].device

    def chosen() -> Tensor:
        return torch.rand(n, device=device) < p

    for op in OPS:  # a fixed order, whatever order ``ops`` lists them in
        if op not in ops:
            continue
        on = chosen()
        if op == "translation":
            f = (torch.rand(2, n, device=device) * 2 - 1) * TRANSLATION * on
            out = [_translate(x, f[0], f[1]) for x in out]
        elif op == "cutout":
            c = torch.rand(2, n, device=device)
            out = [_pick(on, _cutout(x, c[0], c[1]), x) for x in out]
        elif op == "flip":
            horizontal = on & (torch.rand(n, device=device) < 0.5)
            vertical = on & (torch.rand(n, device=device) < 0.5)
            out = [_pick(horizontal, x.flip(3), x) for x in out]
            out = [_pick(vertical, x.flip(2), x) for x in out]
        elif op == "rot90":
            k = torch.randint(0, 4, (n,), device=device) * on
            out = [_rot90(x, k) for x in out]
    return out


def _rot90(x: Tensor, k: Tensor) -> Tensor:
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"rot90 needs square tiles, got {tuple(x.shape[2:])}")
    result = x
    for turns in (1, 2, 3):
        result = _pick(k == turns, torch.rot90(x, turns, dims=(2, 3)), result)
    return result


class AdaptiveProbability:
    """ADA's controller (Karras et al. 2020): raise ``p`` while the discriminator overfits.

    Overfitting shows as real tiles getting confidently positive logits: ``r_t = E[sign(D(real))]``
    above ``target`` raises ``p``, below lowers it; ``p`` can move from 0 to 1 over ``images``
    tiles at most. Updated every ``interval`` observations.
    """

    def __init__(self, p: float, target: float, images: int, interval: int = 4):
        self.p, self.target, self.images, self.interval = float(p), target, images, interval
        self.signs, self.count, self.calls = 0.0, 0, 0

    def observe(self, real_logits: Tensor) -> None:
        self.signs += float(torch.sign(real_logits.detach().float()).sum())
        self.count += real_logits.numel()
        self.calls += 1
        if self.calls % self.interval == 0:
            r_t = self.signs / max(self.count, 1)
            step = self.count / self.images
            self.p = min(max(self.p + (step if r_t > self.target else -step), 0.0), 1.0)
            self.signs, self.count = 0.0, 0

    def state_dict(self) -> dict[str, float | int]:
        return {"p": self.p, "signs": self.signs, "count": self.count, "calls": self.calls}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.p, self.signs = float(state["p"]), float(state["signs"])
        self.count, self.calls = int(state["count"]), int(state["calls"])
