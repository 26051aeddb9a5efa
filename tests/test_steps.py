"""One generator step and one discriminator step: each moves only its own network."""
import copy

import pytest
import torch

from checkpoints import build_discriminator, build_generator
from config import Config, choose_runtime
from losses import RECONSTRUCTION, Adversarial, adversarial_part, reconstruction_losses
from masks import dilate
from main import (adversarial_scale, backward_and_step, collapse_message, discriminator_step, generator_step,
                  reconstruction_region, reconstruction_weights, train_step)
from models import inpaint


def setup(w_adv=1.0, **kw):
    kw = {"d_layers": 2, **kw}
    cfg = Config(image_size=32, crop=0, width=8, blocks=2, d_nf=8, hole_size=8, hole_margin=4, ring=2, w_adv=w_adv,
                 **kw).validate()
    torch.manual_seed(0)
    g, d = build_generator(cfg), build_discriminator(cfg)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    m = torch.zeros(4, 1, 32, 32)
    m[:, :, 8:20, 10:22] = 1
    return cfg, g, d, x, m, choose_runtime("cpu", "fp32", False)


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


GAN_VARIANTS = [{"d_mask": False}, {"d_mask": True}, {"d_mask": True, "mask_blur": 3.0, "w_fm": 10.0, "w_r1": 0.1},
                {"d_layers": 3, "d_norm": "batch", "w_fm": 1.0}]


@pytest.mark.parametrize("kw", GAN_VARIANTS)
def test_discriminator_step_moves_only_the_discriminator(kw):
    cfg, g, d, x, m, rt = setup(**kw)
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    raw, composite = inpaint(g, x, m)
    values = discriminator_step(Adversarial(cfg), d, torch.optim.Adam(d.parameters(), lr=1e-3), x, composite, m, rt)
    assert set(values) == ({"gan_d", "r1"} if cfg.w_r1 else {"gan_d"})
    assert all(torch.isfinite(v) for v in values.values()) and float(values.get("r1", 1)) > 0
    assert not same(d, d0) and same(g, g0)
    assert all(p.grad is None for p in g.parameters())  # the composite was detached


@pytest.mark.parametrize("kw", GAN_VARIANTS)
def test_generator_step_moves_only_the_generator_and_never_grads_the_discriminator(kw):
    cfg, g, d, x, m, rt = setup(**kw)
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    raw, composite = inpaint(g, x, m)
    out = generator_step(Adversarial(cfg), d, torch.optim.Adam(g.parameters(), lr=1e-3), raw, composite, x, m, cfg, rt,
                         1.0)
    assert set(out) == {"gan_g", *(["fm"] if cfg.w_fm else []), *RECONSTRUCTION} and out["gan_g"] > 0
    assert float(out.get("fm", 1)) > 0
    assert not same(g, g0) and same(d, d0)
    assert all(p.grad is None for p in d.parameters()) and all(p.requires_grad for p in d.parameters())


def test_without_the_gan_there_is_no_discriminator_step():
    cfg, g, _, x, m, rt = setup(w_adv=0.0)
    g0 = copy.deepcopy(g)
    out = train_step(x, m, (g, None), (torch.optim.Adam(g.parameters(), lr=1e-3), None), None, cfg, rt)
    assert set(out) == set(RECONSTRUCTION) and not same(g, g0)


def test_without_the_gan_the_state_has_no_discriminator_and_reads_old_checkpoints():
    from checkpoints import TrainingState
    from distributed import Distributed
    from main import build_state
    cfg, _, _, _, _, rt = setup(w_adv=0.0)
    state = build_state(cfg, rt, Distributed("cpu"), None)
    assert state.d is None and state.opt_d is None and state.gan is None
    saved = state.state_dict()
    assert "discriminator" not in saved and "opt_d" not in saved
    # a checkpoint written when every run built a discriminator still resumes
    with_gan = build_state(Config(**{**cfg.to_dict(), "w_adv": 1.0}).validate(), rt, Distributed("cpu"), None)
    old = {**saved, "discriminator": with_gan.d.state_dict(), "opt_d": with_gan.opt_d.state_dict()}
    TrainingState(cfg, state.g, None, state.opt_g, None).load_state_dict(old)


def test_before_the_adversarial_term_starts_the_discriminator_rests():
    cfg, g, d, x, m, rt = setup()
    d0 = copy.deepcopy(d)
    opts = (torch.optim.Adam(g.parameters(), lr=1e-3), torch.optim.Adam(d.parameters(), lr=1e-3))
    out = train_step(x, m, (g, d), opts, Adversarial(cfg), cfg, rt, adv_scale=0.0)
    assert float(out["gan_g"]) == 0 and float(out["gan_d"]) == 0 and same(d, d0)


def test_adversarial_scale_waits_then_ramps():
    cfg = Config(w_adv=0.1, adv_start=0.2, adv_ramp=0.4)
    assert [round(adversarial_scale(cfg, p), 6) for p in (0.0, 0.19, 0.2, 0.4, 0.6, 0.9)] == [0, 0, 0, 0.5, 1, 1]
    assert adversarial_scale(Config(w_adv=0.3, adv_start=0.0, adv_ramp=0.0), 0.0) == 1  # no warm-up: on from the first step


def test_gan_hole_weight_fades_the_hole_pixels_along_the_ramp_and_only_there():
    cfg, g, d, x, m, rt = setup(gan_hole_weight=0.0)
    region = reconstruction_region(cfg, m)
    ring = region * (1 - m)
    assert torch.equal(reconstruction_weights(cfg, m, 0.0), region)  # before the GAN: the full pixel loss
    assert torch.allclose(reconstruction_weights(cfg, m, 0.5), ring + 0.5 * m)
    assert torch.equal(reconstruction_weights(cfg, m, 1.0), ring)  # the fill is left to the GAN terms
    # what the optimiser sees: the hole's interior (3+ px in, beyond the seam's and edges' reach) is left alone
    raw, _ = inpaint(g, x, m)
    interior = (m - dilate(1 - m, 2)).clamp_min(0).expand_as(x) > 0
    grad = [torch.autograd.grad(reconstruction_losses(raw, x, reconstruction_weights(cfg, m, s), m, cfg)[0], raw)[0]
            for s in (0.0, 1.0)]
    assert grad[1][interior].abs().max() < grad[0][interior].abs().max() / 10


def test_the_gan_is_built_once_with_the_state_and_the_run_follows_it():
    """build_state decides the GAN (with its discriminator) once; the step, its logged keys and validation
    use that object rather than asking the config again."""
    from distributed import Distributed
    from main import build_state, train_keys
    cfg, _, _, x, m, rt = setup()
    state = build_state(cfg, rt, Distributed("cpu"), None)
    assert isinstance(state.gan, Adversarial) and state.d is not None
    out = train_step(x, m, (state.g, state.d), (state.opt_g, state.opt_d), state.gan, cfg, rt)
    assert set(out) == set(train_keys(state.gan)) and "gan_g" in out
    out = train_step(x, m, (state.g, None), (state.opt_g, None), None, cfg, rt)  # the same config, no GAN given
    assert set(out) == set(train_keys(None)) == set(RECONSTRUCTION)


def critique(fake_logits, real_logits, fakeness):
    from losses import Critique
    return Critique([fake_logits], [real_logits], fakeness)


def test_masked_discriminator_labels_only_hole_patches_fake():
    from losses import discriminator_loss, generator_adversarial_loss, hole_patches
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 0:8, 0:8] = 1
    logits = torch.randn(2, 1, 7, 7)
    patches = hole_patches(mask, logits)
    assert patches[:, :, :2, :2].eq(1).all() and patches.sum() == 2 * 4  # the top-left cells only
    # patches outside the hole count as real: with no hole patch at all, the composite is judged like a real image
    real_only = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    assert torch.allclose(discriminator_loss(critique(logits, logits, torch.zeros_like(patches))), real_only)
    # the generator's adversarial loss ignores what the discriminator says outside the hole
    changed = logits.clone()
    changed[:, :, 4:, 4:] += 5
    assert torch.equal(generator_adversarial_loss(critique(logits, logits, patches)),
                       generator_adversarial_loss(critique(changed, logits, patches)))
    everywhere = torch.ones_like(patches)
    assert not torch.equal(generator_adversarial_loss(critique(logits, logits, everywhere)),
                           generator_adversarial_loss(critique(changed, logits, everywhere)))


def test_soft_labels_are_one_in_the_hole_fade_outside_and_zero_far_away():
    from losses import hole_patches
    mask = torch.zeros(1, 1, 64, 64)
    mask[:, :, 24:40, 24:40] = 1
    soft = hole_patches(mask, torch.zeros(1, 1, 16, 16), blur=4.0)[0, 0]
    assert soft[7, 7] == 1 and soft[0, 0] < 1e-3 and 0 < soft[5, 7] < 1  # a cell just outside the hole
    hard = hole_patches(mask, torch.zeros(1, 1, 16, 16))[0, 0]
    assert hard.sum() == 16 and (soft[hard == 0] < 1).all()  # hard: the 4x4 hole cells; soft is below 1 off them


def test_adversarial_terms_join_only_with_a_weight_and_r1_penalises_a_steep_discriminator():
    assert Adversarial(Config(w_adv=1.0, w_fm=0.0)).keys == ("gan_g", "gan_d")
    assert Adversarial(Config(w_adv=1.0, w_fm=5.0, w_r1=0.01)).keys == ("gan_g", "fm", "gan_d", "r1")
    assert adversarial_part(Config(w_adv=0.0)) is None
    from losses import Critique, r1_penalty
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    steep = Critique([None], [(5 * x).sum(dim=(1, 2, 3), keepdim=True)], torch.ones(3, 1, 1, 1), x)
    assert torch.isclose(r1_penalty(steep), torch.tensor(25.0 * 3 * 8 * 8))  # |d(5 sum x)/dx|^2 per image


def test_an_old_seed_discriminator_checkpoint_loads():
    from checkpoints import upgrade_discriminator
    from models import Discriminator
    new = Discriminator(nf=8)
    old_names = {"net.0.0.": "net.0.", "net.1.0.": "net.2.", "net.1.1.": "net.3.", "net.2.": "net.5."}
    old = {next(o + k[len(n):] for n, o in old_names.items() if k.startswith(n)): v for k, v in new.state_dict().items()}
    again = Discriminator(nf=8)
    again.load_state_dict(upgrade_discriminator(old))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), new.state_dict().values()))


def test_gradient_clipping_bounds_the_update():
    rt = choose_runtime("cpu", "fp32", False)
    w = torch.nn.Parameter(torch.zeros(10))
    opt = torch.optim.SGD([w], lr=1.0)
    backward_and_step((w * 100).sum(), opt, rt, clip=0.5)  # the gradient's norm is 316
    assert abs(float(w.detach().norm()) - 0.5) < 1e-5
    backward_and_step((w * 100).sum(), opt, rt)  # unclipped
    assert float(w.detach().norm()) > 300


def test_collapse_is_told_from_a_run_that_never_got_going():
    cfg = Config(collapse_db=3.0)
    good = [{"val_psnr": 18.0}, {"val_psnr": 21.5}]
    assert "collapsed" in collapse_message(cfg, good, {"val_psnr": 4.8}, 17.5)
    assert collapse_message(cfg, good, {"val_psnr": 19.0}, 17.5) == ""          # lower, still above mean fill
    assert collapse_message(cfg, [{"val_psnr": 19.0}], {"val_psnr": 4.8}, 17.5) == ""  # never far above it
    assert collapse_message(Config(collapse_db=0), good, {"val_psnr": 4.8}, 17.5) == ""  # guard off


def test_a_run_can_start_from_the_shipped_weights():
    from checkpoints import SHIPPED_WEIGHTS, generator_from_checkpoint, load_checkpoint
    from config import ConfigError
    from distributed import Distributed
    from main import build_state
    rt = choose_runtime("cpu", "fp32", False)
    ckpt = load_checkpoint(SHIPPED_WEIGHTS)
    shipped, _ = generator_from_checkpoint(ckpt)
    blur = ckpt["model_args"].get("blur_up", False)  # weights shipped before --blur-up became the default lack it
    state = build_state(Config(init_from=SHIPPED_WEIGHTS, blur_up=blur).validate(), rt, Distributed("cpu"), None)
    assert all(torch.equal(p.float(), q) for p, q in zip(shipped.state_dict().values(), state.g.state_dict().values()))
    assert same(state.g, state.g_ema)
    # a network without the prefill, a narrower one, the U-Net: each is refused with the flags that would match
    for other, fix in (({"prefill": False, "gate": 0.0}, "--prefill --gate 0.01"), ({"width": 16}, "--width 32"),
                       ({"arch": "unet"}, "--arch dilated"), ({"blur_up": not blur}, "--blur-up" if blur else "--no-blur-up")):
        with pytest.raises(ConfigError, match=f"--init-from .*'arch': 'dilated', 'width': 32.*--arch and its arguments.*{fix}"):
            build_state(Config(**{"blur_up": blur, **other}, init_from=SHIPPED_WEIGHTS).validate(), rt, Distributed("cpu"), None)


def test_no_evaluation_network_can_reach_a_training_loss():
    """losses.py imports neither the LPIPS/VGG module nor the face descriptor, so no loss term can call them."""
    import ast
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "losses.py")
    tree = ast.parse(open(path).read())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"typing", "torch", "metrics", "models", "masks"}, imported  # masks: numpy and PIL only
    assert not imported & {"perceptual", "identity", "dlib", "evaluation"}


def test_gan_kind_weights_take_a_kind_out_of_the_gan_phase_and_only_that_kind():
    """--gan-kind-weights strokes:0: a stroke sample's generator update is the twin's (reconstruction alone,
    the full hole weight), bit for bit; a boxes sample beside it keeps the GAN; strokes:1 is the default."""
    from copy import deepcopy

    def generator_after_step(kinds, **kw):
        cfg, g, d, x, m, rt = setup(gan_hole_weight=0.5, w_fm=10.0, **kw)
        opts = (torch.optim.Adam(g.parameters(), lr=1e-3), torch.optim.Adam(d.parameters(), lr=1e-3))
        gan = adversarial_part(cfg)
        train_step(x[:2], m[:2], (g, d if gan else None), opts if gan else opts[:1] + (None,), gan, cfg, rt,
                   kinds=kinds)
        return g

    twin = generator_after_step(["strokes"] * 2, w_adv=0.0)
    assert same(generator_after_step(["strokes"] * 2, gan_kind_weights="strokes:0"), twin)
    assert not same(generator_after_step(["strokes"] * 2, gan_kind_weights="strokes:0.5"), twin)
    assert not same(generator_after_step(["boxes"] * 2, gan_kind_weights="strokes:0"), twin)
    assert same(generator_after_step(["strokes"] * 2, gan_kind_weights="boxes:1"), generator_after_step(["strokes"] * 2))
    gan = Adversarial(Config(gan_kind_weights="strokes:0.25,square:0").validate())
    assert gan.sample_weights(["boxes", "strokes", "square"], "cpu").flatten().tolist() == [1.0, 0.25, 0.0]
    assert gan.sample_weights(["boxes", "boxes"], "cpu") is None and gan.sample_weights(None, "cpu") is None
    assert deepcopy(gan).kind_weights == {"strokes": 0.25, "square": 0.0}
