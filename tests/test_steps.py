"""One generator step and one discriminator step: each moves only its own network."""
import copy

import torch

from checkpoints import build_discriminator, build_generator
from config import Config, choose_runtime
from losses import RECONSTRUCTION
from main import discriminator_step, generator_step, train_step
from models import inpaint


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
    raw, composite = inpaint(g, x, m)
    loss = discriminator_step(d, torch.optim.Adam(d.parameters(), lr=1e-3), x, composite, rt)
    assert loss is not None and torch.isfinite(loss)
    assert not same(d, d0) and same(g, g0)
    assert all(p.grad is None for p in g.parameters())  # the composite was detached


def test_generator_step_moves_only_the_generator_and_never_grads_the_discriminator():
    cfg, g, d, x, m, rt = setup()
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    raw, composite = inpaint(g, x, m)
    out = generator_step(d, torch.optim.Adam(g.parameters(), lr=1e-3), raw, composite, x, m, cfg, rt)
    assert set(out) == {"gan_g", *RECONSTRUCTION} and out["gan_g"] > 0
    assert not same(g, g0) and same(d, d0)
    assert all(p.grad is None for p in d.parameters()) and all(p.requires_grad for p in d.parameters())


def test_without_the_gan_there_is_no_discriminator_step():
    cfg, g, _, x, m, rt = setup(w_adv=0.0)
    g0 = copy.deepcopy(g)
    out = train_step(x, m, (g, None), (torch.optim.Adam(g.parameters(), lr=1e-3), None), cfg, rt)
    assert set(out) == set(RECONSTRUCTION) and not same(g, g0)


def test_without_the_gan_the_state_has_no_discriminator_and_reads_old_checkpoints():
    from checkpoints import TrainingState
    from distributed import Distributed
    from main import build_state
    cfg, _, _, _, _, rt = setup(w_adv=0.0)
    state = build_state(cfg, rt, Distributed("cpu"), None)
    assert state.d is None and state.opt_d is None
    saved = state.state_dict()
    assert "discriminator" not in saved and "opt_d" not in saved
    # a checkpoint written when every run built a discriminator still resumes
    with_gan = build_state(Config(**{**cfg.to_dict(), "w_adv": 1.0}).validate(), rt, Distributed("cpu"), None)
    old = {**saved, "discriminator": with_gan.d.state_dict(), "opt_d": with_gan.opt_d.state_dict()}
    TrainingState(cfg, state.g, None, state.opt_g, None).load_state_dict(old)
