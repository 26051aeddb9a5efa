"""tools/twin_check.py: the GAN-against-its-twin goal lines, from two results folders."""
import csv
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("twin_check", os.path.join(ROOT, "tools", "twin_check.py"))
twin_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(twin_check)

IMAGES = ["a.jpg", "b.jpg"]


def write_results(folder, psnr: dict, lpips: dict, kid: dict, images=IMAGES, identity=None):
    """A results folder as results.py writes it, for the model alone: {(kind, bucket): value per image} per metric
    (a square set's bucket is "square"); results.json's means are the per-image means, pooled per kind."""
    os.makedirs(folder, exist_ok=True)
    rows, sets = [], {}
    for (kind, bucket), values in psnr.items():
        ids = (identity or {}).get((kind, bucket), [""] * len(images))
        for name, p, lp, d in zip(images, values, lpips[(kind, bucket)], ids):
            rows.append([name, "ours", kind, bucket, "0.05", p, lp, d])
        sets.setdefault(kind, {})["all" if bucket == kind else bucket] = {"ours": {
            "psnr": {"mean": sum(values) / len(values)}, "lpips": {"mean": sum(lpips[(kind, bucket)]) / len(values)},
            "kid": kid_entry(kid.get((kind, bucket), 0.0))}}
    for kind, by_bucket in sets.items():
        if kind != "square":
            ps = [v for (k, b), vs in psnr.items() if k == kind for v in vs]
            ls = [v for (k, b), vs in lpips.items() if k == kind for v in vs]
            by_bucket["all"] = {"ours": {"psnr": {"mean": sum(ps) / len(ps)}, "lpips": {"mean": sum(ls) / len(ls)},
                                         "kid": kid_entry(kid[(kind, "all")])}}
    with open(os.path.join(folder, "results.json"), "w") as fh:
        json.dump({"split": "test", "images": len(images), "image_size": 200, "eval_seed": 1234, "sets": sets}, fh)
    with open(os.path.join(folder, "per_image.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "method", "mask_kind", "hole_bucket", "hole_fraction", "psnr", "lpips", "identity"])
        w.writerows(rows)


def kid_entry(value) -> dict:
    """KID as results.json holds it: a mean, or (mean, standard error)."""
    return {"mean": value[0], "se": value[1]} if isinstance(value, tuple) else {"mean": value}


SETS = [("square", "square"), ("strokes", "0-10%"), ("strokes", "10-20%")]


def uniform(value_of: dict) -> dict:
    return {s: [value_of.get(s, 0.0) + i for i in range(len(IMAGES))] for s in SETS}


def test_a_gan_that_wins_meets_every_line_and_the_paired_differences_are_per_image(tmp_path):
    base_psnr = {("square", "square"): 22.0, ("strokes", "0-10%"): 24.0, ("strokes", "10-20%"): 21.0}
    base_lpips = {s: 0.05 for s in SETS}
    write_results(tmp_path / "twin", uniform(base_psnr), uniform(base_lpips), {("strokes", "all"): 0.010})
    write_results(tmp_path / "gan", uniform({s: v - 0.3 for s, v in base_psnr.items()}),
                  uniform({s: v - 0.01 for s, v in base_lpips.items()}), {("strokes", "all"): 0.008})
    text = twin_check.report(str(tmp_path / "gan"), str(tmp_path / "twin"))
    assert "| strokes | 0-10% | 24.20 / 24.50 | -0.30 ± 0.00 |" in text  # paired: every image 0.3 dB lower
    assert "| strokes | pooled |" in text and "| square | pooled |" in text
    assert text.count("| yes |") == 3 and "**no**" not in text  # LPIPS, KID on strokes, PSNR cost


def test_a_gan_that_costs_too_much_psnr_or_lpips_is_said_to_miss(tmp_path):
    base = {("square", "square"): 22.0, ("strokes", "0-10%"): 24.0, ("strokes", "10-20%"): 21.0}
    write_results(tmp_path / "twin", uniform(base), uniform({}), {("strokes", "all"): (0.010, 0.001)})
    write_results(tmp_path / "gan", uniform({**base, ("strokes", "10-20%"): 19.8}),
                  uniform({("square", "square"): 0.001}), {("strokes", "all"): (0.009, 0.001)})
    gan, twin = (json.load(open(tmp_path / name / "results.json")) for name in ("gan", "twin"))
    diffs = twin_check.paired(twin_check.load(str(tmp_path / "gan"))[1], twin_check.load(str(tmp_path / "twin"))[1])
    rows = {goal: (measured, met) for goal, measured, met in twin_check.goal_rows(gan, twin, diffs)}
    # lower, but by less than two standard errors of the difference (2 x 1.41)
    assert rows["strokes: KID lower than the twin's by > 2 SE (unpaired: no kid_features.pt)"] == (
        "9.00 ± 1.00 vs 10.00 ± 1.00", False)
    # a tie in the 10-20 % bucket is not a win (the 0-10 % bucket is not asked)
    assert rows["LPIPS lower in every boxes and strokes bucket from 10 % up (paired CI below 0)"] == (
        "worst strokes 10-20%: +0.00000 ± 0.00000", False)
    assert rows["hole-PSNR cost ≤ 0.5 dB pooled per kind"] == ("worst strokes: +0.60 dB", False)


def test_evaluations_of_other_faces_or_holes_are_refused(tmp_path):
    write_results(tmp_path / "twin", uniform({}), uniform({}), {("strokes", "all"): 0.0})
    write_results(tmp_path / "gan", uniform({}), uniform({}), {("strokes", "all"): 0.0}, images=["a.jpg", "c.jpg"])
    with pytest.raises(twin_check.UserError, match="not of the same faces and holes"):
        twin_check.report(str(tmp_path / "gan"), str(tmp_path / "twin"))
    assert twin_check.main([str(tmp_path / "gan"), str(tmp_path / "missing")]) == 2


def test_detail_must_rise_and_the_same_person_share_must_hold_in_every_kind():
    def summary(detail_boxes, same_strokes):
        return {"sets": {"boxes": {"all": {"ours": {"psnr": {"mean": 20.0}, "detail": {"mean": detail_boxes}}}},
                         "strokes": {"all": {"ours": {"psnr": {"mean": 20.0}, "detail": {"mean": 0.9},
                                                      "same_person": {"mean": same_strokes}}}}}}
    rows = {goal: met for goal, _, met in twin_check.goal_rows(summary(0.85, 0.97), summary(0.80, 0.97), {})}
    assert rows["detail higher than the twin's, pooled per kind"] is False  # strokes 0.9 vs 0.9: not higher
    assert rows["same-person no lower than the twin's, pooled per kind"] is True
    rows = {goal: met for goal, _, met in twin_check.goal_rows(summary(0.85, 0.95), summary(0.80, 0.97), {})}
    assert rows["same-person no lower than the twin's, pooled per kind"] is False


def test_the_same_person_line_shows_the_paired_descriptor_distance_on_the_faces_measured(tmp_path):
    """Identity is measured on a subset of the faces (NaN elsewhere): the paired GAN − twin distance pools the
    measured faces of a kind's buckets and skips the rest."""
    twin = {s: [0.40, float("nan")] for s in SETS}
    gan = {s: [0.43, float("nan")] for s in SETS}
    for name, ids in (("gan", gan), ("twin", twin)):
        write_results(tmp_path / name, uniform({}), uniform({}), {("strokes", "all"): 0.0}, identity=ids)
    summaries = [json.load(open(tmp_path / m / "results.json")) for m in ("gan", "twin")]
    for summary, share in zip(summaries, (0.95, 0.97)):
        summary["sets"]["strokes"]["all"]["ours"]["same_person"] = {"mean": share}
    diffs = twin_check.paired(*(twin_check.load(str(tmp_path / m))[1] for m in ("gan", "twin")))
    rows = {goal: (measured, met) for goal, measured, met in twin_check.goal_rows(*summaries, diffs)}
    assert rows["same-person no lower than the twin's, pooled per kind"] == (
        "strokes 0.950 vs 0.970 (descriptor distance GAN − twin +0.0300 ± 0.0000; 0 faces lost past 0.6, 0 gained, "
        "McNemar p 1.00)", False)


def test_faces_crossing_the_same_person_threshold_are_counted_both_ways_with_an_exact_mcnemar_p():
    """Five faces the GAN moves past 0.6 and one it brings back: p = 2 (1 + 6) / 64 = 0.22; faces measured by one
    model only are not counted."""
    twin = {("strokes", "30-40%", f"{i}.jpg"): {"identity": v} for i, v in enumerate([0.55] * 5 + [0.62, 0.3, 0.5])}
    gan = {key: {"identity": v} for key, v in zip(twin, [0.61] * 5 + [0.58, 0.31, 0.7])}
    del twin[("strokes", "30-40%", "7.jpg")]["identity"]
    assert twin_check.crossings(gan, twin) == {"strokes": (5, 1)}
    assert abs(twin_check.mcnemar_p(5, 1) - 14 / 64) < 1e-12 and twin_check.mcnemar_p(0, 0) == 1.0
    assert twin_check.mcnemar_p(3, 3) == 1.0 and twin_check.paired(gan, twin)[("strokes", "all")]["crossings"] == (5, 1)


def test_kid_is_judged_by_the_error_of_the_paired_difference_when_the_features_are_kept(tmp_path):
    """Two models' composites of the same photos: KID's subsets are shared, so the difference has its own, much
    smaller standard error. A GAN whose features sit a little closer to the real ones on every photo wins by it,
    though by far less than the two KIDs' errors combined; a GAN that is the twin plus noise does not."""
    import torch
    from perceptual import kid
    from results import KID_FEATURES
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 16, generator=g)
    twin = real + 0.6 * torch.randn(300, 16, generator=g) + 0.3
    for name, gan, wins in (("closer", real + 0.97 * (twin - real), True),
                            ("noisier", twin + 0.05 * torch.randn(300, 16, generator=g), False)):
        folders = {m: tmp_path / name / m for m in ("gan", "twin")}
        for model, feats in (("gan", gan), ("twin", twin)):
            write_results(folders[model], uniform({}), uniform({}), {("strokes", "all"): kid(real, feats)})
            torch.save({"images": IMAGES, "real": real, "ours": {"strokes": feats}}, folders[model] / KID_FEATURES)
        summaries = [json.load(open(folders[m] / "results.json")) for m in ("gan", "twin")]
        pairs = twin_check.paired_kid(str(folders["gan"]), str(folders["twin"]))
        rows = {goal: (measured, met) for goal, measured, met in twin_check.goal_rows(*summaries, {}, pairs)}
        measured, met = rows["strokes: KID lower than the twin's by > 2 SE of the paired difference"]
        assert met is wins and "paired SE" in measured, measured
        unpaired = {goal: met for goal, _, met in twin_check.goal_rows(*summaries, {}, {})}
        assert unpaired["strokes: KID lower than the twin's by > 2 SE (unpaired: no kid_features.pt)"] is False
