"""One generator step and one discriminator step: each moves only its own network."""
import copy

import torch

from checkpoints import build_discriminator, build_generator
from config import Config, choose_runtime
from losses import RECONSTRUCTION
from main import discriminator_step, generator_step, train_step


def setup(w_adv=1.0):
    cfg = Config(image_size=32, nf=8, d_nf=8, hole_size=8, hole_margin=4, ring=2, w_adv=w_adv).validate()
    torch.manual_seed(0)
    g, d = build_generator(cfg), build_discriminator(cfg)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    m = torch.zeros(4, 1, 32, 32)
    m[:, :, 8:20, 10:22] = 1
    return cfg, g, d, x, m, choose_runtime("cpu", "fp32", False)


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_discriminator_step_moves_only_the_discriminator():
    cfg, g, d, x, m, rt = setup()
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    raw = g(x, m)
    composite = m * raw + (1 - m) * x
    loss = discriminator_step(d, torch.optim.Adam(d.parameters(), lr=1e-3), x, composite, rt)
    assert loss is not None and torch.isfinite(loss)
    assert not same(d, d0) and same(g, g0)
    assert all(p.grad is None for p in g.parameters())  # the composite was detached


def test_generator_step_moves_only_the_generator_and_never_grads_the_discriminator():
    cfg, g, d, x, m, rt = setup()
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    raw = g(x, m)
    composite = m * raw + (1 - m) * x
    out = generator_step(d, torch.optim.Adam(g.parameters(), lr=1e-3), raw, composite, x, m, cfg, rt)
    assert set(out) == {"gan_g", *RECONSTRUCTION} and out["gan_g"] > 0
    assert not same(g, g0) and same(d, d0)
    assert all(p.grad is None for p in d.parameters()) and all(p.requires_grad for p in d.parameters())


def test_without_the_gan_the_discriminator_is_untouched():
    cfg, g, d, x, m, rt = setup(w_adv=0.0)
    d0 = copy.deepcopy(d)
    opts = (torch.optim.Adam(g.parameters(), lr=1e-3), torch.optim.Adam(d.parameters(), lr=1e-3))
    out = train_step(x, m, (g, d), opts, cfg, rt)
    assert float(out["gan_g"]) == 0 and float(out["gan_d"]) == 0 and same(d, d0)
