"""Generators (a registry of architectures, each with a dataclass of its constructor arguments), the
PatchGAN discriminator, and the one inpaint function with the conversions between uint8 pixels and the
model's [-1, 1] range. No I/O here.

Shapes use B = batch, H, W = image size (a multiple of the architecture's `size_multiple`).
"""
import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def to_model_range(images_u8: torch.Tensor, device="cpu", memory_format=torch.contiguous_format) -> torch.Tensor:
    """uint8 B, 3, H, W in [0, 255] -> float32 in [-1, 1] on device, the generator's range."""
    x = images_u8.to(device, non_blocking=True).float().div_(127.5).sub_(1)
    return x.contiguous(memory_format=memory_format)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 [0, 255], rounded (values outside the range are clipped)."""
    return (to_unit_range(x).clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] (the model's range) or uint8 [0, 255] -> float32 [0, 1], the range of metrics,
    classical fills and figures."""
    return x.float() / 255 if x.dtype == torch.uint8 else (x.float() + 1) / 2


def from_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2 - 1


def composite(output, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hole pixels (mask 1) from output, every known pixel from image exactly."""
    return mask * output + (1 - mask) * image


def inpaint(generator: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> tuple:
    """(raw output, composite), both float32, for image B, 3, H, W in [-1, 1] and mask B, 1, H, W.

    The one place the generator's output becomes an inpainted image: training, validation, results.py,
    inpaint.py, the web page and the ONNX export all call it (gradients flow when the caller allows)."""
    raw = generator(image, mask).float()
    return raw, composite(raw, image, mask)


class Inpaint(nn.Module):
    """inpaint() as a module whose output is the composite: what export.py writes to ONNX."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return inpaint(self.generator, image, mask)[1]


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

    def __init__(self, channels: int, scale: "float | None" = 1.0):
        super().__init__()
        self.scale = scale  # 1 = the seed's unscaled softmax(QK^T); None = 1 / sqrt(C/8), as transformers scale
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
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # B, 1, HW, C
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma * out


def _box(x: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Sum over each pixel's (2 radius + 1)^2 neighbourhood (zero outside the image), per channel: shifted adds
    of a padded NCHW tensor, ~2x faster on the CPU than a depthwise convolution or pooling at these small sizes
    (few ops, no oneDNN set-up per call) and exportable to ONNX."""
    k, (h, w) = 2 * radius + 1, x.shape[-2:]
    p = F.pad(x.contiguous(), (radius,) * 4)
    rows = p[..., :w] + p[..., 1:1 + w]  # B, C, H + 2 radius, W
    for i in range(2, k):
        rows += p[..., i:i + w]
    out = rows[..., :h, :] + rows[..., 1:1 + h, :]  # B, C, H, W
    for i in range(2, k):
        out += rows[..., i:i + h, :]
    return out


SWEEPS = (8, 2)  # smooth_fill's Jacobi sweeps per pull level: (coarse levels, the two finest)


@torch.no_grad()
def smooth_fill(image: torch.Tensor, mask: torch.Tensor, levels: int = 5, iters: int = SWEEPS[0],
                fine_iters: int = SWEEPS[1]) -> torch.Tensor:
    """A cheap smooth (near-harmonic) fill of the holes, any mask shape; known pixels unchanged.

    Push-pull over an image pyramid: known pixels are averaged down `levels` times (holes count
    with weight 0), then on the way back up each level keeps its known part and takes the upsampled
    coarser level where it lacks data, followed by Jacobi sweeps (3x3 averages) over the cells with
    missing data, which smooth the coarse blocks into a membrane across the hole: `iters` sweeps on
    the coarse levels (cheap, they are small), `fine_iters` on the two finest (most of the cost).
    Exact on flat colours; within 0.3 grey levels on linear ramps under 6-12 px strokes. Computed in fp32 NCHW
    with no gradient (it has no parameters). image: B, C, H, W; mask: B, 1, H, W (1 = hole). Returns B, C, H, W
    in the image's memory format.
    """
    (fill,) = push_pull([(image.float().contiguous(), 1 - mask.float().contiguous(), (iters, fine_iters))], levels)
    return fill.contiguous(memory_format=memory_format_of(image))


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is stored so (and not also plain contiguous, as 1-channel or 1x1 tensors are)."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.no_grad()
def push_pull(layers: list, levels: int = 5) -> list:
    """Push-pull fills of several layers over one pyramid (one pooling and one resampling per level for all).

    layers: [(values B, C, H, W fp32, known B, 1, H, W in [0, 1], (coarse sweeps, fine sweeps))], each with its
    own holes; returns each layer's values with its holes filled (see smooth_fill; (0, 0) = no sweeps)."""
    width = [v.shape[1] for v, _, _ in layers]
    stacked = torch.cat([v * k for v, k, _ in layers] + [k for _, k, _ in layers], dim=1)  # B, sum C + layers, H, W
    pyramid = [stacked]
    for _ in range(levels):  # push: B, ., H/2^l, W/2^l (ceil, so odd sizes lose nothing)
        pyramid.append(F.avg_pool2d(pyramid[-1], 2, ceil_mode=True, count_include_pad=False))

    def parts(level: int) -> list:  # [(sums, weights)] of every layer at a level
        sums = pyramid[level][:, :sum(width)].split(width, dim=1)
        return list(zip(sums, pyramid[level][:, sum(width):].split(1, dim=1)))

    fills = []
    for s, w in parts(levels):
        fill = s / w.clamp_min(1e-6)
        fills.append(torch.where(w > 0, fill, fill.mean(dim=(2, 3), keepdim=True)))  # nothing known at all
    for level in range(levels - 1, -1, -1):  # pull, coarse to fine
        size = pyramid[level].shape[-2:]
        ups = F.interpolate(torch.cat(fills, dim=1), size=size, mode="bilinear", align_corners=False).split(width, dim=1)
        fills = [_relax(torch.addcmul(s, 1 - w, up), w < 1, sweeps[level < 2])  # w * known mean + (1 - w) * estimate
                 for (s, w), up, (_, _, sweeps) in zip(parts(level), ups, layers)]
    return fills


def _traced() -> bool:
    """Whether this call is being traced for ONNX export or compiled: then nothing may depend on the data or the
    size, and nothing made now may be kept (a compiler's tensors are placeholders)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def _neighbours(h: int, w: int, radius: int, crop: tuple, like: torch.Tensor) -> torch.Tensor:
    """1, 1, r1 - r0, c1 - c0: how many pixels of an h x w image lie in each crop pixel's (2 radius + 1)^2
    neighbourhood (what _box sums over): the product of a row count and a column count, no image-sized work."""
    r0, r1, c0, c1 = crop

    def count(start: int, stop: int, size: int) -> torch.Tensor:
        i = torch.arange(start, stop, device=like.device)
        return ((i + radius).clamp(max=size - 1) - (i - radius).clamp(min=0) + 1).to(like.dtype)
    return (count(r0, r1, h)[:, None] * count(c0, c1, w)[None, :])[None, None]


def _scaled_neighbours(h: int, w: int, radius: int, crop: tuple, like: torch.Tensor, scale) -> torch.Tensor:
    counts = _neighbours(h, w, radius, crop, like)
    return counts if scale is None else scale / counts


@functools.lru_cache(maxsize=256)
def _kept_neighbours(h: int, w: int, radius: int, crop: tuple, scale, device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
    return _scaled_neighbours(h, w, radius, crop, torch.empty(0, device=device, dtype=dtype), scale)


def neighbours_of(h: int, w: int, radius: int, crop: tuple, like: torch.Tensor, scale: "float | None" = None):
    """_neighbours(...) (or scale / it): the same few values for every call at a size, so kept (a dozen small ops
    saved per call, ~80 us on the CPU) except while traced or compiled. Never written to."""
    if _traced():
        return _scaled_neighbours(h, w, radius, crop, like, scale)
    return _kept_neighbours(h, w, radius, crop, scale, like.device, like.dtype)


def _relax(fill: torch.Tensor, free: torch.Tensor, sweeps: int) -> torch.Tensor:
    """`sweeps` Jacobi sweeps (each free cell takes its 3x3 neighbours' mean) over the free cells of fill.

    Only the box around the batch's free cells, one cell wider, is swept: cells outside it never change and a
    free cell's neighbours all lie inside it, so the result is the whole image's, at a fraction of the cost
    for small holes (the whole image when traced for export or compiled, where nothing may depend on the data
    or the size, and when the box would cover most of it: cutting it out and pasting it back would cost more)."""
    if sweeps == 0:
        return fill
    h, w = fill.shape[-2:]
    r0, r1, c0, c1 = 0, h, 0, w
    traced = _traced()
    if not traced and h * w > 64 * 64:  # a small level is swept whole
        rows = torch.nonzero(free.flatten(0, 1).any(dim=2).any(dim=0)).flatten()  # host sync: CPU work anyway
        cols = torch.nonzero(free.flatten(0, 1).any(dim=1).any(dim=0)).flatten()
        if len(rows) == 0:
            return fill
        r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
        c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
        if (r1 - r0) * (c1 - c0) > 0.6 * h * w:
            r0, r1, c0, c1 = 0, h, 0, w
    whole = (r0, r1, c0, c1) == (0, h, 0, w)
    crop = (..., slice(r0, r1), slice(c0, c1))
    part = fill if whole else fill[crop]
    free = free if whole else free[crop]
    fixed = part.masked_fill(free, 0.0)
    # the 3x3 sum: one pooling op on small levels (fastest there), shifted adds on large ones
    small = not traced and (r1 - r0) * (c1 - c0) <= 48 * 48
    neighbours, scale = ((lambda t: F.avg_pool2d(t, 3, 1, 1)), 9.0) if small else (_box, 1.0)
    step = free.to(fill.dtype) * neighbours_of(h, w, 1, (r0, r1, c0, c1), fill, scale)  # B, 1, crop h, crop w
    for _ in range(sweeps):
        part = torch.addcmul(fixed, step, neighbours(part))
    if whole:
        return part
    fill = fill.clone()
    fill[crop] = part
    return fill


def check_size(model: nn.Module, image: torch.Tensor):
    h, w = image.shape[-2:]
    k = model.size_multiple
    if h % k or w % k:
        raise ValueError(f"image size {h}x{w} is not a multiple of {k}, which {type(model).__name__} needs "
                         "(use e.g. --image-size 200 or 256)")


def network_input(model: nn.Module, image: torch.Tensor, mask: torch.Tensor) -> tuple:
    """(B, 4, H, W input, base): the masked image (holes zeroed, or with `prefill` filled by smooth_fill) beside
    the mask; base is None, or with prefill (fill, gate) for network_output. Hole pixels never reach the network."""
    check_size(model, image)
    if model.prefill:
        fill, gate = prefill_and_gate(image, mask, model.gate)  # B, 3, H, W (known pixels kept); B, 1, H, W or None
        return torch.cat([fill.to(image.dtype), mask], dim=1), (fill, gate)
    return torch.cat([image * (1 - mask), mask], dim=1), None


CURVATURE_REACH = 2


def curvature(x: torch.Tensor) -> torch.Tensor:
    """B, 1, H, W: |Laplacian| of the channel mean after a 3x3 average (which quiets JPEG noise and the
    rounding steps of a ramp); 0 on flat colours and linear ramps. Edges are replicated. A pixel's value reads
    the pixels within CURVATURE_REACH px of it."""
    grey = F.pad(x.float().mean(1, keepdim=True).contiguous(), (2, 2, 2, 2), mode="replicate")
    s = _box(grey)[..., 1:-1, 1:-1] / 9  # B, 1, H + 2, W + 2
    centre = s[..., 1:-1, 1:-1]
    return (s[..., :-2, 1:-1] + s[..., 2:, 1:-1] + s[..., 1:-1, :-2] + s[..., 1:-1, 2:] - 4 * centre).abs()


@torch.no_grad()
def prefill_and_gate(image: torch.Tensor, mask: torch.Tensor, tau: float) -> tuple:
    """(smooth_fill of the holes, B, 3, H, W fp32; the context gate, B, 1, H, W, or None when tau is 0).

    The gate, in [0, 1): how much of the network's correction a pixel takes, c / (c + tau), where c is the
    curvature of the surroundings: the curvature of known pixels whose reach holds no hole pixel, carried into
    the hole (and the band around it, and the image's frame) by a plain push-pull on the colours' pyramid (no
    sweeps: a gate need not be smooth, only cheap), then 5x5 averaged. 0 where the hole is ringed by a flat colour or a ramp, which the fill already copies
    exactly, so nothing the network adds can tint it; near 1 beside texture and features. Hole pixels never
    enter either."""
    with torch.autocast(image.device.type, enabled=False):  # fp32 throughout: autocast would cast every resample
        return _prefill_and_gate(image.float(), mask.float().contiguous(), tau)


def _prefill_and_gate(image: torch.Tensor, mask: torch.Tensor, tau: float) -> tuple:
    if tau <= 0:
        return smooth_fill(image, mask), None
    r = CURVATURE_REACH
    frame = F.pad(torch.zeros_like(mask[..., r:-r, r:-r]), (r,) * 4, value=1.0)  # curvature there reads padding
    # the hole grown by r, as masks.dilate does, but a box sum > 0 here: ~6x faster than max_pool2d on the CPU
    read = 1 - ((_box(mask, r) > 0).float() + frame).clamp(max=1)  # pixels whose curvature reads neither hole nor padding
    colours = (image.contiguous(), 1 - mask, SWEEPS)
    fill, c = push_pull([colours, (curvature(image), read, (0, 0))])  # B, 3, H, W; B, 1, H, W
    h, w = c.shape[-2:]
    c = _box(c, 2) / neighbours_of(h, w, 2, (0, h, 0, w), c)  # the 5x5 average (fewer at the border)
    return fill.contiguous(memory_format=memory_format_of(image)), c / (c + tau)



def zero_init(layer: nn.Conv2d):
    """A prefill network's last convolution starts at zero, so an untrained generator returns the fill itself
    (exact on flat colours and ramps) and training learns only the correction."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def network_output(out: torch.Tensor, base: "tuple | None") -> torch.Tensor:
    """The generator's RGB: the network's output (after tanh), or with a prefill that fill plus the
    network's correction (scaled by the context gate when there is one), clipped to [-1, 1]."""
    if base is None:
        return out
    fill, gate = base
    correction = out.float() if gate is None else out.float() * gate
    return (fill + correction).clamp(-1, 1)  # fp32: bf16 would round the exact fill by up to half a grey level


class UNet(nn.Module):
    """The seed's U-Net: 4-channel input (masked RGB in [-1, 1] + hole mask), RGB output in [-1, 1]; three
    full convolution blocks at full, 1/2 and 1/4 resolution, self-attention and one block at 1/8.

    With prefill, the holes of the input are filled with smooth_fill instead of zeros and the
    network predicts a correction to that fill (output = fill + last conv, clipped to [-1, 1]) rather
    than the colours from scratch; the parameters are the same.
    """

    size_multiple = 8  # it pools three times
    skips = [("enc3", "dec3"), ("enc2", "dec2"), ("enc1", "dec1")]  # (block, block whose input it joins): the diagram's

    def __init__(self, nf: int = 64, attention: bool = True, prefill: bool = False, gate: float = 0.0):
        super().__init__()
        self.gate = gate
        self.prefill = prefill
        self.enc1 = conv_block(4, nf)
        self.enc2 = conv_block(nf, 2 * nf)
        self.enc3 = conv_block(2 * nf, 4 * nf)
        self.attention = SelfAttention(4 * nf) if attention else nn.Identity()
        self.bottleneck = conv_block(4 * nf, 4 * nf)
        self.dec3 = conv_block(8 * nf, 4 * nf)
        self.dec2 = conv_block(6 * nf, 2 * nf)
        self.dec1 = nn.Sequential(
            nn.Conv2d(3 * nf, nf, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(nf, 3, 3, padding=1), nn.Identity() if prefill else nn.Tanh(),
        )
        if prefill:
            zero_init(self.dec1[2])

    @staticmethod
    def up(x: torch.Tensor) -> torch.Tensor:
        # CPU autocast runs bilinear upsampling in fp32, costing two casts and a slow fp32 backward;
        # it is a fixed linear interpolation, safe in the incoming (bf16) dtype.
        with torch.autocast(x.device.type, enabled=False):
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, fill = network_input(self, image, mask)      # B, 4, H, W
        e1 = self.enc1(x)                                # B, nf, H, W
        e2 = self.enc2(F.max_pool2d(e1, 2))              # B, 2nf, H/2, W/2
        e3 = self.enc3(F.max_pool2d(e2, 2))              # B, 4nf, H/4, W/4
        b = self.attention(F.max_pool2d(e3, 2))          # B, 4nf, H/8, W/8
        b = self.bottleneck(b)
        d3 = self.dec3(concat_skip(self.up(b), e3))      # B, 4nf, H/4, W/4
        d2 = self.dec2(concat_skip(self.up(d3), e2))     # B, 2nf, H/2, W/2
        out = self.dec1(concat_skip(self.up(d2), e1))    # B, 3, H, W
        return network_output(out, fill)


def conv(cin: int, cout: int, dilation: int = 1, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution that keeps the size (or halves it with stride 2)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation)


GROUPS = 8  # channel groups of the dilated blocks' GroupNorm


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class ResidualBlock(nn.Module):
    """x + conv(act(conv_dilated(act(norm(x))))): pre-normalised, the first convolution dilated to widen the
    receptive field. The normalisation (GroupNorm, per image: crops and batch sizes do not change it) keeps
    every branch's input at unit scale; without it a stack of 8 blocks at lr 1e-3 blew its activations up
    to 1e13 within 400 steps (docs/experiments.md). The branch starts small (last weights x 0.1), so the
    stack begins close to the identity."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.branch = nn.Sequential(nn.GroupNorm(GROUPS, channels), act(), conv(channels, channels, dilation), act(),
                                    conv(channels, channels))
        with torch.no_grad():
            self.branch[-1].weight.mul_(0.1)
            self.branch[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class Binomial(nn.Module):
    """A [1, 2, 1] x [1, 2, 1] / 16 blur per channel, as two 2x2 means shifted opposite ways (nothing moves;
    edges replicated). Its response is zero at the Nyquist frequency, where a pixel shuffle's 2-phase pattern
    lives: after a sub-pixel upsampling no fixed grid survives over smooth content, whatever the weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)
        return F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)


def upsample(cin: int, cout: int, blur: bool = False) -> nn.Sequential:
    """x2 upsampling as a 1x1 convolution to 4 x cout channels and a pixel shuffle (no interpolation kernel,
    whose CPU backward is slow), optionally blurred: the four phases' separate weights let a GAN draw a grid
    locked to them (8 px for the 1/8 -> 1/4 step; docs/experiments.md)."""
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 1), nn.PixelShuffle(2), Binomial() if blur else nn.Identity(), act())


class DilatedUNet(nn.Module):
    """A generator laid out for CPUs: nothing runs at full resolution but the pixel (un)shuffles.

    A 2x2 space-to-depth stem keeps every input pixel (16 channels at 1/2 resolution), a U-Net runs over
    1/2, 1/4 and 1/8 with `width`, 2x and 4x channels, and at 1/8 `blocks` residual blocks with dilations
    1, 2, 4, 8, 1, 2, ... (plus optional self-attention) see the whole face: wide convolutions at low
    resolution, which this CPU runs best. The head sees the last features beside the unshuffled input, so
    the exact neighbours of a thin stroke reach its output, and pixel-shuffles 12 channels to RGB at full
    resolution. Input and output as UNet's (masked RGB + mask in, RGB in [-1, 1] out; `prefill` as there).
    """
    size_multiple = 8
    skips = [("down2", "dec2"), ("stem", "dec1"), ("input", "head")]

    def __init__(self, width: int = 32, blocks: int = 8, attention: bool = True, prefill: bool = False,
                 gate: float = 0.0, blur_up: bool = False):
        super().__init__()
        self.gate = gate
        c1, c2, c3 = width, 2 * width, 4 * width
        self.prefill = prefill
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), conv(16, c1), act(), conv(c1, c1), act())
        self.down2 = nn.Sequential(conv(c1, c2, stride=2), act(), conv(c2, c2), act())
        self.down3 = nn.Sequential(conv(c2, c3, stride=2), act())
        self.middle = nn.Sequential(*[ResidualBlock(c3, 2 ** (i % 4)) for i in range(blocks)],
                                    nn.GroupNorm(GROUPS, c3), act())
        self.attention = SelfAttention(c3, scale=None) if attention else nn.Identity()
        self.up3 = upsample(c3, c2, blur_up)
        self.dec2 = nn.Sequential(conv(2 * c2, c2), act(), conv(c2, c2), act())
        self.up2 = upsample(c2, c1, blur_up)
        self.dec1 = nn.Sequential(conv(2 * c1, c1), act(), conv(c1, c1), act())
        self.head = nn.Sequential(conv(c1 + 16, 12), nn.PixelShuffle(2), nn.Identity() if prefill else nn.Tanh())
        if prefill:
            zero_init(self.head[0])

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, fill = network_input(self, image, mask)       # B, 4, H, W
        s = self.stem(x)                                  # B, w, H/2, W/2
        e2 = self.down2(s)                                # B, 2w, H/4, W/4
        b = self.attention(self.middle(self.down3(e2)))  # B, 4w, H/8, W/8
        d2 = self.dec2(concat_skip(self.up3(b), e2))      # B, 2w, H/4, W/4
        d1 = self.dec1(concat_skip(self.up2(d2), s))      # B, w, H/2, W/2
        out = self.head(concat_skip(d1, F.pixel_unshuffle(x, 2)))  # B, 3, H, W
        return network_output(out, fill)


# --- the architecture registry: a new generator is one class, one argument dataclass and one entry ---

@dataclass
class UNetArgs:
    nf: int = 64  # base channels (seed: 64; 1x, 2x, 4x at full, 1/2, 1/4 resolution)
    attention: bool = True  # self-attention at 1/8 resolution
    prefill: bool = False  # predict a correction to smooth_fill instead of colours from scratch
    gate: float = 0.0  # with prefill: the correction scaled by the context gate of prefill_and_gate(tau=gate), 0 = not scaled


@dataclass
class DilatedArgs:
    width: int = 32  # channels at 1/2 resolution (2x at 1/4, 4x at 1/8)
    blocks: int = 8  # dilated residual blocks at 1/8 resolution
    attention: bool = True  # self-attention at 1/8 resolution, after the blocks
    prefill: bool = False  # predict a correction to smooth_fill instead of colours from scratch
    gate: float = 0.0  # with prefill: the correction scaled by the context gate of prefill_and_gate(tau=gate), 0 = not scaled
    blur_up: bool = False  # a binomial blur after each pixel-shuffle upsampling (no grid locked to its phases)


ARCHITECTURES = {"unet": (UNetArgs, UNet), "dilated": (DilatedArgs, DilatedUNet)}


def arch_arg_names(arch: str) -> tuple:
    return tuple(f.name for f in dataclasses.fields(ARCHITECTURES[arch][0]))


def describe(model_args: dict) -> str:
    """'dilated (width 32, blocks 8, attention True, prefill False)': a title for tables and figures."""
    args = {"arch": "unet", **model_args}
    return f"{args.pop('arch')} (" + ", ".join(f"{k} {v}" for k, v in args.items()) + ")"


def build_from_args(model_args: dict) -> nn.Module:
    """The generator a checkpoint's model_args describe: {"arch": name, **that architecture's arguments};
    model_args saved before the registry existed have no "arch" and are the U-Net's."""
    args = complete_args(model_args)
    return ARCHITECTURES[args.pop("arch")][1](**args)


def complete_args(model_args: dict) -> dict:
    """{"arch": name, **every argument}: arguments a checkpoint predates take their default, which is what
    the network it saved had (a new argument's default always leaves the network as it was)."""
    args = dict(model_args)
    arch = args.pop("arch", "unet")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; this version knows {', '.join(ARCHITECTURES)}")
    return {"arch": arch, **dataclasses.asdict(ARCHITECTURES[arch][0](**args))}


class Discriminator(nn.Module):
    """PatchGAN: one real/fake logit per patch of the RGB image (with in_channels=4, of the image and its hole
    mask). `layers` stride-2 4x4 convolutions (channels nf, 2nf, ... up to 8nf), then a 4x4 one to a logit.
    The seed's is layers=2, BatchNorm (35,553 parameters at nf 32, ~22 px patches); layers=4 sees ~94 px
    patches, an eye or a mouth at 200 px. norm="spectral" bounds each layer's Lipschitz constant instead of
    normalising over the batch, so reals and composites never mix in one batch statistic. scale=2 judges the
    image at half resolution: pixel grain (which a full-resolution PatchGAN rewards a generator for) is averaged
    away and each patch covers twice the face."""

    def __init__(self, nf: int = 32, in_channels: int = 3, layers: int = 2, norm: str = "batch", scale: int = 1):
        super().__init__()
        self.scale = scale  # the images are average-pooled by this before the first layer
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        blocks, c_in = [], in_channels
        for i in range(layers):
            c_out = nf * 2 ** min(i, 3)
            block = [sn(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))]
            if i > 0 and norm == "batch":
                block.append(nn.BatchNorm2d(c_out))
            blocks.append(nn.Sequential(*block, nn.LeakyReLU(0.2, inplace=True)))
            c_in = c_out
        self.net = nn.Sequential(*blocks, sn(nn.Conv2d(c_in, 1, 4, stride=1, padding=1)))

    def forward(self, image: torch.Tensor, features: bool = False):
        """The patch logits (B, 1, H/2^layers - 1, W/2^layers - 1; image: B, in_channels, H, W), or with
        features=True every block's output, the logits last (through forward, so DDP syncs its gradients).
        With scale > 1 the image is average-pooled first: H and W above are then H / scale and W / scale."""
        if self.scale > 1:
            image = F.avg_pool2d(image, self.scale, ceil_mode=True)  # grain finer than scale px cannot be seen
        if not features:
            return self.net(image)
        out = []
        for block in self.net:
            image = block(image)
            out.append(image)
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def block_output_shapes(generator: nn.Module, size: int) -> dict:
    """{block name: output shape (C, H, W)} for one size x size input, in forward order."""
    p = next(generator.parameters())  # the probe lives where the model does
    shapes, hooks = {}, []
    for name, child in generator.named_children():
        hooks.append(child.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))))
    try:
        generator(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype),
                  torch.zeros(1, 1, size, size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def parameter_table(generator: nn.Module) -> dict:
    """Parameters per named block, in forward order, plus the total."""
    table = {name: count_parameters(child) for name, child in generator.named_children()}
    table["total"] = count_parameters(generator)
    return table
