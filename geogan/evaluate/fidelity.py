"""Fidelity: how close synthetic chips are to real ones, with no downloaded network weights.

Every distance compares a set of chips with a reference set (the real *training* chips) and is 0
for identical distributions; the report gives each one twice, for the synthetic chips and for the
real held-out chips, whose value is the floor that real data from other scenes reaches.

- :func:`band_wasserstein`: per-band Wasserstein-1 distance of normalised pixel values ([-1, 1]).
- :func:`spectral_indices` / :func:`index_distances`: NDVI, NDWI (McFeeters) and NDBI per pixel
  and the Wasserstein-1 distance of their distributions.
- :func:`correlation_difference`: mean absolute difference of the 13 x 13 band correlation matrices.
- :func:`sliced_wasserstein`: SWD of 7 x 7 patches of each Laplacian-pyramid level (Karras et al.
  2018, ProGAN), both sets normalised with the reference set's per-level band mean and std.
- :class:`Encoder` / :func:`train_encoder`: a small convolutional autoencoder trained here on the
  real training chips (plus a class-share head when masks exist); :func:`frechet_distance` and
  :func:`precision_recall` (k-NN manifolds, Kynkäänniemi et al. 2019) work in its feature space.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance
from torch import nn

from geogan.bands import S2
from geogan.progress import Progress

INDICES = {  # name: (band a, band b) of (a - b) / (a + b)
    "NDVI": ("B08", "B04"),
    "NDWI": ("B03", "B08"),
    "NDBI": ("B11", "B08"),
}


def _pixels(x: np.ndarray, valid: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` random valid pixels of (N, C, H, W) ``x`` as (C, n)."""
    flat = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
    where = np.flatnonzero(valid.reshape(-1))
    if where.size > n:
        where = rng.choice(where, n, replace=False)
    return flat[:, where]


def valid_pixels(dn: np.ndarray) -> np.ndarray:
    """(N, H, W) True where a chip has data (S2 nodata is 0 in every band)."""
    return (dn != 0).any(axis=1)


def band_wasserstein(
    x: np.ndarray, dn: np.ndarray, ref_x: np.ndarray, ref_dn: np.ndarray, pixels: int = 200_000, seed: int = 0
) -> list[float]:
    """Per-band Wasserstein-1 distance between normalised values of two sets (random valid pixels)."""
    rng = np.random.default_rng(seed)
    a = _pixels(x, valid_pixels(dn), pixels, rng)
    b = _pixels(ref_x, valid_pixels(ref_dn), pixels, rng)
    return [float(wasserstein_distance(a[i], b[i])) for i in range(a.shape[0])]


def spectral_indices(dn: np.ndarray, pixels: int = 200_000, seed: int = 0) -> dict[str, np.ndarray]:
    """NDVI, NDWI and NDBI of up to ``pixels`` random valid pixels of (N, 13, H, W) DN chips."""
    rng = np.random.default_rng(seed)
    names = [b for pair in INDICES.values() for b in pair]
    picked = _pixels(dn[:, [S2.index(b) for b in names]], valid_pixels(dn), pixels, rng).astype(np.float64)
    bands = dict(zip(names, picked, strict=False))
    out = {}
    for name, (a, b) in INDICES.items():
        total = bands[a] + bands[b]
        out[name] = np.where(total > 0, (bands[a] - bands[b]) / np.maximum(total, 1e-9), 0.0)
    return out


def index_distances(dn: np.ndarray, ref_dn: np.ndarray, pixels: int = 200_000, seed: int = 0) -> dict:
    """Wasserstein-1 distance of each spectral index's distribution, and both sets' means."""
    a, b = spectral_indices(dn, pixels, seed), spectral_indices(ref_dn, pixels, seed + 1)
    return {
        name: {
            "wasserstein": float(wasserstein_distance(a[name], b[name])),
            "mean": float(a[name].mean()),
            "reference_mean": float(b[name].mean()),
        }
        for name in INDICES
    }


def correlation_matrix(x: np.ndarray, dn: np.ndarray, pixels: int = 200_000, seed: int = 0) -> np.ndarray:
    """The band-by-band Pearson correlation of normalised values (random valid pixels)."""
    p = _pixels(x, valid_pixels(dn), pixels, np.random.default_rng(seed)).astype(np.float64)
    p = p + 1e-9 * np.random.default_rng(seed).standard_normal(p.shape)  # constant bands: no NaN
    return cast(np.ndarray, np.corrcoef(p))  # a 2-D input gives a matrix, never a scalar


def correlation_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of the off-diagonal entries of two correlation matrices."""
    off = ~np.eye(a.shape[0], dtype=bool)
    return float(np.abs(a - b)[off].mean())


# -- Sliced Wasserstein distance on Laplacian pyramids ------------------------------------------------

_GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = (_GAUSS[:, None] * _GAUSS[None, :]).to(x)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def laplacian_pyramid(x: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """Band-pass levels, finest first, down to ``min_size`` px (the last level is the low-pass rest)."""
    levels = []
    while x.shape[-1] > min_size and x.shape[-1] % 2 == 0:
        small = _blur(x)[..., ::2, ::2]
        up = F.interpolate(small, scale_factor=2, mode="nearest")
        levels.append(x - _blur(up))
        x = small
    levels.append(x)
    return levels


def pyramid_descriptors(
    x: np.ndarray, patches: int = 64, patch: int = 7, min_size: int = 16, seed: int = 0
) -> list[np.ndarray]:
    """Per level, ``patches`` random ``patch`` x ``patch`` neighbourhoods of every chip, flattened."""
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = []
    for start in range(0, len(x), 64):
        levels = laplacian_pyramid(torch.from_numpy(np.ascontiguousarray(x[start : start + 64])), min_size)
        for li, band_pass in enumerate(levels):
            level = band_pass.numpy()
            n, c, h, w = level.shape
            size = min(patch, h, w)
            rows = rng.integers(0, h - size + 1, (n, patches))[:, :, None, None] + np.arange(size)[:, None]
            cols = rng.integers(0, w - size + 1, (n, patches))[:, :, None, None] + np.arange(size)[None, :]
            chip = np.arange(n)[:, None, None, None]
            d = level[chip, :, rows, cols]  # (n, patches, size, size, c)
            d = d.transpose(0, 1, 4, 2, 3).reshape(n * patches, -1)
            if li == len(out):
                out.append([])
            out[li].append(d)
    return [np.concatenate(d) for d in out]


def _swd(a: np.ndarray, b: np.ndarray, directions: int, repeats: int, rng: np.random.Generator) -> float:
    n = min(len(a), len(b))
    a = a[rng.choice(len(a), n, replace=False)]
    b = b[rng.choice(len(b), n, replace=False)]
    values = []
    for _ in range(repeats):
        d = rng.standard_normal((a.shape[1], directions))
        d /= np.linalg.norm(d, axis=0, keepdims=True)
        pa, pb = np.sort(a @ d, axis=0), np.sort(b @ d, axis=0)
        values.append(np.abs(pa - pb).mean())
    return float(np.mean(values))


def sliced_wasserstein(
    x: np.ndarray,
    ref_x: np.ndarray,
    patches: int = 64,
    directions: int = 128,
    repeats: int = 4,
    min_size: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """SWD per Laplacian level (finest first) and their mean, between chips ``x`` and ``ref_x``.

    Descriptors of both sets are standardised with the reference set's mean and std per band and
    level, so a shift of a band's level or contrast counts, as well as texture.
    """
    rng = np.random.default_rng(seed)
    da = pyramid_descriptors(x, patches, min_size=min_size, seed=seed)
    db = pyramid_descriptors(ref_x, patches, min_size=min_size, seed=seed + 1)
    per_level = []
    c = x.shape[1]
    for a, b in zip(da, db, strict=True):
        b3 = b.reshape(len(b), c, -1)
        mean, std = b3.mean(axis=(0, 2))[None, :, None], b3.std(axis=(0, 2))[None, :, None] + 1e-6
        a = ((a.reshape(len(a), c, -1) - mean) / std).reshape(len(a), -1)
        b = ((b3 - mean) / std).reshape(len(b), -1)
        per_level.append(_swd(a, b, directions, repeats, rng))
    return {"levels": per_level, "mean": float(np.mean(per_level))}


# -- Encoder features: Fréchet distance and k-NN precision/recall -------------------------------------


class Encoder(nn.Module):
    """A small convolutional autoencoder; :meth:`features` is the mean and std of its code per channel."""

    def __init__(self, channels: int = 13, width: int = 32, code: int = 16, classes: int = 0) -> None:
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width * 2, 4, 2, 1),
            nn.GELU(),
            nn.Conv2d(width * 2, width * 2, 4, 2, 1),
            nn.GELU(),
            nn.Conv2d(width * 2, code, 4, 2, 1),
        )
        self.decode = nn.Sequential(
            nn.ConvTranspose2d(code, width * 2, 4, 2, 1),
            nn.GELU(),
            nn.ConvTranspose2d(width * 2, width * 2, 4, 2, 1),
            nn.GELU(),
            nn.ConvTranspose2d(width * 2, width, 4, 2, 1),
            nn.GELU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        self.shares = nn.Linear(2 * code, classes) if classes else None

    def pooled(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.mean(dim=(2, 3)), z.std(dim=(2, 3))], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(self.encode(x))


@dataclass
class EncoderRecord:
    """How the feature encoder was trained: shown in the report and kept in metrics.json."""

    chips: int
    steps: int
    batch_size: int
    lr: float
    seed: int
    parameters: int
    feature_dim: int
    class_head: bool
    seconds: float = 0.0
    device: str = "cpu"
    loss_start: float = float("nan")
    loss_end: float = float("nan")
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, total loss)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _class_shares(mask: torch.Tensor, classes: int) -> torch.Tensor:
    onehot = F.one_hot(mask.clamp(min=0), classes).float() * (mask >= 0)[..., None]
    counts = onehot.sum(dim=(1, 2))
    return counts / counts.sum(dim=1, keepdim=True).clamp(min=1)


def _dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    k = int(torch.randint(4, (), generator=generator))
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if bool(torch.randint(2, (), generator=generator)) else x


def train_encoder(
    x: np.ndarray,
    mask: np.ndarray | None = None,
    classes: int = 0,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    width: int = 32,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[Encoder, EncoderRecord]:
    """Train an :class:`Encoder` on real chips ``x`` (N, C, H, W in [-1, 1]); H and W multiples of 8.

    Loss: mean squared reconstruction error, plus the cross-entropy of predicted against actual
    class shares of each chip when ``mask`` (class indices) is given. Random flips and 90 degree
    rotations; seeded, so the same chips and seed give the same encoder.
    """
    if x.shape[-1] % 8 or x.shape[-2] % 8:
        raise ValueError(
            f"the feature encoder needs chips whose sides are multiples of 8, got {x.shape[-2:]}"
        )
    torch.manual_seed(seed)
    use_masks = mask is not None and classes > 0
    model = Encoder(x.shape[1], width=width, classes=classes if use_masks else 0).to(device)
    record = EncoderRecord(
        chips=len(x),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        parameters=sum(p.numel() for p in model.parameters()),
        feature_dim=2 * cast(nn.Conv2d, model.encode[-1]).out_channels,
        class_head=use_masks,
        device=str(device),
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(x)
    masks = torch.from_numpy(mask) if use_masks else None
    start = time.perf_counter()
    model.train()
    with Progress(disable=not progress) as bar:
        task = bar.add_task("training the feature encoder", total=steps)
        for step in range(steps):
            rows = torch.randint(len(data), (min(batch_size, len(data)),), generator=generator)
            batch = data[rows]
            if masks is not None:
                batch = torch.cat([batch, masks[rows][:, None].float()], dim=1)
            batch = _dihedral(batch, generator).to(device)
            image = batch[:, : x.shape[1]]
            z = model.encode(image)
            loss = F.mse_loss(model.decode(z), image)
            if masks is not None:
                assert model.shares is not None  # masks are used only with a class head
                target = _class_shares(batch[:, -1].long(), classes)
                loss = loss + -(target * F.log_softmax(model.shares(model.pooled(z)), dim=1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if step == 0:
                record.loss_start = value
            if step % max(1, steps // 50) == 0 or step == steps - 1:
                record.curve.append((step, value))
            record.loss_end = value
            bar.advance(task)
    record.seconds = round(time.perf_counter() - start, 2)
    model.eval()
    return model, record


@torch.no_grad()
def encoder_features(model: Encoder, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, D) float64 features of chips ``x``."""
    device = next(model.parameters()).device
    parts = [
        model.features(torch.from_numpy(x[i : i + batch_size]).to(device)).cpu().double().numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N, D)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + eps) @ (s2 + eps))
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))
    return max(value, 0.0)


def _kth_radius(f: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(f, f)
    return d.kthvalue(min(k + 1, len(f)), dim=1).values  # +1: each point is its own nearest


def precision_recall(fake: np.ndarray, real: np.ndarray, k: int = 3) -> dict[str, float]:
    """k-NN precision (fake chips inside the real manifold) and recall (real inside the fake one)."""
    f, r = torch.from_numpy(fake), torch.from_numpy(real)
    rr, rf = _kth_radius(r, k), _kth_radius(f, k)
    d = torch.cdist(f, r)  # (fake, real)
    precision = (d <= rr[None, :]).any(dim=1).double().mean()
    recall = (d.T <= rf[None, :]).any(dim=1).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def standardise(features: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Features scaled with the reference features' mean and std per dimension."""
    return (features - ref.mean(0)) / (ref.std(0) + 1e-9)


def compare(
    x: np.ndarray,
    dn: np.ndarray,
    ref_x: np.ndarray,
    ref_dn: np.ndarray,
    features: np.ndarray | None = None,
    ref_features: np.ndarray | None = None,
    pixels: int = 200_000,
    patches: int = 64,
    k: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Every fidelity distance of one set of chips against the reference set."""
    out: dict[str, Any] = {}
    w1 = band_wasserstein(x, dn, ref_x, ref_dn, pixels, seed)
    out["band_wasserstein"] = dict(zip(S2.band_names, w1, strict=True))
    out["band_wasserstein_mean"] = float(np.mean(w1))
    out["indices"] = index_distances(dn, ref_dn, pixels, seed)
    ca, cb = correlation_matrix(x, dn, pixels, seed), correlation_matrix(ref_x, ref_dn, pixels, seed)
    out["correlation_difference"] = correlation_difference(ca, cb)
    out["swd"] = sliced_wasserstein(x, ref_x, patches=patches, seed=seed)
    if features is not None and ref_features is not None:
        fa, fb = standardise(features, ref_features), standardise(ref_features, ref_features)
        out["frechet_distance"] = frechet_distance(fa, fb)
        out.update(precision_recall(fa, fb, k))
    return out
