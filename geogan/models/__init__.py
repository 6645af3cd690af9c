"""Generative models: shared layers (blocks), augmentation, MSG-StyleGAN, SPADE and the mask GAN.

Each model trains through :mod:`geogan.training` as a ``TrainTask``. :data:`MODELS` is the one
list of them: ``geogan train NAME``, the pipeline's train stages, QGIS and the checkpoints all find
a model by its name here. Its options live in :mod:`geogan.models.options` (importing them does not
import torch); its task class is imported only when it trains or samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from geogan.config import TrainOptions
from geogan.models.options import MaskGANOptions, MSGStyleGANOptions, SpadeOptions


@dataclass(frozen=True)
class Model:
    options: type[TrainOptions]
    task: str  # "module:class" of its TrainTask
    summary: str  # the help line of `geogan train NAME`


MODELS: dict[str, Model] = {
    "msg-stylegan": Model(
        MSGStyleGANOptions,
        "geogan.models.msg_stylegan:MSGStyleGANTask",
        "Train MSG-StyleGAN: unconditional tiles of every band, an image out of every block.",
    ),
    "spade": Model(
        SpadeOptions,
        "geogan.models.spade:SpadeTask",
        "Train SPADE (dual GAN stage II): land-cover masks -> images of every band, pixel-aligned.",
    ),
    "mask-gan": Model(
        MaskGANOptions,
        "geogan.models.mask_gan:MaskGANTask",
        "Train the mask GAN (dual GAN stage I): land-cover maps with class-frequency control.",
    ),
}
