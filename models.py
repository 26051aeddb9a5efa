"""Generator (U-Net + self-attention) and PatchGAN discriminator. No I/O here.

Shapes use B = batch, nf = base channels, H = W = image size (divisible by 8).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convs, each followed by LeakyReLU(0.2): the unit of every U-Net stage."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
    )


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient dense in the input's memory format.

    The backward of torch.cat hands each input a channel slice of the output gradient; bilinear
    upsampling's and LeakyReLU's CPU backward kernels are several times slower on such strided
    gradients (measured 7x for upsampling at 200 px, bf16, channels_last) than the copy costs.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last if ctx.channels_last else torch.contiguous_format)


def concat_skip(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Channel concat of the upsampled path and the skip connection (B, C1 + C2, H, W)."""
    if torch.is_grad_enabled():
        up, skip = _DenseGrad.apply(up), _DenseGrad.apply(skip)
    return torch.cat([up, skip], dim=1)


class SelfAttention(nn.Module):
    """SAGAN-style attention over all positions; gamma starts at 0 so it begins as identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // 8, 1)
        self.key = nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # One attention head, kept as an explicit dimension (ONNX export takes only 4-D inputs).
        q = self.query(x).flatten(2).transpose(1, 2).unsqueeze(1)  # B, 1, HW, C/8
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)    # B, 1, HW, C/8
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)  # B, 1, HW, C
        # scale=1 keeps the seed's unscaled softmax(QK^T) attention.
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)    # B, 1, HW, C
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma * out


class Generator(nn.Module):
    """U-Net: 4-channel input (masked RGB in [-1, 1] + hole mask), RGB output in [-1, 1]."""

    def __init__(self, nf: int = 64, attention: bool = True):
        super().__init__()
        self.enc1 = conv_block(4, nf)
        self.enc2 = conv_block(nf, 2 * nf)
        self.enc3 = conv_block(2 * nf, 4 * nf)
        self.attention = SelfAttention(4 * nf) if attention else nn.Identity()
        self.bottleneck = conv_block(4 * nf, 4 * nf)
        self.dec3 = conv_block(8 * nf, 4 * nf)
        self.dec2 = conv_block(6 * nf, 2 * nf)
        self.dec1 = nn.Sequential(
            nn.Conv2d(3 * nf, nf, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(nf, 3, 3, padding=1), nn.Tanh(),
        )

    @staticmethod
    def up(x: torch.Tensor) -> torch.Tensor:
        # CPU autocast runs bilinear upsampling in fp32, costing two casts and a slow fp32 backward;
        # it is a fixed linear interpolation, safe in the incoming (bf16) dtype.
        with torch.autocast(x.device.type, enabled=False):
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"image size {h}x{w} is not divisible by 8; the U-Net pools three times "
                             "(use e.g. --image-size 200 or 256)")
        x = torch.cat([image * (1 - mask), mask], dim=1)  # B, 4, H, W (hole pixels zeroed)
        e1 = self.enc1(x)                                # B, nf, H, W
        e2 = self.enc2(F.max_pool2d(e1, 2))              # B, 2nf, H/2, W/2
        e3 = self.enc3(F.max_pool2d(e2, 2))              # B, 4nf, H/4, W/4
        b = self.attention(F.max_pool2d(e3, 2))          # B, 4nf, H/8, W/8
        b = self.bottleneck(b)
        d3 = self.dec3(concat_skip(self.up(b), e3))      # B, 4nf, H/4, W/4
        d2 = self.dec2(concat_skip(self.up(d3), e2))     # B, 2nf, H/2, W/2
        return self.dec1(concat_skip(self.up(d2), e1))   # B, 3, H, W


class Discriminator(nn.Module):
    """PatchGAN: one real/fake logit per ~22x22 receptive field of the RGB image."""

    def __init__(self, nf: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, nf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(nf, 2 * nf, 4, stride=2, padding=1), nn.BatchNorm2d(2 * nf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * nf, 1, 4, stride=1, padding=1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)  # B, 1, H/4 - 1, W/4 - 1


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_table(generator: Generator) -> dict:
    """Parameters per named block, in forward order, plus the total."""
    table = {name: count_parameters(child) for name, child in generator.named_children()}
    table["total"] = count_parameters(generator)
    return table
