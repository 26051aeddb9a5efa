import pytest
import torch

from models import (ARCHITECTURES, DilatedUNet, Discriminator, UNet, block_output_shapes, build_from_args,
                    count_parameters, parameter_table, smooth_fill)

from conftest import SMALL_ARCH_ARGS, small_generator as small

SEED_COUNTS = {"enc1": 39_296, "enc2": 221_440, "enc3": 885_248, "attention": 82_241, "bottleneck": 1_180_160,
               "dec3": 1_769_984, "dec2": 590_080, "dec1": 112_387, "total": 4_880_836}


def test_generator_parameter_counts_match_the_seed():
    assert parameter_table(UNet(nf=64)) == SEED_COUNTS


def test_discriminator_parameter_count_matches_the_seed():
    assert count_parameters(Discriminator()) == 35_553


def test_small_covers_every_architecture():
    assert set(SMALL_ARCH_ARGS) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("size", [(16, 16), (40, 24), (64, 48)])
def test_generator_any_size_divisible_by_8(arch, size):
    g = small(arch)
    x, m = torch.rand(2, 3, *size) * 2 - 1, torch.zeros(2, 1, *size)
    y = g(x, m)
    assert y.shape == x.shape and y.abs().max() <= 1


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_generator_rejects_size_not_divisible_by_8(arch):
    with pytest.raises(ValueError, match="not a multiple of 8"):
        small(arch)(torch.zeros(1, 3, 36, 40), torch.zeros(1, 1, 36, 40))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("prefill", [False, True])
def test_generator_never_sees_hole_pixels(arch, prefill):
    g = small(arch, prefill=prefill).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:16, 8:16] = 1
    x2 = x.clone()
    x2[..., 8:16, 8:16] = 0.7  # change only what the hole hides
    assert torch.equal(g(x, m), g(x2, m))


def test_attention_starts_as_identity():
    g = UNet(nf=8)
    assert g.attention.gamma.item() == 0
    feats = torch.randn(2, 32, 4, 4)
    assert torch.equal(g.attention(feats), feats)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_prefill_generator_has_the_same_parameters_and_keeps_known_pixels_in_range(arch):
    assert parameter_table(small(arch, prefill=True)) == parameter_table(small(arch))
    x, m = torch.rand(2, 3, 24, 32) * 2 - 1, torch.zeros(2, 1, 24, 32)
    m[..., 4:12, 8:20] = 1
    y = small(arch, prefill=True)(x, m)
    assert y.shape == x.shape and y.abs().max() <= 1


def test_model_args_rebuild_the_same_network_and_old_ones_are_u_nets():
    assert type(build_from_args({"nf": 8, "attention": True, "prefill": False})) is UNet  # saved before "arch"
    g = build_from_args({"arch": "dilated", "width": 16, "blocks": 3, "attention": False, "prefill": False})
    assert type(g) is DilatedUNet and len(g.middle) == 3 + 2 and g.stem[1].out_channels == 16
    with pytest.raises(TypeError):
        build_from_args({"arch": "dilated", "nf": 8})  # an argument this architecture does not have
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_from_args({"arch": "resnet"})


def test_dilated_blocks_start_near_the_identity_and_cycle_their_dilations():
    g = DilatedUNet(width=8, blocks=6)
    assert [b.branch[2].dilation[0] for b in g.middle[:6]] == [1, 2, 4, 8, 1, 2]
    x = torch.randn(2, 32, 8, 8)
    assert (g.middle[0](x) - x).abs().mean() < 0.1 * x.abs().mean()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_skip_of_the_diagram_names_blocks_of_the_model(arch):
    g = small(arch)
    names = set(block_output_shapes(g, 32)) | {"input"}
    assert type(g).skips and all(a in names and b in names for a, b in type(g).skips)


def test_smooth_fill_keeps_known_pixels_and_interpolates_smoothly():
    h, w = 48, 40
    ramp = torch.linspace(-1, 1, w).expand(1, 3, h, w).clone()  # a horizontal ramp
    m = torch.zeros(1, 1, h, w)
    m[..., 10:30, 12:28] = 1
    fill = smooth_fill(ramp, m)
    assert torch.equal(fill * (1 - m), ramp * (1 - m))  # known pixels untouched
    inside = (fill - ramp)[..., 10:30, 12:28]
    assert inside.abs().mean() < 0.1  # a smooth membrane, not mean colour (which errs ~0.4 here)
    const = torch.full((1, 3, h, w), 0.3)
    assert torch.allclose(smooth_fill(const, m), const, atol=1e-5)
    assert torch.isfinite(smooth_fill(ramp, torch.ones(1, 1, h, w))).all()  # nothing known: no NaN


def test_block_output_shapes_follow_the_networks():
    shapes = block_output_shapes(UNet(nf=8), 32)
    assert shapes["enc1"] == (8, 32, 32) and shapes["attention"] == (32, 4, 4) and shapes["dec1"] == (3, 32, 32)
    shapes = block_output_shapes(DilatedUNet(width=8, blocks=2), 32)
    assert shapes["stem"] == (8, 16, 16) and shapes["middle"] == (32, 4, 4) and shapes["head"] == (3, 32, 32)
