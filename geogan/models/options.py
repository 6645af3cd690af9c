"""The options of each model ``geogan train`` knows, beside the models (no torch imported here).

:class:`geogan.config.TrainOptions` holds what every training run shares; each model's class below
adds its networks, losses, optimiser and augmentation, and its ``tiny`` preset: the network sizes
the tests, the procedural demo and ``pipeline/demo.yaml`` train (seconds a step on a CPU). A new
model adds its class here, its module beside the others and one line to :data:`geogan.models.MODELS`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from geogan.config import TrainOptions

Augmentation = Literal["translation", "cutout", "flip", "rot90"]


class AdversarialOptions(TrainOptions):
    """What every GAN shares: a generator and a discriminator with their own Adam learning rates,
    and differentiable augmentation of what the discriminator sees."""

    lr_g: float = Field(0.002, gt=0, description="generator learning rate (Adam)")
    lr_d: float = Field(0.002, gt=0, description="discriminator learning rate (Adam)")
    betas: tuple[float, float] = Field((0.0, 0.99), description="Adam betas")
    augment: tuple[Augmentation, ...] = Field(
        ("translation", "cutout", "flip", "rot90"),
        description="differentiable augmentations for the discriminator (same on all bands)",
    )
    augment_p: float = Field(1.0, ge=0, le=1, description="probability of each augmentation per tile")


class MSGStyleGANOptions(AdversarialOptions):
    """MSG-StyleGAN: unconditional multi-band tiles, an image out of every generator block."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(z_dim=16, w_dim=16, mapping_layers=1, channel_base=128, channel_max=16)
    }

    resolution: int | None = Field(
        None, ge=8, le=1024, description="tile size in pixels, a power of two (default: the tiles' size)"
    )
    z_dim: int = Field(512, ge=1, description="latent size")
    w_dim: int = Field(512, ge=1, description="style size")
    mapping_layers: int = Field(8, ge=1, description="layers of the mapping network")
    channel_base: int = Field(16_384, ge=1, description="feature maps at resolution r: base / r ...")
    channel_max: int = Field(512, ge=1, description="... capped at this")
    combine: Literal["simple", "lin_cat", "cat_lin"] = Field(
        "cat_lin", description="how the discriminator joins each scale's image to its features (MSG-GAN)"
    )
    mbstd_group: int = Field(4, ge=1, description="group size of the minibatch standard deviation")
    r1_gamma: float = Field(10.0, ge=0, description="weight of the R1 gradient penalty on real tiles")
    r1_every: int = Field(16, ge=1, description="lazy regularisation: R1 every this many steps")
    ada_target: float | None = Field(
        None, gt=0, lt=1, description="adapt augment_p so the mean sign of D(real) meets this (ADA)"
    )
    ada_images: int = Field(100_000, ge=1, description="images over which ADA may move p from 0 to 1")

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and value & (value - 1):
            raise ValueError(f"resolution must be a power of two, got {value}")
        return value


class DualGANOptions(AdversarialOptions):
    """What both dual-GAN stages share: masks of the run's scheme from the ``lc`` or ``mask`` chips,
    hinge losses (no R1) and a fixed augmentation probability (no ADA)."""

    # Before geogan's checkpoint version 4 every training run carried the MSG-StyleGAN's R1 and ADA
    # options; the dual GAN refused all but these values (R1 off, no ADA), so they meant nothing.
    retired: ClassVar[dict[str, Any]] = {
        "r1_gamma": 0.0,
        "r1_every": ...,
        "ada_target": None,
        "ada_images": ...,
    }
    #: most generator levels when num_up is left to the tile size (each stage sets its own)
    max_levels: ClassVar[int]

    mask_role: Literal["lc", "mask"] = Field(
        "lc", description="mask chips: lc (SEN12MS land cover) or mask (from `geogan labels rasterize`)"
    )
    lr_g: float = Field(0.0001, gt=0, description="generator learning rate (Adam; two time-scale rule)")
    lr_d: float = Field(0.0004, gt=0, description="discriminator learning rate (Adam)")
    betas: tuple[float, float] = Field((0.0, 0.999), description="Adam betas")
    augment: tuple[Augmentation, ...] = Field(
        (), description="differentiable augmentations for the discriminator, applied alike to image and mask"
    )
    num_up: int | None = Field(
        None,
        ge=1,
        le=8,
        description="generator levels: its first map is tile size / 2**num_up (default: from the tile "
        "size, a 4 px first map, at most 5 levels for SPADE and 4 for the mask GAN)",
    )
    channels: int = Field(64, ge=1, description="feature maps of the last generator block (x2 per level up)")
    d_channels: int = Field(64, ge=1, description="feature maps of the discriminator's first layer")


class SpadeOptions(DualGANOptions):
    """Stage II, SPADE: a mask (class indices) -> an image of every band, pixel-aligned with it."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(channels=8, z_dim=8, spade_hidden=16, d_channels=16, d_layers=3, num_d=2)
    }
    max_levels: ClassVar[int] = 5  # on 256 px tiles it starts at 8 px, as NVlabs SPADE

    z_dim: int = Field(64, ge=1, description="style (noise) vector size")
    spade_hidden: int = Field(64, ge=1, description="hidden maps of each SPADE normalisation")
    discriminator: Literal["patchgan", "oasis"] = Field(
        "patchgan", description="patchgan: multi-scale, hinge + feature matching; oasis: K+1 classes a pixel"
    )
    d_layers: int = Field(3, ge=1, description="PatchGAN layers, or OASIS U-Net depth")
    num_d: int = Field(2, ge=1, description="PatchGAN scales")
    encoder: bool = Field(False, description="train an image encoder (VAE) for styles taken from examples")
    lambda_fm: float = Field(10.0, ge=0, description="weight of discriminator feature matching (patchgan)")
    lambda_kl: float = Field(0.05, ge=0, description="weight of the encoder's KL term")
    lambda_class_mean: float = Field(
        10.0,
        ge=0,
        description="weight of the class-mean loss: each class's mean of every band in a fake batch "
        "against the real chips' (0: off)",
    )
    unknown: Literal["learn", "ignore"] = Field(
        "learn",
        description="unlabelled pixels of the real masks, to the OASIS discriminator: learn (one more class, "
        "so the generator is judged there too) or ignore (left out of its losses)",
    )
    labelmix: bool = Field(True, description="LabelMix regularisation of the OASIS discriminator")
    lambda_labelmix: float = Field(10.0, ge=0, description="weight of LabelMix")

    def unused(self) -> set[str]:
        # Only `unknown`, the field added after pipelines had recorded the others, is left out.
        return {"unknown"} if self.discriminator == "patchgan" else set()


class MaskGANOptions(DualGANOptions):
    """Stage I: categorical land-cover maps conditioned on class frequencies."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(channels=16, z_dim=8, d_channels=16, d_layers=3, bank_size=256)
    }
    max_levels: ClassVar[int] = 4  # on 256 px tiles the noise map is 16 px

    resolution: int | None = Field(
        None, ge=8, le=4096, description="tile size the discriminator is trained at (default: the tiles')"
    )
    unknown: Literal["learn", "fill"] = Field(
        "learn",
        description="unlabelled pixels of the real masks: learn (one more class to the GAN: generated masks "
        "are partly unlabelled like the real ones) or fill (a class at every pixel)",
    )
    z_dim: int = Field(32, ge=1, description="channels of the spatial noise map")
    d_layers: int = Field(4, ge=1, description="strided discriminator layers")
    output: Literal["gumbel", "softmax"] = Field(
        "gumbel", description="what D sees of G: straight-through Gumbel one-hot samples, or the softmax"
    )
    tau: float = Field(1.0, gt=0, description="Gumbel-softmax temperature")
    lambda_freq: float = Field(10.0, ge=0, description="weight of the class-frequency condition loss")
    bank_size: int = Field(1024, ge=1, description="class-frequency vectors of real tiles kept for sampling")
