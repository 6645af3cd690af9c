"""Generative models: shared layers (blocks), augmentation, MSG-StyleGAN, SPADE and the mask GAN.

Each model trains through :mod:`geogan.training` as a registered ``TrainTask``.
"""
