import numpy as np
import torch

from config import Config
from masks import dilate, fixed_masks, rng_for, square_masks


def test_square_masks_geometry():
    m = square_masks(200, 200, 32, 16, rng_for(0))
    assert m.shape == (200, 1, 200, 200) and m.dtype == torch.float32
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert (m.sum(dim=(1, 2, 3)) == 32 * 32).all()
    # nothing closer than 16 px to any border
    assert m[..., :16, :].sum() == 0 and m[..., -16:, :].sum() == 0
    assert m[..., :, :16].sum() == 0 and m[..., :, -16:].sum() == 0
    # positions vary across samples and reach both extremes of the allowed range
    rows = m.amax(dim=(1, 3)).squeeze(1).float().argmax(dim=1)
    assert rows.unique().numel() > 50 and rows.min() <= 20 and rows.max() >= 148


def test_square_mask_jitter_changes_size_within_range():
    m = square_masks(300, 200, 32, 16, rng_for(1), jitter=6)
    sides = m.sum(dim=(1, 2, 3)).sqrt()
    assert sides.min() >= 26 and sides.max() <= 38 and sides.unique().numel() > 5


def test_fixed_masks_are_deterministic_and_split_specific():
    cfg = Config()
    a, b = fixed_masks(cfg, 10, "val"), fixed_masks(cfg, 10, "val")
    assert torch.equal(a, b)
    assert not torch.equal(a, fixed_masks(cfg, 10, "test"))
    # hole i does not depend on how many holes were asked for
    assert torch.equal(fixed_masks(cfg, 3, "test"), fixed_masks(cfg, 10, "test")[:3])
    cfg2 = Config(eval_seed=cfg.eval_seed + 1)
    assert not torch.equal(a, fixed_masks(cfg2, 10, "val"))


def top_left(m):
    return [(int(np.nonzero(x[0].amax(1).numpy())[0][0]), int(np.nonzero(x[0].amax(0).numpy())[0][0])) for x in m]


def test_fixed_masks_known_values():
    """Recorded once: PCG64 is specified bit for bit, so these holes are the same on every machine."""
    assert top_left(fixed_masks(Config(), 3, "test", "square")) == [(130, 86), (87, 89), (138, 130)]
    assert top_left(fixed_masks(Config(), 3, "val", "square")) == [(36, 70), (33, 134), (93, 123)]


def test_dilate_makes_a_ring_of_the_requested_width():
    m = torch.zeros(1, 1, 40, 40)
    m[..., 10:20, 12:22] = 1
    d = dilate(m, 4)
    assert d[..., 6:24, 8:26].eq(1).all() and d.sum() == 18 * 18
    assert torch.equal(dilate(m, 0), m)


# --- free-form kinds (boxes, strokes, mixed), area control, evaluation sets ---

import hashlib  # noqa: E402

import pytest  # noqa: E402
from scipy import ndimage  # noqa: E402

from config import ConfigError  # noqa: E402
from masks import BUCKETS, bucket_label, draw_mask, evaluation_sets, parse_mix, save_mask_pngs, training_masks  # noqa: E402


@pytest.mark.parametrize("kind", ["square", "boxes", "strokes", "mixed"])
@pytest.mark.parametrize("size", [64, 200])
def test_each_kind_gives_binary_masks_of_the_requested_size(kind, size):
    cfg = Config(mask=kind, image_size=size, crop=0, hole_size=size // 6, hole_margin=size // 12).validate()
    m = training_masks(cfg, 12, rng_for(0))
    assert m.shape == (12, 1, size, size) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert (m.sum(dim=(1, 2, 3)) > 0).all()


@pytest.mark.parametrize("kind", ["square", "boxes", "strokes", "mixed"])
def test_hole_fraction_stays_within_bounds(kind):
    lo, hi = (0.02, 0.03) if kind == "square" else (0.15, 0.3)
    cfg = Config(mask=kind, min_hole_fraction=lo, max_hole_fraction=hi, mask_mix="boxes:1,strokes:1", holes=1).validate()
    frac = training_masks(cfg, 30, rng_for(1)).mean(dim=(1, 2, 3))
    assert (frac >= lo).all() and (frac <= hi).all()


def test_impossible_area_bounds_fail_clearly():
    with pytest.raises(ConfigError, match="hole-fraction bounds"):
        Config(mask="square", min_hole_fraction=0.2).validate()
    cfg = Config(mask="boxes", max_boxes=1, min_hole_fraction=0.0, max_hole_fraction=0.001).validate()
    with pytest.raises(ValueError, match="could not draw"):
        draw_mask(cfg, "boxes", rng_for(0))


def test_strokes_are_connected_brush_marks_not_noise():
    cfg = Config(mask="strokes", max_strokes=1).validate()
    for i in range(20):
        m = draw_mask(cfg, "strokes", rng_for(5, i))
        labels, count = ndimage.label(m)
        assert count == 1  # one stroke = one connected region
        # brush width: the hole survives an erosion by 1 px (noise would vanish)
        assert ndimage.binary_erosion(m, iterations=1).sum() > 0.3 * m.sum()
    cfg = Config(mask="strokes", max_strokes=4).validate()
    for i in range(20):
        assert ndimage.label(draw_mask(cfg, "strokes", rng_for(6, i)))[1] <= 4


def test_boxes_are_rectangles():
    cfg = Config(mask="boxes", max_boxes=1).validate()
    m = draw_mask(cfg, "boxes", rng_for(3))
    rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    assert m.sum() == len(rows) * len(cols)


def test_mixed_uses_every_kind_by_weight():
    cfg = Config(mask="mixed", mask_mix="square:1,strokes:1", holes=1).validate()  # one square: recognisable by area
    m = training_masks(cfg, 200, rng_for(2))
    is_square = torch.tensor([float(x.sum()) == 32 * 32 for x in m])
    assert 60 < int(is_square.sum()) < 140
    assert parse_mix("square:1,boxes:3") == {"square": 0.25, "boxes": 0.75}
    with pytest.raises(ConfigError, match="mask-mix"):
        Config(mask_mix="circles:1").validate()


def test_evaluation_sets_fall_in_their_buckets_and_are_reproducible(tmp_path):
    cfg = Config()
    sets = evaluation_sets(cfg, 6, "test", ["square", "boxes", "strokes"])
    assert len(sets) == 1 + 2 * len(BUCKETS)
    for (kind, bucket), m in sets.items():
        if kind != "square":
            lo, hi = [int(x) / 100 for x in bucket.rstrip("%").split("-")]
            frac = m.mean(dim=(1, 2, 3))
            assert (frac >= max(lo, 0.01)).all() and (frac <= hi).all(), (kind, bucket)
    again = evaluation_sets(cfg, 6, "test", ["square", "boxes", "strokes"])
    assert all(torch.equal(sets[k], again[k]) for k in sets)
    save_mask_pngs(sets[("strokes", "20-30%")], str(tmp_path), [f"{i}.jpg" for i in range(6)])
    from PIL import Image
    back = np.asarray(Image.open(tmp_path / "3.png"))
    assert np.array_equal(back > 0, sets[("strokes", "20-30%")][3, 0].numpy() > 0)


def test_evaluation_sets_are_the_same_on_every_machine():
    """Checksums recorded once; PCG64 and PIL's integer rasteriser make them platform independent."""
    sets = evaluation_sets(Config(), 4, "test", ["boxes", "strokes"])
    digest = hashlib.sha256(b"".join(m.numpy().astype(np.uint8).tobytes() for m in sets.values())).hexdigest()
    assert digest == RECORDED_DIGEST


def test_ring_generalises_to_any_shape():
    m = torch.from_numpy(draw_mask(Config(mask="strokes").validate(), "strokes", rng_for(9)).astype(np.float32))[None, None]
    ring = dilate(m, 4) - m
    assert ring.min() >= 0 and ring.sum() > 0
    dist = ndimage.distance_transform_cdt(m[0, 0].numpy() == 0, metric="chessboard")
    assert (dist[ring[0, 0].numpy() > 0] <= 4).all() and (dist[(dilate(m, 4) == 0)[0, 0].numpy()] > 4).all()

RECORDED_DIGEST = "760137ff832299a3d2d68885ca47be6ddc5aa8696d5003074b523bb980181823"


def test_several_training_holes_per_image_are_a_union_of_squares():
    one = training_masks(Config(mask="square", holes=1), 16, rng_for(3))
    six = training_masks(Config(mask="square", holes=6), 16, rng_for(3))
    assert one.shape == six.shape == (16, 1, 200, 200)
    assert torch.all(one.sum(dim=(1, 2, 3)) == 32 * 32)
    area = six.sum(dim=(1, 2, 3))
    assert torch.all(area <= 6 * 32 * 32) and area.float().mean() > 3 * 32 * 32  # overlaps allowed, rare
    mixed = training_masks(Config(mask="mixed", mask_mix="square:1", holes=4).validate(), 4, rng_for(4))
    assert torch.all(mixed.sum(dim=(1, 2, 3)) > 32 * 32)


def test_cycled_buckets_put_each_image_in_one_bucket_with_its_full_protocol_hole():
    cfg = Config()
    full = evaluation_sets(cfg, 12, "test", ["square", "strokes"])
    cycled = evaluation_sets(cfg, 12, "test", ["square", "strokes"], cycle=True)
    assert set(full) == set(cycled)
    idx, masks = cycled[("square", "square")]
    assert idx.tolist() == list(range(12)) and torch.equal(masks, full[("square", "square")])
    seen = []
    for b, (lo, hi) in enumerate(BUCKETS):
        idx, masks = cycled[("strokes", bucket_label((lo, hi)))]
        assert idx.tolist() == list(range(b, 12, len(BUCKETS)))
        assert torch.equal(masks, full[("strokes", bucket_label((lo, hi)))][idx])  # a subset of the full protocol
        seen += idx.tolist()
    assert sorted(seen) == list(range(12))


def test_training_holes_name_the_kind_each_mixed_hole_was_drawn_as():
    from masks import training_holes
    cfg = Config(mask="mixed", mask_mix="square:1,strokes:1", holes=1).validate()
    masks, kinds = training_holes(cfg, 40, rng_for(5))
    assert torch.equal(masks, training_masks(cfg, 40, rng_for(5)))  # the same draws: runs resume bit for bit
    assert set(kinds) == {"square", "strokes"}
    assert [float(m.sum()) == 32 * 32 for m in masks] == [k == "square" for k in kinds]  # one square: its area
    assert training_holes(Config(mask="square").validate(), 3, rng_for(6))[1] == ["square"] * 3
