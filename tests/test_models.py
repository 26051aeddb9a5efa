import pytest
import torch

from models import (ARCHITECTURES, DilatedUNet, Discriminator, UNet, block_output_shapes, build_from_args,
                    count_parameters, parameter_table, smooth_fill, upsample)

from conftest import SMALL_ARCH_ARGS, small_generator as small

SEED_COUNTS = {"enc1": 39_296, "enc2": 221_440, "enc3": 885_248, "attention": 82_241, "bottleneck": 1_180_160,
               "dec3": 1_769_984, "dec2": 590_080, "dec1": 112_387, "total": 4_880_836}


def test_generator_parameter_counts_match_the_seed():
    assert parameter_table(UNet(nf=64)) == SEED_COUNTS


def test_discriminator_parameter_count_matches_the_seed():
    assert count_parameters(Discriminator()) == 35_553


def test_a_half_resolution_discriminator_cannot_see_pixel_grain():
    """d_scale 2: the same weights judge the average-pooled image, so a 2-px checkerboard (the grain a generator
    fooled the full-resolution judge with) changes no logit; at scale 1 it does."""
    torch.manual_seed(0)
    coarse = Discriminator(nf=8, in_channels=3, layers=3, norm="spectral", scale=2).eval()
    fine = Discriminator(nf=8, in_channels=3, layers=3, norm="spectral").eval()
    fine.load_state_dict(coarse.state_dict())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    grain = 0.2 * (torch.arange(64)[:, None] + torch.arange(64)[None, :]).remainder(2).float().sub(0.5)  # 64, 64
    with torch.no_grad():
        assert coarse(x).shape[-2:] == (3, 3) and fine(x).shape[-2:] == (7, 7)
        assert torch.allclose(coarse(x), fine(torch.nn.functional.avg_pool2d(x, 2)), atol=1e-6)
        assert torch.allclose(coarse(x + grain), coarse(x), atol=1e-5)
        assert not torch.allclose(fine(x + grain), fine(x), atol=1e-3)


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


def test_a_blurred_upsampling_turns_ramps_into_ramps_whatever_its_weights():
    """Each of a pixel shuffle's four output phases has its own weights, so a ramp of features comes out with a
    2-phase pattern on it (the grid a GAN drew under large boxes); the binomial blur after it returns an exact
    ramp (zero second differences away from the border) for any weights, and adds no parameter."""
    torch.manual_seed(0)
    i, j = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    slopes = torch.randn(8, 3)
    ramp = (slopes[:, :1, None] + slopes[:, 1:2, None] * i + slopes[:, 2:, None] * j).unsqueeze(0)  # 1, 8, 12, 12
    bent = lambda y: max((y[..., 2:-2, 1:-3] - 2 * y[..., 2:-2, 2:-2] + y[..., 2:-2, 3:-1]).abs().max(),  # noqa: E731
                         (y[..., 1:-3, 2:-2] - 2 * y[..., 2:-2, 2:-2] + y[..., 3:-1, 2:-2]).abs().max())
    plain, blurred = upsample(8, 4), upsample(8, 4, blur=True)
    blurred.load_state_dict(plain.state_dict())
    with torch.no_grad():
        y_plain, y_blurred = plain[:-1](ramp), blurred[:-1](ramp)  # 1, 4, 24, 24, before the activation
    assert bent(y_plain) > 0.1 * y_plain.std() and bent(y_blurred) < 1e-4 * y_blurred.std()
    assert parameter_table(DilatedUNet(width=8, blocks=2, blur_up=True)) == parameter_table(DilatedUNet(width=8, blocks=2))


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


def reference_smooth_fill(image, mask, levels=5, iters=8, fine_iters=2):
    """smooth_fill as first written, with avg_pool2d's 3x3 average (the model now uses a faster convolution)."""
    known = 1 - mask
    sums, weights = [image * known], [known]
    for _ in range(levels):
        sums.append(torch.nn.functional.avg_pool2d(sums[-1], 2, ceil_mode=True, count_include_pad=False))
        weights.append(torch.nn.functional.avg_pool2d(weights[-1], 2, ceil_mode=True, count_include_pad=False))
    fill = sums[-1] / weights[-1].clamp_min(1e-6)
    fill = torch.where(weights[-1] > 0, fill, fill.mean(dim=(2, 3), keepdim=True))
    for level in range(levels - 1, -1, -1):
        s, w = sums[level], weights[level]
        fill = s + (1 - w) * torch.nn.functional.interpolate(fill, size=s.shape[-2:], mode="bilinear", align_corners=False)
        free = (w < 1).float()
        fixed = fill * (1 - free)
        for _ in range(fine_iters if level < 2 else iters):
            fill = fixed + free * torch.nn.functional.avg_pool2d(fill, 3, stride=1, padding=1, count_include_pad=False)
    return fill


@pytest.mark.parametrize("size", [(48, 40), (37, 53)])
def test_smooth_fill_is_the_push_pull_fill_as_first_written(size):
    torch.manual_seed(0)
    x = torch.rand(2, 3, *size) * 2 - 1
    m = (torch.rand(2, 1, *size) < 0.3).float()
    assert torch.allclose(smooth_fill(x, m), reference_smooth_fill(x, m), atol=1e-5)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_an_untrained_prefill_generator_returns_the_fill_exactly(arch):
    """The residual starts at zero: flat colours and ramps come back as the fill has them (within 0.3 grey levels)."""
    g = small(arch, prefill=True).eval()
    ramp = torch.linspace(-0.8, 0.6, 48).view(1, 1, 1, 48).expand(1, 3, 48, 48).contiguous()
    m = torch.zeros(1, 1, 48, 48)
    m[..., 20:26] = 1  # a 6-px vertical stroke
    with torch.no_grad():
        out = g(ramp, m)
    assert torch.equal(out, smooth_fill(ramp, m).clamp(-1, 1))
    assert ((out - ramp) * m).abs().max() * 127.5 < 0.3


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_a_gated_generator_keeps_the_exact_fill_over_flat_colours_and_ramps_even_trained(arch):
    """With --gate the correction is scaled by the surroundings' curvature: a network whose last layer is far
    from zero (as a trained one's is) still returns the fill (within a quarter grey level) over a flat colour
    and a linear ramp, yet changes a textured hole; without the gate the same weights tint both."""
    torch.manual_seed(0)
    gated, plain = (small(arch, prefill=True, gate=gate).eval() for gate in (0.01, 0.0))
    for p in gated.parameters():
        torch.nn.init.normal_(p, 0, 0.1)
    plain.load_state_dict(gated.state_dict())
    m = torch.zeros(1, 1, 48, 48)
    m[..., 10:40, 20:26] = 1  # a 6-px stroke
    flat = torch.tensor([0.4, -0.2, 0.7]).view(1, 3, 1, 1).expand(1, 3, 48, 48).contiguous()
    ramp = torch.linspace(-0.8, 0.6, 48).view(1, 1, 1, 48).expand(1, 3, 48, 48).contiguous()
    texture = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        change = lambda g, image: ((g(image, m) - smooth_fill(image, m)) * m).abs().max() * 127.5  # grey levels
        for image in (flat, ramp):
            assert change(gated, image) < 0.25 and change(plain, image) > 2
        assert change(gated, texture) > 2
