import pytest
import torch

from models import Discriminator, Generator, count_parameters, parameter_table

SEED_COUNTS = {"enc1": 39_296, "enc2": 221_440, "enc3": 885_248, "attention": 82_241, "bottleneck": 1_180_160,
               "dec3": 1_769_984, "dec2": 590_080, "dec1": 112_387, "total": 4_880_836}


def test_generator_parameter_counts_match_the_seed():
    assert parameter_table(Generator(nf=64)) == SEED_COUNTS


def test_discriminator_parameter_count_matches_the_seed():
    assert count_parameters(Discriminator()) == 35_553


@pytest.mark.parametrize("size", [(16, 16), (40, 24), (64, 48)])
def test_generator_any_size_divisible_by_8(size):
    g = Generator(nf=8)
    x, m = torch.rand(2, 3, *size) * 2 - 1, torch.zeros(2, 1, *size)
    y = g(x, m)
    assert y.shape == x.shape and y.abs().max() <= 1


def test_generator_rejects_size_not_divisible_by_8():
    with pytest.raises(ValueError, match="divisible by 8"):
        Generator(nf=8)(torch.zeros(1, 3, 36, 40), torch.zeros(1, 1, 36, 40))


def test_generator_never_sees_hole_pixels():
    g = Generator(nf=8).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:16, 8:16] = 1
    x2 = x.clone()
    x2[..., 8:16, 8:16] = 0.7  # change only what the hole hides
    assert torch.equal(g(x, m), g(x2, m))


def test_attention_starts_as_identity():
    g = Generator(nf=8)
    assert g.attention.gamma.item() == 0
    feats = torch.randn(2, 32, 4, 4)
    assert torch.equal(g.attention(feats), feats)
