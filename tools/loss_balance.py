"""Which loss term drives the generator's fill: each term's gradient on the generator's output, in the holes.

    python tools/loss_balance.py RUN/last.pt --data-dir ../shared/celeba [--batches 4] [--w-adv 10] [--w-fm 100] [--w-seam 300] [--gan-hole-weight 0]

For training batches drawn as main.py draws them (augmentation, holes, crops), the checkpoint's generator
(not its moving average: the weights the optimizer moves) and discriminator, it prints for every generator
loss term its value, its weight, and the norm of d(weight * term) / d(raw output) over the hole pixels, with
its share of the terms' sum. A term whose share is a few percent cannot move the fill however it is tuned
(the adversarial weight is the run's full w_adv, or --w-adv). Reads the validation split, never the test split.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from checkpoints import build_discriminator, load_generator, upgrade_discriminator  # noqa: E402
from config import ConfigError, UserError, choose_runtime  # noqa: E402
from dataset import open_splits, resolve_data_dir, split_files  # noqa: E402
from losses import NEEDS_REAL_FEATURES, RECONSTRUCTION, adversarial_part, reconstruction_term  # noqa: E402
from main import reconstruction_region, reconstruction_weights, training_input  # noqa: E402
from masks import rng_for  # noqa: E402
from models import composite, inpaint  # noqa: E402


def term_gradients(g, d, cfg, x, m, kinds=None) -> dict:
    """{term: (unweighted value, weight, norm of the weighted term's gradient on the raw output in the holes)};
    kinds: the holes' kinds, for --gan-kind-weights."""
    with torch.no_grad():
        raw, _ = inpaint(g, x, m)
    raw = raw.requires_grad_(True)
    filled = composite(raw, x, m)  # B, 3, H, W, built from the leaf so every term's gradient lands on raw
    gan = adversarial_part(cfg)
    # the GAN phase at full strength: its pixel losses weigh the hole by gan_hole_weight
    weights = None if gan is None else gan.sample_weights(kinds, x.device)
    region = reconstruction_region(cfg, m) if gan is None else reconstruction_weights(cfg, m, 1.0, weights)
    terms = {name: (getattr(cfg, field), lambda name=name: reconstruction_term(name, raw, x, region, m))
             for name, (field, _) in RECONSTRUCTION.items()}
    if gan is not None and d is not None:
        d.requires_grad_(False)
        for name, (weight, fn) in gan.g_terms.items():
            real = name in NEEDS_REAL_FEATURES
            terms[name] = (weight, lambda fn=fn, real=real: fn(gan.critique(d, x, filled, m, real_view=real, weights=weights)))
    out = {}
    for name, (weight, value) in terms.items():
        loss = value()
        grad, = torch.autograd.grad(weight * loss, raw, allow_unused=True, retain_graph=True)
        norm = 0.0 if grad is None else float((grad * m).norm())
        out[name] = (float(loss.detach()), weight, norm)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("checkpoint", help="a run's last.pt or epochN.pt (with its discriminator)")
    p.add_argument("--data-dir", default="", help="the run's images (default: the run's saved data_dir)")
    p.add_argument("--batches", type=int, default=4, help="training batches to average over")
    p.add_argument("--w-adv", type=float, default=None, help="the adversarial weight (default: the run's)")
    p.add_argument("--w-fm", type=float, default=None, help="the feature-matching weight (default: the run's)")
    p.add_argument("--w-seam", type=float, default=None, help="the seam loss's weight (default: the run's)")
    p.add_argument("--gan-hole-weight", type=float, default=None, help="the pixel losses' weight on hole pixels in the GAN phase (default: the run's)")
    args = p.parse_args(argv)
    try:
        if args.batches < 1:
            raise ConfigError(f"--batches must be >= 1, not {args.batches}")
        g, cfg, ckpt = load_generator(args.checkpoint, average=False)
        cfg.data_dir = resolve_data_dir(args.data_dir, cfg.data_dir)[0]
        for field in ("w_adv", "w_fm", "w_seam", "gan_hole_weight"):
            if getattr(args, field) is not None:
                setattr(cfg, field, getattr(args, field))
        d = None
        if "discriminator" in ckpt and cfg.w_adv > 0:
            d = build_discriminator(cfg)
            d.load_state_dict(upgrade_discriminator(ckpt["discriminator"]))
        rt = choose_runtime("cpu", "fp32", False)
        split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
        source = open_splits(cfg, split, ("val",))["val"]
        images = source.take(args.batches * cfg.batch_size)  # N, 3, S, S uint8
        if len(images) < args.batches * cfg.batch_size:
            raise ConfigError(f"--batches {args.batches}: the validation split has {len(images)} images, fewer than "
                              f"{args.batches} batches of {cfg.batch_size}; ask for fewer batches")
        sums = {}
        for b in range(args.batches):
            x, m, kinds = training_input(cfg, rt, images[b * cfg.batch_size:(b + 1) * cfg.batch_size], rng_for(cfg.seed, 99, b))
            for name, (value, weight, norm) in term_gradients(g, d, cfg, x, m, kinds).items():
                s = sums.setdefault(name, [0.0, weight, 0.0])
                s[0], s[2] = s[0] + value / args.batches, s[2] + norm / args.batches
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = sum(s[2] for s in sums.values()) or 1.0
    print(f"{args.checkpoint}: {args.batches} batches of {cfg.batch_size}, crops {cfg.crop or 'off'}, "
          f"generator (not the moving average) and discriminator of epoch {ckpt.get('epoch')}\n")
    print("| term | weight | value | gradient norm in the holes | share |\n|---|---|---|---|---|")
    for name, (value, weight, norm) in sums.items():
        print(f"| {name} | {weight:g} | {value:.4f} | {norm:.4g} | {100 * norm / total:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
