"""MSG-StyleGAN networks, shared blocks and multispectral augmentation (real torch, tiny sizes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geogan.models.augment import AdaptiveProbability, augment
from geogan.models.blocks import MinibatchStdDev, ModulatedConv2d
from geogan.models.msg_stylegan import MSGDiscriminator, MSGGenerator, pyramid

TINY = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)


@pytest.mark.parametrize("bands", [13, 15])
def test_generator_emits_every_scale_with_the_configured_bands(bands):
    torch.manual_seed(0)
    g = MSGGenerator(bands, 32, **TINY)
    images = g(torch.randn(3, 16))
    assert [tuple(x.shape) for x in images] == [(3, bands, r, r) for r in (4, 8, 16, 32)]
    # Each scale's output depends on the latent: different z, different images at every scale.
    other = g(torch.randn(3, 16))
    assert all((a - b).abs().mean() > 1e-4 for a, b in zip(images, other, strict=True))


@pytest.mark.parametrize("combine", ["simple", "lin_cat", "cat_lin"])
def test_discriminator_reads_every_scale_and_passes_gradients_to_every_generator_output(combine):
    torch.manual_seed(0)
    g = MSGGenerator(13, 32, **TINY)
    d = MSGDiscriminator(13, 32, channel_base=128, channel_max=16, combine=combine, mbstd_group=2)
    logits = d(g(torch.randn(4, 16)))
    assert logits.shape == (4,)
    logits.sum().backward()
    # MSG: the gradient reaches each block's image output directly, not only through the top one.
    for to_bands in g.outputs:
        assert to_bands.bias.grad is not None and to_bands.bias.grad.abs().sum() > 0
    # Changing only the 8 x 8 input changes the logits: that scale is read at its own depth.
    images = [torch.zeros(2, 13, r, r) for r in (4, 8, 16, 32)]
    before = d(images)
    images[1] = torch.ones(2, 13, 8, 8)
    assert (d(images) - before).abs().max() > 1e-5


def test_discriminator_refuses_the_wrong_number_of_scales():
    d = MSGDiscriminator(13, 32, channel_base=128, channel_max=16)
    with pytest.raises(ValueError, match="4 scales, got 3"):
        d([torch.zeros(2, 13, r, r) for r in (8, 16, 32)])


def test_pyramid_averages_down_to_4_px():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(1, 2, 2, 2)  # 8 x 8
    levels = pyramid(x, 2)
    assert [t.shape[-1] for t in levels] == [4, 8]
    assert torch.allclose(levels[0], F.avg_pool2d(x, 2))


def test_modulated_conv_demodulates_to_unit_variance_whatever_the_style():
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 64, 3, w_dim=8)
    x = torch.randn(2, 64, 16, 16)
    quiet, loud = conv(x, torch.zeros(2, 8)), conv(x, 10 * torch.randn(2, 8))
    for y in (quiet, loud):
        assert 0.7 < y[..., 1:-1, 1:-1].std() < 1.3


def test_minibatch_stddev_appends_the_group_spread():
    x = torch.zeros(4, 3, 2, 2)
    x[2:] = 2.0  # groups of 2 pair sample i with i + 2: spread 1 in every feature
    y = MinibatchStdDev(2)(x)
    assert y.shape == (4, 4, 2, 2)
    assert torch.allclose(y[:, 3], torch.ones(4, 2, 2), atol=1e-3)


def test_augment_treats_every_band_and_every_scale_alike():
    torch.manual_seed(1)
    band = torch.rand(6, 1, 16, 16)
    image = band.repeat(1, 13, 1, 1)  # 13 identical bands
    for ops in (["translation"], ["cutout"], ["flip"], ["rot90"], ["translation", "cutout", "flip", "rot90"]):
        out = augment(pyramid(image, 3), ops, p=1.0)
        for scale in out:  # geometric only: the bands stay identical, values are not recoloured
            assert torch.equal(scale, scale[:, :1].expand_as(scale))
        assert not torch.equal(out[-1], image)
    # Flips and rotations: the smaller scales are the same transform of the smaller images.
    torch.manual_seed(2)
    out = augment(pyramid(image, 3), ["flip", "rot90"], p=1.0)
    assert torch.allclose(out[0], F.avg_pool2d(F.avg_pool2d(out[-1], 2), 2), atol=1e-6)


def test_augment_is_differentiable_and_p0_is_identity():
    x = torch.rand(4, 13, 8, 8, requires_grad=True)
    (out,) = augment([x], ["translation", "cutout", "flip", "rot90"], p=1.0)
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0
    assert augment([x], ["translation"], p=0.0)[0] is x
    with pytest.raises(ValueError, match="unknown augmentations.*hue"):
        augment([x], ["hue"], p=1.0)


def test_ada_raises_p_while_d_is_confident_on_reals_and_lowers_it_after():
    ada = AdaptiveProbability(0.0, target=0.6, images=64, interval=2)
    for _ in range(4):  # 32 tiles: p may move by 32 / 64
        ada.observe(torch.ones(8))  # r_t = 1 > 0.6
    assert ada.p == pytest.approx(0.5)
    state = ada.state_dict()
    for _ in range(4):
        ada.observe(-torch.ones(8))
    assert ada.p == pytest.approx(0.0)
    ada.load_state_dict(state)
    assert ada.p == pytest.approx(0.5)
