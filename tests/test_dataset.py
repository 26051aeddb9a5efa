import os

import pytest
import torch
from PIL import Image

from dataset import DataError, epoch_order, find_images, load_image, read_celeba_partition, split_files


def touch_images(folder, n, ext=".jpg"):
    """n tiny but valid images (the header scan skips anything else)."""
    import io
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buf, "JPEG")
    for i in range(n):
        with open(os.path.join(folder, f"{i + 1:06d}{ext}"), "wb") as fh:
            fh.write(buf.getvalue())
    return folder


def test_contiguous_split_has_the_seeds_sizes_and_is_disjoint(tmp_path):
    d = touch_images(str(tmp_path), 1024)
    s = split_files(d)
    assert [len(s[k]) for k in ("train", "val", "test")] == [819, 102, 103]
    assert s["train"][-1] < s["val"][0] and s["val"][-1] < s["test"][0]  # contiguous blocks of the sorted list
    assert not (set(s["train"]) & set(s["val"]) or set(s["val"]) & set(s["test"]))
    assert s == split_files(d)  # deterministic
    assert s["test"] == sorted(os.listdir(d))[-103:]


def test_find_images_extensions_case_insensitive(tmp_path):
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.webp", "e.txt", "f.gif"):
        open(tmp_path / name, "wb").close()  # names only: find_images does not open files
    assert find_images(str(tmp_path)) == ["a.JPG", "b.jpeg", "c.Png", "d.webp"]


def test_no_images_error_says_where_and_how(tmp_path):
    with pytest.raises(DataError, match="--data-dir") as e:
        find_images(str(tmp_path))
    assert str(tmp_path) in str(e.value)
    with pytest.raises(DataError, match="INPAINT_DATA_DIR"):
        find_images("")


def test_celeba_partition_is_used_when_present(tmp_path):
    touch_images(str(tmp_path / "img_align_celeba"), 10)
    labels = [0, 0, 1, 2, 0, 2, 1, 0, 0, 0]
    (tmp_path / "list_eval_partition.txt").write_text(
        "".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(labels)))
    s = split_files(str(tmp_path))
    assert s["val"] == ["000003.jpg", "000007.jpg"] and s["test"] == ["000004.jpg", "000006.jpg"]
    assert len(s["train"]) == 6


def test_celeba_partition_parse_errors_name_the_line(tmp_path):
    p = tmp_path / "list_eval_partition.txt"
    p.write_text("000001.jpg 0\n000002.jpg 7\n")
    with pytest.raises(DataError, match=":2:"):
        read_celeba_partition(str(p))


def test_load_image_centre_crops_and_resizes(tmp_path):
    img = Image.new("RGB", (60, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 60, 20))  # a blue band the centre crop removes
    img.save(tmp_path / "x.png")
    t = load_image(str(tmp_path / "x.png"), 32)
    assert t.shape == (3, 32, 32) and t.dtype == torch.uint8
    assert (t[0] == 255).all() and (t[2] == 0).all()


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert torch.equal(epoch_order(50, 0, 3), epoch_order(50, 0, 3))
    assert not torch.equal(epoch_order(50, 0, 3), epoch_order(50, 0, 4))
    assert sorted(epoch_order(50, 1, 0).tolist()) == list(range(50))


def test_lazy_cache_serves_the_same_batches_and_decodes_each_image_once(tmp_path):
    from conftest import make_faces
    from dataset import ImageFiles, ImageSource
    folder = make_faces(str(tmp_path / "f"), n=10)
    names = sorted(os.listdir(folder))
    eager = ImageSource(ImageFiles(folder, names, 32), cache_mb=100)
    files = ImageFiles(folder, names, 32)
    calls = []
    load = files.load
    files.load = lambda i: calls.append(i) or load(i)
    lazy = ImageSource(files, cache_mb=100, lazy=True)
    assert calls == []  # opening decodes nothing
    order = torch.tensor([3, 1, 4, 0, 9, 2, 6, 5])
    for _ in range(2):  # the second pass comes from the cache alone
        for a, b in zip(eager.batches(order, 4, True), lazy.batches(order, 4, True)):
            assert torch.equal(a, b)
    assert sorted(calls) == sorted(order.tolist())
    assert torch.equal(lazy.take(10), eager.take(10)) and sorted(calls) == list(range(10))
