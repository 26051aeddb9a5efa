"""Does the GAN earn its place? A GAN model's evaluation against its reconstruction-only twin's.

    python tools/twin_check.py out/results-weights ~/runs/twin [-o twin_check.md]

Each argument is a folder results.py wrote (results.json and per_image.csv), both of the same split, faces and
holes (else it refuses). Prints, per hole kind and area bucket, both models' hole PSNR, LPIPS and KID, the
paired GAN − twin differences (same image and hole, mean ± 95 % CI), and the must-hold lines: LPIPS lower in
every boxes and strokes bucket from 10 % up (paired CI below zero), KID lower on boxes and on strokes (every
bucket pooled) by more than two standard errors of the difference (on squares a 2.6 % hole barely moves KID; the
error of the paired difference over the same subsets when both folders hold results.py's kid_features.pt),
detail higher and the same-person share no lower pooled per kind, a hole-PSNR cost of at most 0.5 dB pooled per kind.
"""
import argparse
import csv
import json
import math
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import UserError, write_text  # noqa: E402
from identity import SAME_PERSON  # noqa: E402
from metrics import mean_ci95  # noqa: E402
from results import goals_table  # noqa: E402

OURS = "ours"
KID_KINDS = ("boxes", "strokes")
MAX_PSNR_COST = 0.5  # dB the adversarial term may cost in hole PSNR
PAIRED = ("psnr", "lpips", "identity")  # per-image columns compared image by image (identity: on its subset)


def load(folder: str) -> tuple:
    """(results.json, {(kind, bucket, image): {metric: value}} of the model's rows in per_image.csv)."""
    paths = [os.path.join(folder, name) for name in ("results.json", "per_image.csv")]
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"{path} not found: run `python results.py {folder} --masks square,boxes,strokes` first")
    with open(paths[0]) as fh:
        summary = json.load(fh)
    rows = {}
    with open(paths[1], newline="") as fh:
        for r in csv.DictReader(fh):
            if r["method"] == OURS:
                values = {k: float(r[k]) for k in PAIRED if r.get(k)}
                rows[(r["mask_kind"], r["hole_bucket"], r["image"])] = {k: v for k, v in values.items()
                                                                       if not math.isnan(v)}  # identity: off its subset
    return summary, rows


def paired(gan_rows: dict, twin_rows: dict) -> dict:
    """{(kind, bucket): {metric: (mean, ci95) of GAN − twin}}, bucket "all" pooling a kind's buckets; a kind's
    "all" also holds "crossings": (lost, gained), the faces crossing the same-person threshold (crossings())."""
    diffs = defaultdict(lambda: defaultdict(list))
    for (kind, bucket, image), g in gan_rows.items():
        t = twin_rows[(kind, bucket, image)]
        bucket = "all" if bucket == kind else bucket  # a square set is its kind's only set
        for k in g.keys() & t.keys():
            diffs[(kind, bucket)][k].append(g[k] - t[k])
            if bucket != "all":
                diffs[(kind, "all")][k].append(g[k] - t[k])
    out = {key: {k: mean_ci95(v) for k, v in by_metric.items()} for key, by_metric in diffs.items()}
    for kind, lost_gained in crossings(gan_rows, twin_rows).items():
        out.setdefault((kind, "all"), {})["crossings"] = lost_gained
    return out


def crossings(gan_rows: dict, twin_rows: dict) -> dict:
    """{kind: (lost, gained)}: faces measured in both that the GAN moves past dlib's same-person threshold
    (the twin's under it, the GAN's not) and back under it, every bucket of a kind pooled."""
    counts = defaultdict(lambda: [0, 0])
    for (kind, bucket, image), g in gan_rows.items():
        t = twin_rows[(kind, bucket, image)]
        if "identity" in g and "identity" in t:
            same = (g["identity"] < SAME_PERSON, t["identity"] < SAME_PERSON)
            counts[kind][0] += same == (False, True)
            counts[kind][1] += same == (True, False)
    return {kind: tuple(c) for kind, c in counts.items()}


def mcnemar_p(lost: int, gained: int) -> float:
    """Exact two-sided McNemar test: how likely a split of the discordant faces at least this uneven is when the
    GAN and the twin keep a face equally often."""
    n, k = lost + gained, min(lost, gained)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


def same_protocol(gan: tuple, twin: tuple):
    keys = ("split", "images", "image_size", "eval_seed")
    if any(gan[0].get(k) != twin[0].get(k) for k in keys) or gan[1].keys() != twin[1].keys():
        raise UserError("the two evaluations are not of the same faces and holes "
                        f"({', '.join(f'{k} {gan[0].get(k)} vs {twin[0].get(k)}' for k in keys)}): "
                        "evaluate both with the same --data-dir, --split, --max-images and --masks")


def sets_of(summary: dict) -> list:
    """[(kind, bucket, {method: metrics})], each kind's buckets first, then its pooled set."""
    out = []
    for kind, by_bucket in summary["sets"].items():
        buckets = [b for b in by_bucket if b != "all"] or ["all"]
        out += [(kind, b, by_bucket[b]) for b in buckets] + ([(kind, "all", by_bucket["all"])] if len(by_bucket) > 1 else [])
    return out


def table(gan: dict, twin: dict, diffs: dict) -> str:
    lines = ["| kind | bucket | hole PSNR dB: GAN / twin | GAN − twin (paired) | LPIPS: GAN / twin | GAN − twin (paired) "
             "| KID×1000: GAN / twin |", "|---|---|---|---|---|---|---|"]
    for (kind, bucket, g), (_, _, t) in zip(sets_of(gan), sets_of(twin)):
        g, t = g[OURS], t[OURS]
        d = diffs.get((kind, bucket), {})
        cells = [f"{g['psnr']['mean']:.2f} / {t['psnr']['mean']:.2f}", _diff(d.get("psnr"), 2)]
        cells += [f"{g['lpips']['mean']:.4f} / {t['lpips']['mean']:.4f}", _diff(d.get("lpips"), 4)] \
            if "lpips" in g and "lpips" in t else ["", ""]
        cells.append(f"{1000 * g['kid']['mean']:.2f} / {1000 * t['kid']['mean']:.2f}" if "kid" in g and "kid" in t else "")
        lines.append(f"| {kind} | {'pooled' if bucket == 'all' else bucket} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _diff(value: "tuple | None", digits: int) -> str:
    return "" if value is None else f"{value[0]:+.{digits}f} ± {value[1]:.{digits}f}"


def _kid(metrics: dict) -> str:
    """KID ×1000 with its standard error over subsets, when results.py recorded one."""
    se = metrics["kid"].get("se")
    return f"{1000 * metrics['kid']['mean']:.2f}" + ("" if se is None else f" ± {1000 * se:.2f}")


def _name(key: tuple) -> str:
    return f"{key[0]} {'pooled' if key[1] == 'all' else key[1]}"


def pooled(summary: dict, kind: str) -> "dict | None":
    return summary["sets"].get(kind, {}).get("all", {}).get(OURS)


def paired_kid(gan_dir: str, twin_dir: str) -> dict:
    """{kind: (mean, standard error) of KID(GAN) − KID(twin) over the same subsets of the same photos}, from the
    features results.py keeps beside its tables ({} when either folder predates them)."""
    import torch
    from perceptual import paired_kid_difference
    from results import KID_FEATURES
    paths = [os.path.join(d, KID_FEATURES) for d in (gan_dir, twin_dir)]
    if not all(os.path.isfile(p) for p in paths):
        return {}
    gan, twin = (torch.load(p, weights_only=True) for p in paths)
    if gan["images"] != twin["images"] or not torch.equal(gan["real"], twin["real"]):
        raise UserError(f"{paths[0]} and {paths[1]} are features of different photos")
    return {k: paired_kid_difference(gan["real"], gan["ours"][k], twin["ours"][k])
            for k in KID_KINDS if k in gan["ours"] and k in twin["ours"]}


def kid_rows(gan: dict, twin: dict, kid_pairs: "dict | None" = None) -> list:
    """KID lower than the twin's by more than two standard errors of the difference, per KID_KINDS pooled: the
    paired one (same subsets of the same photos, kid_pairs) where known, else both KIDs' errors combined."""
    rows = []
    for kind in KID_KINDS:
        g, t = pooled(gan, kind), pooled(twin, kind)
        if not (g and t and "kid" in g and "kid" in t):
            continue
        combined = (g["kid"].get("se", 0.0) ** 2 + t["kid"].get("se", 0.0) ** 2) ** 0.5
        if kind in (kid_pairs or {}):
            diff, se = kid_pairs[kind]
            measured = (f"{_kid(g)} vs {_kid(t)}; difference {1000 * diff:+.2f} ± {1000 * se:.2f} (paired SE; "
                        f"{diff / combined:+.1f} combined unpaired SEs)")
            rows.append((f"{kind}: KID lower than the twin's by > 2 SE of the paired difference", measured,
                         diff + 2 * se < 0))
        else:
            rows.append((f"{kind}: KID lower than the twin's by > 2 SE (unpaired: no kid_features.pt)",
                         f"{_kid(g)} vs {_kid(t)}", g["kid"]["mean"] + 2 * combined < t["kid"]["mean"]))
    return rows


def lpips_row(diffs: dict) -> list:
    """LPIPS lower in every KID_KINDS bucket from 10 % up: the paired 95 % CI of GAN − twin below zero."""
    keys = [k for k in diffs if k[0] in KID_KINDS and k[1] != "all" and not k[1].startswith("0-") and "lpips" in diffs[k]]
    if not keys:
        return []
    worst = max(keys, key=lambda k: sum(diffs[k]["lpips"]))
    mean, ci = diffs[worst]["lpips"]
    return [("LPIPS lower in every boxes and strokes bucket from 10 % up (paired CI below 0)",
             f"worst {_name(worst)}: {mean:+.5f} ± {ci:.5f}", mean + ci < 0)]


def _distance(diffs: dict, kind: str, metric: str) -> str:
    """Beside a same-person share: the paired difference of the face descriptors' distance to the original's
    (GAN − twin; lower keeps the person better), a continuous measure of what the share counts past a threshold,
    and the faces that cross the threshold either way with their McNemar p."""
    pooled_diffs = diffs.get((kind, "all"), {}) if metric == "same_person" else {}
    d, flips = pooled_diffs.get("identity"), pooled_diffs.get("crossings")
    if d is None:
        return ""
    lost, gained = flips or (0, 0)
    return (f" (descriptor distance GAN − twin {_diff(d, 4)}; {lost} faces lost past {SAME_PERSON}, {gained} "
            f"gained, McNemar p {mcnemar_p(lost, gained):.2f})")


def goal_rows(gan: dict, twin: dict, diffs: dict, kid_pairs: "dict | None" = None) -> list:
    """(goal, measured, met) for issue 32's must-hold lines against the twin."""
    rows = lpips_row(diffs) + kid_rows(gan, twin, kid_pairs)
    kinds = [k for k in gan["sets"] if pooled(gan, k) and pooled(twin, k)]
    for metric, goal in (("detail", "higher"), ("same_person", "no lower")):
        have = [k for k in kinds if metric in pooled(gan, k) and metric in pooled(twin, k)]
        if have:
            values = {k: (pooled(gan, k)[metric]["mean"], pooled(twin, k)[metric]["mean"]) for k in have}
            met = all(g > t if goal == "higher" else g >= t for g, t in values.values())
            rows.append((f"{metric.replace('_', '-')} {goal} than the twin's, pooled per kind",
                         ", ".join(f"{k} {g:.3f} vs {t:.3f}{_distance(diffs, k, metric)}"
                                   for k, (g, t) in values.items()), met))
    cost = {k: pooled(twin, k)["psnr"]["mean"] - pooled(gan, k)["psnr"]["mean"] for k in kinds}
    worst = max(cost, key=cost.get)
    rows.append((f"hole-PSNR cost ≤ {MAX_PSNR_COST} dB pooled per kind", f"worst {worst}: {cost[worst]:+.2f} dB",
                 cost[worst] <= MAX_PSNR_COST))
    return rows


def report(gan_dir: str, twin_dir: str) -> str:
    gan, twin = load(gan_dir), load(twin_dir)
    same_protocol(gan, twin)
    diffs = paired(gan[1], twin[1])
    return (f"GAN: {gan_dir}; twin: {twin_dir}; {gan[0]['images']} {gan[0].get('split', 'test')} images\n\n"
            + table(gan[0], twin[0], diffs) + "\n\n"
            + goals_table(goal_rows(gan[0], twin[0], diffs, paired_kid(gan_dir, twin_dir)), "measured") + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("gan", help="results folder of the GAN model (results.json + per_image.csv)")
    p.add_argument("twin", help="results folder of its reconstruction-only twin")
    p.add_argument("-o", "--output", default=None, help="also write the report to this markdown file")
    args = p.parse_args(argv)
    try:
        text = report(args.gan, args.twin)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.output:
        write_text(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
